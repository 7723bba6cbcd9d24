"""A dataset's clean table: its columns, DDL, indexes and year partitions, all from the declaration."""

from dataclasses import dataclass
from functools import cache
from importlib import resources

from psycopg2 import sql

from covid_platform.datasets import Dataset
from covid_platform.engine import numbers


def column_list(names) -> sql.Composed:
    """`a, b, c`, each quoted."""
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def qualified(alias: str, names) -> sql.Composed:
    """`alias.a, alias.b`, each quoted."""
    return sql.SQL(", ").join(sql.Identifier(alias, n) for n in names)


def match(left: str, right: str, names) -> sql.Composed:
    """`left.a = right.a AND left.b = right.b`: a join on these columns."""
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, n), sql.Identifier(right, n)) for n in names
    )


def base_columns(dataset: Dataset) -> list[str]:
    """The columns a file's typed rows bring: what it wrote, and the canonical region."""
    return [*dataset.stored_columns, *dataset.region_columns]


def derived_columns(dataset: Dataset) -> list[str]:
    return [*dataset.new.values(), *dataset.rolling_columns, *dataset.ratios_7d]


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    """PostgreSQL's name of the type."""
    nullable: bool
    description: str | None
    """What the column means (a summary's columns are described by its SQL file as a whole: None)."""


def columns(dataset: Dataset) -> list[Column]:
    """The clean table's columns, in order, with their types and meanings, as the declaration defines them:
    the DDL, the API's catalog and the assets' column schemas in the Dagster UI all read them here."""
    # The canonical region's columns come last: a table created before they existed gains them there.
    names = (*dataset.stored_columns, *derived_columns(dataset), "file_id", *dataset.region_columns)
    return [_column(dataset, name) for name in names]


def _column(dataset: Dataset, name: str) -> Column:
    empty = dataset.may_be_empty(name)
    note = " May be empty (null): not reported." if empty else ""
    source = {new: count for count, new in dataset.new.items()}
    if name in dataset.region:
        return Column(name, "text", False, "Region: with date, the row's key; never empty.")
    if name in dataset.attributes:
        return Column(name, "text", True, "Descriptive text, as the latest file reported it; may be empty.")
    if name == "date":
        return Column(name, "date", False, "The day the values are for; with the region, the row's key.")
    if name in dataset.region_columns:
        (column, naming) = next(iter(dataset.region_names.items()))
        what = "FIPS code" if name == "state_fips" else "name"
        return Column(name, "text", True, (
            f"The {what} of the region (covid.regions) whose {naming} the file wrote in {column}: the state, or a "
            "jurisdiction reported apart (New York City: its own row, never added to New York State). Null only "
            "on rows loaded before the column existed (a replay fills them)."))
    if name == "file_id":
        return Column(name, "bigint", False,
                      "The ledger row (covid.ingested_files.file_id) of the file the values came from.")
    kind = numbers.sql_type(dataset, name)
    if name in dataset.counts:
        return Column(name, kind, empty, "Cumulative count, as reported." + note)
    if name in dataset.values:
        sign = " May be negative (a revision)." if name in dataset.signed else ""
        what = "Value" if name in dataset.decimals else "Count"
        return Column(name, kind, empty, f"{what} for the day, as reported." + sign + note)
    if name in source:
        x = source[name]
        where = f"null where {x} is; otherwise " if empty else ""
        return Column(name, kind, empty, (
            f"Daily difference: {where}{x} minus {x} on the region's latest earlier date "
            f"where {x} is not empty ({x} itself when there is none); negative values (revisions) are kept."))
    if name in dataset.rolling_columns:
        x = name.removesuffix("_7d")
        return Column(name, "double precision", empty, (
            f"Mean of the non-empty {x} over the row and the 6 rows before it of its region (by date); "
            "null when all seven are empty."))
    numerator, denominator = dataset.ratios_7d[name]
    return Column(name, "double precision", True, (
        f"{numerator} summed over the 7 calendar days ending on the row's date, divided by {denominator} "
        "summed over the same days; null when that sum is 0 or null."))


def coverage_name(dataset: Dataset) -> str:
    """Beside the clean table: per region, the date range each file reported in full (`merge`)."""
    return f"{dataset.table}_coverage"


def coverage_table(dataset: Dataset) -> sql.Identifier:
    return sql.Identifier("covid", coverage_name(dataset))


