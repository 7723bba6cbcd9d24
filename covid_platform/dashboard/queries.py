"""Every query the dashboard runs, on the read-only connection, cached until the next load.

Tables are named from the dataset declarations (psycopg2.sql identifiers); values are bound parameters.
A query whose table does not exist yet (nothing loaded) returns an empty frame. `benchmarks/dashboard_queries.py`
times these same statements on tables of 15M rows.
"""

import datetime as dt
import os
from dataclasses import dataclass

import pandas as pd
import streamlit as st
from psycopg2 import sql

from covid_platform.datasets import COVIDTRACKING, CPS_SCHOOLS, US_COUNTIES, US_STATES
from covid_platform.engine import ledger
from covid_platform.resources.warehouse import Warehouse

# A new load changes every cache key at once (`latest_load`); the TTL bounds what that key cannot see: a
# summary table is rebuilt a few seconds after the merge that stamps the ledger.
TTL = dt.timedelta(minutes=1)
# The ledger is looked up at most this often, so the several queries of one page share one look-up.
LEDGER_TTL = dt.timedelta(seconds=5)
DATE_TYPES = {1082, 1114, 1184}  # PostgreSQL's date, timestamp and timestamptz type OIDs
INTEGER_TYPES = {20, 21, 23}  # bigint, smallint, integer


@dataclass(frozen=True)
class Query:
    table: str
    """The table in the covid schema it reads; until that exists the query returns no rows."""
    statement: sql.Composed


def _query(table: str, text: str) -> Query:
    """`text` with {table} (and {ledger}, {rejected}, {regions}) as quoted identifiers."""
    return Query(table, sql.SQL(text).format(
        table=sql.Identifier("covid", table),
        ledger=sql.Identifier("covid", "ingested_files"),
        rejected=sql.Identifier("covid", "rejected_rows"),
        regions=sql.Identifier("covid", "regions"),
    ))


# The distinct states of a table keyed (state, …): one index probe per state instead of reading every row.
STATE_NAMES = """
    WITH RECURSIVE names AS (
        (SELECT state FROM {table} ORDER BY state LIMIT 1)
        UNION ALL
        SELECT (SELECT t.state FROM {table} AS t WHERE t.state > names.state ORDER BY t.state LIMIT 1)
        FROM names WHERE names.state IS NOT NULL
    )
    SELECT state FROM names WHERE state IS NOT NULL
"""

# A county's row whose 7 rows are the 7 days to its date, each with the day before: its new cases and their
# 7-day average are per day (one key lookup of the 7 days before).
WHOLE_WEEK = """(SELECT count(*) FROM {table} AS w
    WHERE w.state = t.state AND w.county = t.county AND w.date BETWEEN t.date - 7 AND t.date - 1) = 7"""

