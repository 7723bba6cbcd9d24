"""Dashboard queries on large clean tables: p50 and p95 of 50 runs each, and the indexes each plan uses.

    .venv/bin/python benchmarks/dashboard_queries.py [--rows 15000000] [--runs 50] [--data DIR]

Builds covid.county_daily, covid.state_daily and covid.national_daily in a scratch database with the
platform's own DDL (engine/tables.table_ddl for the dataset declarations, sql/schema.sql, sql/national_daily.sql),
filled set-based: the real county file (counties/… of the --data folder, default ../shared/data; 1.88M rows)
loaded once by COPY, its derived columns computed with the platform's definitions, then copied with suffixed
names until each clean table holds about `--rows` rows (county names suffixed in county_daily; state names in
state_daily, whose real size is 56 states x ~590 days); national_daily is then built by the platform's own
SQL. The default size runs in a few minutes; `--rows 15000000` is the issue's 15M rows (8 copies of the county
file).

Then, on a read-only connection as a dashboard holds it, each of the dashboard's own queries
(covid_platform/dashboard/queries.py) on these tables runs `--runs` times (after one warm-up)
and its p50 / p95 / max are printed with the scans of its plan (EXPLAIN).
PostgreSQL: BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
"""

import argparse
import datetime as dt
import gzip
import math
import os
import statistics
import sys
import time
from importlib import resources
from pathlib import Path

import psycopg2
from common import COUNTY_FILE, add_data_argument, connect, data_file, scratch_database
from psycopg2 import sql

from covid_platform.dashboard.queries import QUERIES
from covid_platform.datasets import US_COUNTIES, US_STATES
from covid_platform.engine.tables import add_year_partitions, table_ddl

STATE, STATE_CODE = "New York", "NY"
BUILT = {US_COUNTIES.table, US_STATES.table, *US_STATES.summaries}


def parameters(cur) -> dict:
    """What a reader picks: the state's last 90 days, the counties' latest date (one dict serves every query:
    each takes the names it uses)."""
    cur.execute("SELECT max(date) FROM covid.state_daily WHERE state = %s", (STATE,))
    last = cur.fetchone()[0]
    cur.execute("SELECT max(date) FROM covid.county_daily")
    return {"state": STATE, "state_code": STATE_CODE, "first": last - dt.timedelta(days=90), "last": last,
            "date": cur.fetchone()[0]}


# The platform's derived columns (engine/merge.py): new_x = x minus x on the region's previous date (x on its
# first); new_x_7d = mean of new_x over the row and the 6 rows before it.
COUNTY_BASE = """
CREATE UNLOGGED TABLE bench_county AS
SELECT *, avg(new_cases) OVER last_7 AS new_cases_7d
FROM (
    SELECT state, county, fips, date, cases, deaths,
           CASE WHEN lag(date) OVER w IS NULL THEN cases  ELSE cases  - lag(cases)  OVER w END AS new_cases,
           CASE WHEN lag(date) OVER w IS NULL THEN deaths ELSE deaths - lag(deaths) OVER w END AS new_deaths
    FROM (SELECT DISTINCT ON (state, county, date) * FROM bench_raw ORDER BY state, county, date) AS r
    WINDOW w AS (PARTITION BY state, county ORDER BY date)
) AS differences
WINDOW last_7 AS (PARTITION BY state, county ORDER BY date ROWS BETWEEN 6 PRECEDING AND CURRENT ROW)
"""
STATE_BASE = """
CREATE UNLOGGED TABLE bench_state AS
SELECT *, avg(new_cases) OVER last_7 AS new_cases_7d, avg(new_deaths) OVER last_7 AS new_deaths_7d
FROM (
    SELECT *,
           CASE WHEN lag(date) OVER w IS NULL THEN cases  ELSE cases  - lag(cases)  OVER w END AS new_cases,
           CASE WHEN lag(date) OVER w IS NULL THEN deaths ELSE deaths - lag(deaths) OVER w END AS new_deaths
    FROM (
        SELECT state, min(left(fips, 2)) AS fips, date,
               sum(cases)::bigint AS cases, sum(deaths)::bigint AS deaths
        FROM bench_county GROUP BY state, date
    ) AS totals
    WINDOW w AS (PARTITION BY state ORDER BY date)
) AS differences
WINDOW last_7 AS (PARTITION BY state ORDER BY date ROWS BETWEEN 6 PRECEDING AND CURRENT ROW)
"""
COUNTY_COPY = """
INSERT INTO covid.county_daily
    (state, county, fips, date, cases, deaths, new_cases, new_deaths, new_cases_7d, file_id)
SELECT state, county || %(suffix)s, fips, date, cases, deaths, new_cases, new_deaths, new_cases_7d, 1
FROM bench_county
"""
STATE_COPIES = """
INSERT INTO covid.state_daily
    (state, fips, date, cases, deaths, new_cases, new_deaths, new_cases_7d, new_deaths_7d, file_id)
SELECT state || CASE WHEN copy = 0 THEN '' ELSE ' #' || copy END, fips, date, cases, deaths,
       new_cases, new_deaths, new_cases_7d, new_deaths_7d, 1
FROM generate_series(%(first)s, %(last)s) AS copy, bench_state
ORDER BY copy, state, date
"""