def table_ddl(dataset: Dataset) -> sql.Composed:
    """The clean table and its indexes. A table created before a column was declared nullable loses the
    constraint (a catalog change, no rewrite), and gains the region columns declared since; each only where
    needed (covid.ensure_nullable, sql/schema.sql): this runs in every merge, whose readers would otherwise
    wait for it to commit."""
    table = sql.Identifier("covid", dataset.table)
    create = sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, CONSTRAINT {} PRIMARY KEY ({})){}").format(
        table,
        sql.SQL(", ").join(
            sql.SQL("{} {}{}").format(sql.Identifier(c.name), sql.SQL(c.type), sql.SQL("" if c.nullable else " NOT NULL"))
            for c in columns(dataset)
        ),
        _primary_key(dataset),
        column_list(dataset.key),
        sql.SQL(" PARTITION BY RANGE (date)" if dataset.partition_by_year else ""),
    )
    name = sql.Literal(dataset.table)
    nullable = [c.name for c in columns(dataset) if c.nullable and c.type != "text"]
    relax = sql.SQL("SELECT covid.ensure_nullable({}, VARIADIC {}::text[])").format(name, sql.Literal(nullable))
    added = [  # columns declared after the table was created (the canonical region)
        sql.SQL("SELECT covid.ensure_column({}, {}, {})").format(name, sql.Literal(c.name), sql.Literal(c.type))
        for c in columns(dataset) if c.name in dataset.region_columns
    ]
    return sql.SQL("; ").join([create, relax, *added, *_secondary_indexes(dataset)])


def _primary_key(dataset: Dataset) -> sql.Identifier:
    return sql.Identifier(f"{dataset.table}_pkey")


def _secondary_indexes(dataset: Dataset) -> list[sql.Composed]:
    return [
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
            sql.Identifier("_".join((dataset.table, *index))),
            sql.Identifier("covid", dataset.table),
            column_list(index),
        )
        for index in dataset.indexes
    ]


# A first load of millions of rows into an empty table: its indexes are dropped and built once the rows are
# in (in the same transaction), one sort each instead of millions of insertions at random places of an
# index larger than PostgreSQL's buffers. Readers of the (empty) table wait for the commit.
def drop_indexes_ddl(dataset: Dataset) -> sql.Composed:
    table = sql.Identifier("covid", dataset.table)
    drops = [sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, _primary_key(dataset))]
    drops += [sql.SQL("DROP INDEX {}").format(sql.Identifier("covid", "_".join((dataset.table, *index))))
              for index in dataset.indexes]
    return sql.SQL("; ").join(drops)


def build_indexes_ddl(dataset: Dataset) -> sql.Composed:
    return sql.SQL("; ").join([
        sql.SQL("SET LOCAL maintenance_work_mem = '256MB'"),
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
            sql.Identifier("covid", dataset.table), _primary_key(dataset), column_list(dataset.key)
        ),
        *_secondary_indexes(dataset),
    ])


def add_year_partitions(cur, dataset: Dataset, years: range) -> None:
    """A partition of the clean table for each year, as the years arrive. Made apart, then attached: CREATE
    TABLE … PARTITION OF would lock the table against its readers until the merge commits, ATTACH PARTITION
    takes a lock they pass."""
    table = sql.Identifier("covid", dataset.table)
    for year in years:
        name = f"{dataset.table}_{year}"
        cur.execute("SELECT to_regclass(%s)", (f"covid.{name}",))
        if cur.fetchone()[0] is None:
            cur.execute(sql.SQL(
                "CREATE TABLE {partition} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS); "
                "ALTER TABLE {table} ATTACH PARTITION {partition} FOR VALUES FROM ({first}) TO ({end})"
            ).format(partition=sql.Identifier("covid", name), table=table,
                     first=sql.Literal(f"{year}-01-01"), end=sql.Literal(f"{year + 1}-01-01")))


@cache
def summary_sql(name: str) -> str:
    """The SQL file `covid_platform/sql/<name>.sql` that rebuilds the summary table `name`."""
    return resources.files("covid_platform.sql").joinpath(f"{name}.sql").read_text()


def summary_description(name: str) -> str:
    """A summary's meaning: its SQL file's leading comment (the Dagster asset's description and the API's)."""
    lines = []
    for line in summary_sql(name).splitlines():
        if not line.startswith("--"):
            break
        lines.append(line.removeprefix("--").strip())
    return "\n".join(lines)
