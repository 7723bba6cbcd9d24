"""A dataset's clean table: its columns, DDL, indexes and year partitions, all from the declaration."""

from psycopg2 import sql

from covid_platform.datasets import Dataset


def column_list(names) -> sql.Composed:
    """`a, b, c`, each quoted."""
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def base_columns(dataset: Dataset) -> list[str]:
    return list(dataset.stored_columns)


def derived_columns(dataset: Dataset) -> list[str]:
    return [*dataset.new.values(), *dataset.rolling_columns, *dataset.ratios_7d]


def table_ddl(dataset: Dataset) -> sql.Composed:
    """The clean table and its indexes; a count, and what is derived from it, is NOT NULL unless the dataset
    declares it may be empty. A table created before a column was declared nullable loses the constraint
    (a catalog change, no rewrite)."""
    table = sql.Identifier("covid", dataset.table)
    numeric = [(c, "bigint") for c in (*dataset.counts, *dataset.values, *dataset.new.values())]
    numeric += [(c, "double precision") for c in (*dataset.rolling_columns, *dataset.ratios_7d)]
    columns = [sql.SQL("{} text NOT NULL").format(sql.Identifier(c)) for c in dataset.region]
    columns += [sql.SQL("{} text").format(sql.Identifier(c)) for c in dataset.attributes]
    columns.append(sql.SQL("date date NOT NULL"))
    columns += [
        sql.SQL("{} {}{}").format(sql.Identifier(c), sql.SQL(kind), sql.SQL("" if dataset.may_be_empty(c) else " NOT NULL"))
        for c, kind in numeric
    ]
    columns.append(sql.SQL("file_id bigint NOT NULL"))  # the ledger row of the file the values came from
    create = sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, CONSTRAINT {} PRIMARY KEY ({})){}").format(
        table,
        sql.SQL(", ").join(columns),
        _primary_key(dataset),
        column_list(dataset.key),
        sql.SQL(" PARTITION BY RANGE (date)" if dataset.partition_by_year else ""),
    )
    relax = [
        sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(table, sql.Identifier(c))
        for c, _ in numeric if dataset.may_be_empty(c)
    ]
    return sql.SQL("; ").join([create, *relax, *_secondary_indexes(dataset)])


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


def year_partitions_ddl(dataset: Dataset, years: range) -> list[sql.Composed]:
    """A partition of the clean table for each year (created as the years arrive)."""
    return [
        sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier("covid", f"{dataset.table}_{year}"),
            sql.Identifier("covid", dataset.table),
            sql.Literal(f"{year}-01-01"),
            sql.Literal(f"{year + 1}-01-01"),
        )
        for year in years
    ]
