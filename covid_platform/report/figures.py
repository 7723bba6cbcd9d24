"""What the daily report shows, read from the warehouse in one snapshot.

The figures (the national series, the top states, test positivity) are what a report is built from: their
fingerprint decides whether a new report is published, and they are kept as JSON beside each page, so the
next report can say what changed. The data status (from the ledger) is shown but not fingerprinted: a
duplicate file changes the ledger, not the figures, and must not publish the same figures again.

A table that does not exist yet (nothing loaded) reads as no rows. Tables are named from the dataset
declarations and quoted as identifiers; values are bound parameters.
"""

import datetime as dt
import decimal
import hashlib
import json
import math
from dataclasses import dataclass

import psycopg2.extensions
from psycopg2 import sql

from covid_platform.datasets import COVIDTRACKING, DATASETS, US_STATES
from covid_platform.engine import ledger

TOP_STATES = 10


NATIONAL = US_STATES.summary("national_daily")
STATES = US_STATES.table
TESTING = COVIDTRACKING.table
TESTING_SUMMARY = COVIDTRACKING.summary("testing_state_summary")
# The tables the report reads: the asset's upstream assets (each is also the asset of that name).
READS = (NATIONAL, STATES, TESTING, TESTING_SUMMARY)


@dataclass(frozen=True)
class Query:
    tables: tuple[str, ...]
    """The covid tables it reads; until every one exists it returns no rows."""
    statement: sql.Composed


def _query(tables: tuple[str, ...], text: str) -> Query:
    """`text` with each of `tables` as {name}, a quoted identifier."""
    return Query(tables, sql.SQL(text).format(**{name: sql.Identifier("covid", name) for name in tables}))


QUERIES = {
    "national": _query((NATIONAL,), """
        SELECT date, cases, deaths, new_cases, new_deaths, new_cases_7d, new_deaths_7d
        FROM {national_daily} ORDER BY date
    """),
    # on the national series' last date (one every state still reporting has reported)
    # deaths not reported that day: the state's latest reported, with its date (as the nation counts them)
    "top_states": _query((STATES, NATIONAL), """
        SELECT s.state, s.date, s.new_cases_7d, s.new_cases, s.new_deaths_7d, s.cases,
               coalesce(s.deaths, earlier.deaths) AS deaths, earlier.date AS deaths_date
        FROM {state_daily} AS s
        LEFT JOIN LATERAL (
            SELECT t.deaths, t.date FROM {state_daily} AS t
            WHERE t.state = s.state AND t.date < s.date AND t.deaths IS NOT NULL
            ORDER BY t.date DESC LIMIT 1
        ) AS earlier ON s.deaths IS NULL
        WHERE s.date = (SELECT max(date) FROM {national_daily}) AND s.new_cases_7d IS NOT NULL
        ORDER BY s.new_cases_7d DESC, s.state
        LIMIT %(limit)s
    """),
    # each state's latest 7-day positivity, and its positivity to date (testing_state_summary)
    "testing": _query((TESTING, TESTING_SUMMARY, "regions"), """
        SELECT latest.state, r.name AS state_name, latest.date, latest.positivity_7d,
               summary.positivity AS positivity_to_date
        FROM (
            SELECT DISTINCT ON (state) state, date, positivity_7d
            FROM {testing_daily} WHERE positivity_7d IS NOT NULL
            ORDER BY state, date DESC
        ) AS latest
        LEFT JOIN {testing_state_summary} AS summary USING (state)
        LEFT JOIN {regions} AS r ON r.code = latest.state  -- the files name states by postal code
        ORDER BY latest.positivity_7d DESC, latest.state
    """),
    "status": Query(("ingested_files", "rejected_rows"), ledger.STATUS_BY_DATASET),
}
STATUS_COUNTS = ("loaded", "quarantined", "duplicates", "rows_loaded", "rows_set_aside")


def _value(value):
    """A JSON value that reads back equal: ISO dates, floats rounded (a recomputation's last bits must not
    count as a revision), NaN as null."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat(timespec="seconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        value = float(value)
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value


@dataclass(frozen=True)
class Figures:
    national: list[dict]
    """national_daily, oldest date first."""
    top_states: list[dict]
    """The states with the highest 7-day average of new cases on the latest date, highest first."""
    testing: list[dict]
    """Each state's latest 7-day test positivity, highest first."""
    status: list[dict]
    """One row per declared dataset: its last load and file counts (not fingerprinted)."""

    def shown(self) -> dict:
        """The figures the report renders, as stored beside it."""
        return {"national": self.national, "top_states": self.top_states, "testing": self.testing}

    def fingerprint(self) -> str:
        text = json.dumps(self.shown(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def latest(self) -> dict | None:
        return self.national[-1] if self.national else None

    def day(self, built_at: dt.datetime) -> str:
        """The report's date: the data's latest date (national, else testing), else the build's date."""
        dates = [row["date"] for row in (*self.national[-1:], *self.testing)]
        return max(dates) if dates else built_at.date().isoformat()


def _rows(cur, query: Query, params: dict | None = None) -> list[dict]:
    cur.execute("SELECT bool_and(to_regclass(name) IS NOT NULL) FROM unnest(%s::text[]) AS name",
                ([f"covid.{table}" for table in query.tables],))
    if not cur.fetchone()[0]:
        return []
    cur.execute(query.statement, params or {})
    names = [column.name for column in cur.description]
    return [{name: _value(value) for name, value in zip(names, row)} for row in cur.fetchall()]


def read(conn: psycopg2.extensions.connection) -> Figures:
    """Every figure, read in the connection's current transaction (the caller makes it REPEATABLE READ, so
    the figures agree with each other even while a summary is rebuilt)."""
    with conn.cursor() as cur:
        national = _rows(cur, QUERIES["national"])
        # `deaths_date` only where deaths are an earlier day's: the figures of a report built before it
        # existed read the same (no new report for them alone)
        top_states = [{name: value for name, value in row.items() if name != "deaths_date" or value}
                      for row in _rows(cur, QUERIES["top_states"], {"limit": TOP_STATES})]
        testing = _rows(cur, QUERIES["testing"])
        by_dataset = {row["dataset"]: row for row in _rows(cur, QUERIES["status"])}
    status = [
        {"dataset": name, "table": dataset.table,
         "last_load": by_dataset.get(name, {}).get("last_load"),
         **{count: by_dataset.get(name, {}).get(count, 0) for count in STATUS_COUNTS}}
        for name, dataset in DATASETS.items()
    ]
    return Figures(national, top_states, testing, status)