# A table's size with its indexes, and its partitions' if it is partitioned.
SIZE = """pg_size_pretty(pg_total_relation_size('{table}') + coalesce((
    SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits
    WHERE inhparent = '{table}'::regclass), 0))"""


def platform_sql(name: str) -> str:
    return resources.files("covid_platform.sql").joinpath(name).read_text()


def timed(label: str, action) -> None:
    started = time.perf_counter()
    action()
    print(f"  {label}: {time.perf_counter() - started:.1f} s", flush=True)


def fill_counties(cur, copies: int) -> None:
    for copy in range(copies):
        timed(f"county_daily copy {copy + 1}/{copies}",
              lambda: cur.execute(COUNTY_COPY, {"suffix": f" #{copy}" if copy else ""}))


def create_clean_table(cur, dataset) -> None:
    """As the clean asset creates it (assets/clean.py): the table, and a partition per year if declared so."""
    cur.execute(table_ddl(dataset))
    if dataset.partition_by_year:
        cur.execute("SELECT min(date), max(date) FROM bench_county")
        first, last = cur.fetchone()
        add_year_partitions(cur, dataset, range(first.year, last.year + 1))


def build(cur, rows: int, county_file: Path) -> None:
    """The three tables at about `rows` rows each (national_daily: one per date)."""
    cur.execute(platform_sql("schema.sql"))
    cur.execute("CREATE UNLOGGED TABLE bench_raw "
                "(date date, county text, state text, fips text, cases bigint, deaths bigint)")
    with gzip.open(county_file) as source:
        timed("COPY of the county file", lambda: cur.copy_expert(
            "COPY bench_raw FROM STDIN WITH (FORMAT csv, HEADER)", source, size=1 << 20))
    timed("derived columns (county, state)", lambda: (cur.execute(COUNTY_BASE), cur.execute(STATE_BASE)))
    cur.execute("SELECT (SELECT count(*) FROM bench_county), (SELECT count(*) FROM bench_state)")
    county_rows, state_rows = cur.fetchone()
    create_clean_table(cur, US_COUNTIES)
    create_clean_table(cur, US_STATES)

    county_copies = max(1, round(rows / county_rows))
    fill_counties(cur, county_copies)
    state_copies = max(1, round(rows / state_rows))
    batch = max(1, math.ceil(state_copies / 8))
    for first in range(0, state_copies, batch):
        last = min(first + batch, state_copies) - 1
        timed(f"state_daily copies {first + 1}-{last + 1}/{state_copies}",
              lambda: cur.execute(STATE_COPIES, {"first": first, "last": last}))
    timed("national_daily (sql/national_daily.sql)", lambda: cur.execute(platform_sql("national_daily.sql")))
    cur.execute("DROP TABLE bench_raw, bench_state")
    vacuum(cur, "covid.county_daily, covid.state_daily, covid.national_daily")


