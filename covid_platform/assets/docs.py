"""What makes the lineage page read as the data dictionary: owners, column schemas with each column's
meaning, row counts and a link to the dashboard page that shows the table."""

import os

import dagster as dg
from psycopg2 import sql

from covid_platform.engine.tables import Column

OWNERS = ["team:public-health-data"]
# The dashboard's page for a table (its Streamlit url_path; "" is the national overview); any other table
# is shown on the data status page.
DASHBOARD_PAGES = {
    "national_daily": "", "state_daily": "states", "testing_daily": "states", "county_daily": "counties",
    "school_cases": "schools", "school_summary": "schools",
}


def column_schema(columns: list[Column]) -> dg.TableSchema:
    return dg.TableSchema(columns=[
        dg.TableColumn(c.name, c.type, description=c.description,
                       constraints=dg.TableColumnConstraints(nullable=c.nullable))
        for c in columns
    ])


def summary_schema(cur, table: str) -> dg.TableSchema:
    """A summary's columns as its SQL file created them (their meaning is the file's leading comment)."""
    cur.execute(
        "SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns "
        "WHERE table_schema = 'covid' AND table_name = %s ORDER BY ordinal_position",
        (table,),
    )
    return column_schema([Column(name, kind, nullable, None) for name, kind, nullable in cur.fetchall()])


def table_metadata(cur, table: str) -> dict:
    """A materialized table's row count and its dashboard page (`DASHBOARD_URL`, read when the run
    reports: the dashboard may live elsewhere than where the code location was loaded)."""
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"covid.{table}",))
    rows = 0
    if cur.fetchone()[0]:  # a dataset no file has reached yet has no table
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("covid", table)))
        rows = cur.fetchone()[0]
    base = os.environ.get("DASHBOARD_URL", "http://127.0.0.1:8501").rstrip("/")
    return {
        "dagster/row_count": dg.MetadataValue.int(rows),
        "dashboard": dg.MetadataValue.url(f"{base}/{DASHBOARD_PAGES.get(table, 'status')}"),
    }
