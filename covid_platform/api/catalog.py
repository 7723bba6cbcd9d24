"""The tables the API serves and what their columns mean, from the dataset declarations.

A clean table is described entirely by its declaration (so it is described, and its requests validated,
without a catalog query); a summary table is whatever its SQL file creates, so its columns and key are read
from PostgreSQL's catalog and its description from the file's leading comment. Nothing else in the `covid`
schema (the ledger, rejected rows, staging) is reachable through the API.
"""

from dataclasses import dataclass
from functools import cache

import psycopg2.extensions

from covid_platform.datasets import DATASETS, Dataset
from covid_platform.engine import history
from covid_platform.engine.tables import Column, base_columns, columns, summary_description

CLEAN, SUMMARY = "clean", "summary"
SCHEMA = "covid"


@dataclass(frozen=True)
class Table:
    name: str
    dataset: Dataset
    kind: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    """The primary key: rows are served in its order, and the page cursor holds its last value."""
    filters: tuple[str, ...]
    """Text key columns a request may filter on (the region columns of a clean table)."""

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def has_date(self) -> bool:
        return "date" in self.column_names

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def declared() -> dict[str, tuple[Dataset, str]]:
    """Every table a declaration names: table → (its dataset, clean or summary)."""
    tables = {}
    for dataset in DATASETS.values():
        tables[dataset.table] = (dataset, CLEAN)
        tables.update({name: (dataset, SUMMARY) for name in dataset.summaries})
    return tables


def clean_table(dataset: Dataset) -> Table:
    return _clean_tables()[dataset.table]


@cache
def _clean_tables() -> dict[str, Table]:
    """Built once: a request for a clean table needs no catalog query."""
    return {dataset.table: _clean_table(dataset) for dataset in DATASETS.values()}


def _clean_table(dataset: Dataset) -> Table:
    description = (f"The clean table of the dataset {dataset.name}: one row per "
                   f"({', '.join(dataset.key)}), the latest file's values winning.")
    return Table(dataset.table, dataset, CLEAN, description, tuple(columns(dataset)), dataset.key, dataset.region)


def history_table(dataset: Dataset) -> Table:
    """`covid.<table>_history`: every version of the clean table's values (engine/history.py), served by
    `/v1/tables/{table}/revisions` in (key, file) order."""
    return _history_tables()[dataset.table]


@cache
def _history_tables() -> dict[str, Table]:
    return {dataset.table: _history_table(dataset) for dataset in DATASETS.values()}


def _history_table(dataset: Dataset) -> Table:
    by_name = {c.name: c for c in columns(dataset)}
    described = (
        *(by_name[name] for name in base_columns(dataset)),
        by_name["file_id"],
        Column("issued_at", "timestamp with time zone", False,
               "When the file was issued (its last-modified time in the landing zone): the version holds from then."),
    )
    description = (f"Every version of {dataset.table}'s values: a row where a file's values for a key were new or "
                   "differed from the version before it (ledger order).")
    return Table(history.history_name(dataset), dataset, CLEAN, description, described,
                 (*dataset.key, "file_id"), dataset.region)


def as_of_function(conn: psycopg2.extensions.connection, table: Table) -> str | None:
    """The function that gives the table as of a time: every clean table's; a summary's if it has one."""
    name = history.as_of_name(table.name)
    if table.kind == CLEAN:
        return name
    with conn.cursor() as cur:
        cur.execute("SELECT to_regprocedure(%s) IS NOT NULL", (f"{SCHEMA}.{name}(timestamptz)",))
        return name if cur.fetchone()[0] else None


# One catalog query for any set of summaries: columns in table order, each with its place in the primary key
# (indkey is an int2vector: its positions count from 0).
_SUMMARY_COLUMNS = """
    SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
           array_position(i.indkey::int2[], a.attnum)
    FROM pg_class AS c
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_index AS i ON i.indrelid = c.oid AND i.indisprimary
    WHERE n.nspname = %s AND c.relname = ANY (%s)
    ORDER BY c.relname, a.attnum
"""


def summary_tables(conn: psycopg2.extensions.connection, names: list[str]) -> dict[str, Table]:
    """The summaries among `names` that exist (a summary is created by its first build), from the catalog."""
    tables = declared()
    with conn.cursor() as cur:
        cur.execute(_SUMMARY_COLUMNS, (SCHEMA, names))
        rows = cur.fetchall()
    found = {}
    for name in dict.fromkeys(row[0] for row in rows):
        mine = [row for row in rows if row[0] == name]
        found_columns = tuple(Column(column, kind, nullable, None) for _, column, kind, nullable, _ in mine)
        key = tuple(row[1] for row in sorted((r for r in mine if r[4] is not None), key=lambda r: r[4]))
        filters = tuple(c for c in key if c != "date" and next(x for x in found_columns if x.name == c).type == "text")
        found[name] = Table(name, tables[name][0], SUMMARY, summary_description(name), found_columns,
                            key or tuple(c.name for c in found_columns), filters)
    return found


def table(conn: psycopg2.extensions.connection, name: str) -> Table | None:
    """A declared table the API can serve, or None (not declared, or a summary not built yet)."""
    dataset, kind = declared().get(name, (None, None))
    if kind == CLEAN:
        return clean_table(dataset)
    if kind == SUMMARY:
        return summary_tables(conn, [name]).get(name)
    return None