def vacuum(cur, tables: str) -> None:
    """As autovacuum leaves a loaded table: statistics, and the visibility map index-only scans rely on."""
    timed(f"VACUUM ANALYZE {tables}", lambda: cur.execute(f"VACUUM ANALYZE {tables}"))


def index_scans(plan: dict) -> list[str]:
    """A plan's scans, by index or table: 'Index Only Scan county_daily_date', 'Seq Scan county_daily'."""
    found = []
    if plan["Node Type"].endswith("Scan") and ("Index Name" in plan or "Relation Name" in plan):
        found.append(f"{plan['Node Type']} {plan.get('Index Name') or plan['Relation Name']}")
    for child in plan.get("Plans", []):
        found += index_scans(child)
    return found


def dashboard(url: str):
    """A connection as a dashboard holds one: read-only, kept open."""
    conn = psycopg2.connect(url, application_name="covid_dashboard")
    conn.set_session(readonly=True, autocommit=True)
    return conn


def measure(conn, name: str, query: sql.Composed, params: dict, runs: int) -> list[tuple]:
    """Prints p50 / p95 / max of `runs` runs after one warm-up, and the plan's scans; returns the result."""
    cur = conn.cursor()
    cur.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + query, params)
    scans = sorted(set(index_scans(cur.fetchone()[0][0]["Plan"])))
    cur.execute(query, params)
    result = cur.fetchall()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        cur.execute(query, params)
        cur.fetchall()
        times.append((time.perf_counter() - started) * 1000)
    p95 = statistics.quantiles(times, n=20, method="inclusive")[18]
    verdict = "ok" if p95 < 50 else "OVER 50 ms"
    print(f"{name:<34} p50 {statistics.median(times):8.1f} ms  p95 {p95:8.1f} ms  max {max(times):8.1f} ms  "
          f"{verdict:<10} rows {len(result):>3}  plan: {', '.join(scans)}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows of county_daily and of state_daily")
    parser.add_argument("--runs", type=int, default=50)
    add_data_argument(parser)
    args = parser.parse_args()
    county_file = data_file(args.data, COUNTY_FILE)
    with scratch_database() as url:
        conn, _ = connect(url)
        cur = conn.cursor()
        print(f"cores: {os.cpu_count()}  load average {os.getloadavg()[0]:.1f}  building tables of about "
              f"{args.rows:,} rows", flush=True)
        started = time.perf_counter()
        build(cur, args.rows, county_file)
        cur.execute("SELECT (SELECT count(*) FROM covid.county_daily), "
                    "(SELECT count(*) FROM covid.state_daily), (SELECT count(*) FROM covid.national_daily), "
                    f"{SIZE.format(table='covid.county_daily')}, {SIZE.format(table='covid.state_daily')}")
        counties, states, dates, county_size, state_size = cur.fetchone()
        print(f"built in {time.perf_counter() - started:.0f} s: county_daily {counties:,} rows "
              f"({county_size}), state_daily {states:,} rows ({state_size}), national_daily {dates:,} rows")
        print(f"{args.runs} runs each, on the platform's indexes:")
        reader = dashboard(url)
        params = parameters(reader.cursor())
        # The dashboard's own statements (covid_platform/dashboard/queries.py), on the tables built here.
        for query_name, query in QUERIES.items():
            if query.table in BUILT:
                measure(reader, query_name, query.statement, params, args.runs)
        print(f"not timed (tables this benchmark does not fill): "
              f"{', '.join(n for n, q in QUERIES.items() if q.table not in BUILT)}")
        reader.close()
        print(f"load average at the end: {os.getloadavg()[0]:.1f} (other work on the machine skews times)")
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