QUERIES: dict[str, Query] = {
    "national": _query(US_STATES.summary("national_daily"), """
        SELECT date, new_cases, new_cases_7d, new_deaths, new_deaths_7d, cases, deaths
        FROM {table} ORDER BY date
    """),
    "state_names": _query(US_STATES.table, STATE_NAMES),
    "state_dates": _query(US_STATES.table, """
        SELECT min(date) AS first, max(date) AS last FROM {table} WHERE state = %(state)s
    """),
    "state_daily": _query(US_STATES.table, """
        SELECT date, new_cases, new_cases_7d, new_deaths, new_deaths_7d, cases, deaths
        FROM {table}
        WHERE state = %(state)s AND date BETWEEN %(first)s AND %(last)s
        ORDER BY date
    """),
    # NYT names a state in full, the COVID Tracking Project by its postal code: covid.regions has both
    "positivity": _query(COVIDTRACKING.table, """
        SELECT date, positivity_7d
        FROM {table}
        WHERE state = (SELECT code FROM {regions} WHERE name = %(state)s)
          AND date BETWEEN %(first)s AND %(last)s AND positivity_7d IS NOT NULL
        ORDER BY date
    """),
    # min and max read the two ends of the (date, new_cases_7d) index
    "county_dates": _query(US_COUNTIES.table, "SELECT min(date) AS first, max(date) AS last FROM {table}"),
    "county_states": _query(US_COUNTIES.table, STATE_NAMES),
    # the last 20 entries of the index (date, new_cases_7d) for that date whose 7-day average is one of new
    # cases per day: the county has a row on each of the 7 days before (so its 7 rows are 7 days, and each
    # row's new cases one day's); else (the week holds its first date in the data, or a gap) it is not ranked
    "top_counties": _query(US_COUNTIES.table, """
        SELECT state, county, fips, new_cases_7d, new_cases, cases, deaths
        FROM {table} AS t
        WHERE date = %(date)s AND new_cases_7d IS NOT NULL AND """ + WHOLE_WEEK + """
        ORDER BY date DESC, new_cases_7d DESC
        LIMIT 20
    """),
    "state_counties": _query(US_COUNTIES.table, """
        SELECT county, fips, new_cases_7d, new_cases, cases, deaths, """ + WHOLE_WEEK + """ AS whole_week
        FROM {table} AS t
        WHERE date = %(date)s AND state = %(state)s
        ORDER BY new_cases_7d DESC NULLS LAST, county
    """),
    "school_summary": _query(CPS_SCHOOLS.summary("school_summary"), """
        SELECT school_id, school, total_cases, cases_last_7d, cases_last_14d
        FROM {table} ORDER BY total_cases DESC NULLS LAST, school_id
    """),
    # CPS reports once a week; the week starts on Monday (date_trunc)
    "school_weeks": _query(CPS_SCHOOLS.table, """
        SELECT school_id, date_trunc('week', date)::date AS week, sum(new_cases)::bigint AS new_cases
        FROM {table} GROUP BY school_id, week ORDER BY week, school_id
    """),
    "files_by_dataset": Query("ingested_files", ledger.STATUS_BY_DATASET),
    # what each of the latest files changed in its clean table (Vintages: covid.revisions)
    "revisions": _query("revisions", """
        SELECT f.processed_at AS loaded_at, f.dataset, f.key, f.issued_at, r.table_name, r.keys_added,
               r.keys_revised, r.keys_unchanged, jsonb_array_length(r.largest) AS largest_listed
        FROM {table} AS r JOIN {ledger} AS f USING (file_id)
        ORDER BY r.file_id DESC, r.table_name
        LIMIT 100
    """),
    "quarantined": _query("ingested_files", """
        SELECT processed_at AS quarantined_at, dataset, key, reason
        FROM {table} WHERE status = 'quarantined' OR (status = 'received' AND reason IS NOT NULL)  -- or gone
        ORDER BY file_id DESC LIMIT 100
    """),
    "rejected_rows": _query("rejected_rows", """
        SELECT r.rejected_at, f.dataset, r.key, r.line, r.reason, r.raw_line
        FROM {table} AS r JOIN {ledger} AS f USING (file_id)
        ORDER BY r.file_id DESC, r.line
        LIMIT 500
    """),
}


def reader_url() -> str | None:
    """The read-only login (DATABASE_READ_URL), else DATABASE_URL: read per call, as Warehouse does."""
    return os.environ.get("DATABASE_READ_URL") or os.environ.get("DATABASE_URL")


def read(name: str, **params) -> pd.DataFrame:
    """The rows of QUERIES[name], from the cache unless a file has been processed since they were read."""
    url = reader_url()
    return _read(url, latest_load(url), name, params)


@st.cache_data(ttl=LEDGER_TTL, show_spinner=False)
def latest_load(url: str) -> str:
    """When the ledger last recorded a file's outcome (loaded, quarantined, duplicate), in UTC; '' before any.
    Part of every cache key, so a load is shown on the next page view."""
    frame = _fetch(url, _query("ingested_files", """
        SELECT to_char(max(processed_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS at FROM {table}
    """), {})
    return "" if frame.empty or frame.at[0, "at"] is None else frame.at[0, "at"]


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=1000)
def _read(url: str, version: str, name: str, params: dict) -> pd.DataFrame:
    return _fetch(url, QUERIES[name], params)


def _fetch(url: str, query: Query, params: dict) -> pd.DataFrame:
    with Warehouse(database_url=url).connect_read() as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"covid.{query.table}",))
        if not cur.fetchone()[0]:
            return pd.DataFrame()
        cur.execute(query.statement, params)
        rows = cur.fetchall()
        frame = pd.DataFrame(rows, columns=[column.name for column in cur.description])
        for i, column in enumerate(cur.description):
            if column.type_code in DATE_TYPES:
                frame[column.name] = pd.to_datetime(frame[column.name], utc=column.type_code == 1184)
            elif column.type_code in INTEGER_TYPES:
                # whole numbers stay whole where a count is empty (not reported): pandas would make the column
                # float, shown and downloaded as 94518.0
                frame[column.name] = pd.array([row[i] for row in rows], dtype="Int64")
    return frame
