"""The first load's work in PostgreSQL, as the platform does it, against DuckDB (a columnar engine in the
process, parallel): the evaluation the performance issue asks for, on the same file in one run.

    .venv/bin/python benchmarks/first_load_engines.py [--copies N] [--data DIR] [--threads N] [--memory MB]

Builds the county file of `ingest_vs_copy.py` (N copies of the JHU county file, default 8: 15M rows; the
rows the gates would reject dropped) and measures, on a scratch database:
  1. a bare COPY of it into a plain typed table (the floor);
  2. PostgreSQL, the platform's statements: the typed COPY into a staging table, one aggregate of the
     checks' kind over it (empty or negative counts, repeated keys, regions covid.regions does not know),
     the INSERT of every row with its derived columns (`engine/derived.py`'s windows, by a region number)
     into the year-partitioned `county_daily`, and its key and index built after;
  3. DuckDB: the file read into typed columns, the same aggregate, the same derived columns by DuckDB's
     windows, streamed into a second `county_daily` by COPY (DuckDB writes CSV into a pipe that PostgreSQL's
     COPY reads, both at once), and the same key and index built after; in a child process, so its peak
     RSS is DuckDB's and the stream's alone;
     Apart, for the split: DuckDB's windows alone into a file, and PostgreSQL's COPY of that file alone;
  4. exactness: the two tables compared on every column (the 7-day mean exactly, and within 1e-9).
The platform's remaining first-load work (archive, the ledger, the history, the summaries) is the same on
either path and is measured by `ingest_vs_copy.py`. DuckDB comes with the `bench` extra; the platform does
not use it. PostgreSQL: BENCH_POSTGRES_URL.
"""

import argparse
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg2
from psycopg2 import sql

from common import COUNTY_FILE, add_data_argument, bare_copy, connect, data_file, scratch_database, server_settings
from ingest_vs_copy import build_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from covid_platform.datasets import US_COUNTIES  # noqa: E402
from covid_platform.engine.derived import derived_select  # noqa: E402
from covid_platform.engine.tables import add_year_partitions, build_indexes_ddl, column_list, table_ddl  # noqa: E402
from covid_platform.resources.warehouse import _run_migration  # noqa: E402

COLUMNS = ("state", "county", "fips", "date", "cases", "deaths", "new_cases", "new_deaths", "new_cases_7d", "file_id")
# the checks' kind of aggregate: what a gate counts in one pass (the platform's own is `engine/gates.py`)
CHECKS_PG = """
SELECT count(*), count(*) FILTER (WHERE cases IS NULL OR cases < 0 OR deaths < 0),
       count(*) FILTER (WHERE state IS NULL OR county IS NULL OR date IS NULL),
       count(*) - (SELECT count(*) FROM (SELECT DISTINCT state, county, date FROM staged) AS k),
       count(*) FILTER (WHERE lower(state) NOT IN (SELECT lower(name) FROM covid.regions))
FROM staged
"""
CHECKS_DUCK = """
SELECT count(*), count(*) FILTER (WHERE cases IS NULL OR cases < 0 OR deaths < 0),
       count(*) FILTER (WHERE state IS NULL OR county IS NULL OR date IS NULL),
       count(*) - (SELECT count(*) FROM (SELECT DISTINCT state, county, date FROM staged) AS k),
       count(*) FILTER (WHERE lower(state) NOT IN (SELECT lower(name) FROM regions))
FROM staged
"""
# engine/derived.py's columns in DuckDB's SQL (it has IGNORE NULLS, which PostgreSQL has not)
DERIVED_DUCK = """
SELECT state, county, lpad(fips, 5, '0') AS fips, date, cases, deaths, new_cases, new_deaths,
       avg(new_cases) OVER (PARTITION BY state, county ORDER BY date ROWS BETWEEN 6 PRECEDING AND CURRENT ROW)
         AS new_cases_7d, 1 AS file_id
FROM (
    SELECT *, CASE WHEN lag(date) OVER w IS NULL THEN cases ELSE cases - lag(cases) OVER w END AS new_cases,
           deaths - coalesce(last_value(deaths IGNORE NULLS) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
             AS new_deaths
    FROM staged WINDOW w AS (PARTITION BY state, county ORDER BY date)
)
ORDER BY state, county, date
"""


def clean_table(cur, schema: str) -> None:
    """An empty `county_daily` (its year partitions, no index) in `schema`, as a first load finds it."""
    cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}").format(s=sql.Identifier(schema)))
    cur.execute(table_ddl(US_COUNTIES))
    add_year_partitions(cur, US_COUNTIES, range(2020, 2022))
    cur.execute("ALTER TABLE covid.county_daily DROP CONSTRAINT county_daily_pkey; "
                "DROP INDEX covid.county_daily_date_new_cases_7d")
    cur.execute(sql.SQL("ALTER TABLE covid.county_daily SET SCHEMA {}").format(sql.Identifier(schema)))
    for year in (2020, 2021):
        cur.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
            sql.Identifier("covid", f"county_daily_{year}"), sql.Identifier(schema)))


def timed(label: str, splits: dict, function, *args):
    started = time.perf_counter()
    result = function(*args)
    splits[label] = time.perf_counter() - started
    return result


def build_indexes(url: str, schema: str) -> None:
    conn = psycopg2.connect(url, options=f"-c search_path={schema}")
    with conn, conn.cursor() as cur:
        ddl = build_indexes_ddl(US_COUNTIES).as_string(cur).replace('"covid"."county_daily"', '"county_daily"')
        cur.execute(ddl.replace("INDEX IF NOT EXISTS", "INDEX"))
    conn.close()


def postgres_path(url: str, path: Path, splits: dict) -> list:
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        clean_table(cur, "pg")
        cur.execute("CREATE TABLE staged (date date, county text, state text, fips text, cases bigint, deaths bigint)")

        def copy():
            with open(path, "rb") as f:
                cur.copy_expert("COPY staged FROM STDIN WITH (FORMAT csv, HEADER)", f, size=1 << 20)

        timed("typed COPY into staging", splits, copy)
        cur.execute("SET LOCAL work_mem = '200MB'; SET LOCAL hash_mem_multiplier = 1; SET LOCAL jit = off")
        checks = timed("checks' aggregate", splits, lambda: (cur.execute(CHECKS_PG), cur.fetchone())[1])

        def insert():
            cur.execute('CREATE TEMP TABLE region_ids AS SELECT state, county, row_number() OVER (ORDER BY state, county) '
                        'AS "region id" FROM (SELECT DISTINCT state, county FROM staged) AS r; ANALYZE region_ids')
            rows = sql.SQL("SELECT state, county, lpad(fips, 5, '0') AS fips, date, cases, deaths, 1 AS file_id, "
                           '"region id" FROM staged JOIN region_ids USING (state, county)')
            columns = column_list(COLUMNS)
            cur.execute("SET LOCAL enable_mergejoin = off")
            cur.execute(sql.SQL("INSERT INTO pg.county_daily ({c}) SELECT {c} FROM ({d}) AS w").format(
                c=columns, d=derived_select(US_COUNTIES, rows, by=["region id"])))

        timed("INSERT with the windows", splits, insert)
        cur.execute("DROP TABLE staged")
    conn.close()
    timed("key and index built", splits, build_indexes, url, "pg")
    return list(checks)


def duckdb_path(url: str, path: Path, threads: int, memory_mb: int, results) -> None:
    """In a child process: DuckDB's part, its splits, checks and peak RSS put on `results`."""
    import duckdb

    splits = {}
    work = Path(tempfile.mkdtemp(prefix="duck_"))
    db = duckdb.connect(str(work / "staged.duckdb"), config={"threads": threads, "memory_limit": f"{memory_mb}MB",
                                "temp_directory": str(work / "spill"), "preserve_insertion_order": False})
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        clean_table(cur, "duck")
        cur.execute("SELECT name FROM covid.regions")
        db.execute("CREATE TABLE regions (name VARCHAR)")
        db.executemany("INSERT INTO regions VALUES (?)", cur.fetchall())
    timed("typed read of the file", splits, db.execute,
          "CREATE TABLE staged AS SELECT * FROM read_csv(?, header = true, columns = {'date': 'DATE', "
          "'county': 'VARCHAR', 'state': 'VARCHAR', 'fips': 'VARCHAR', 'cases': 'BIGINT', 'deaths': 'BIGINT'})",
          [str(path)])
    checks = timed("checks' aggregate", splits, lambda: db.execute(CHECKS_DUCK).fetchone())
    fifo = work / "rows.csv"
    os.mkfifo(fifo)

    def produce():
        db.execute(f"COPY ({DERIVED_DUCK}) TO '{fifo}' (FORMAT csv, HEADER false)")

    def stream():
        producer = threading.Thread(target=produce)
        producer.start()
        with conn, conn.cursor() as cur, open(fifo, "rb") as rows:
            cur.copy_expert(sql.SQL("COPY duck.county_daily ({}) FROM STDIN WITH (FORMAT csv)").format(
                column_list(COLUMNS)).as_string(cur), rows, size=1 << 20)
        producer.join()

    timed("windows, streamed into the table by COPY", splits, stream)
    timed("key and index built", splits, build_indexes, url, "duck")
    # apart, for the split: DuckDB's windows alone (into a file), and PostgreSQL's COPY of that file alone
    finished = work / "finished.csv"
    timed("apart: the windows alone, into a file", splits, db.execute,
          f"COPY ({DERIVED_DUCK}) TO '{finished}' (FORMAT csv, HEADER false)")

    with conn, conn.cursor() as cur:
        clean_table(cur, "apart")

    def copy_alone():
        with conn, conn.cursor() as cur, open(finished, "rb") as rows:
            cur.copy_expert(sql.SQL("COPY apart.county_daily ({}) FROM STDIN WITH (FORMAT csv)").format(
                column_list(COLUMNS)).as_string(cur), rows, size=1 << 20)

    timed("apart: the finished rows' COPY alone", splits, copy_alone)
    with conn, conn.cursor() as cur:
        cur.execute("DROP SCHEMA apart CASCADE")
    conn.close()
    shutil.rmtree(work)
    results.put((splits, list(checks), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def compare(url: str) -> tuple[int, int, int]:
    """Rows that differ between the two tables (any column but the mean, which is compared exactly and
    within 1e-9)."""
    conn, query = connect(url)
    others = " OR ".join(f"p.{c} IS DISTINCT FROM d.{c}" for c in COLUMNS if c != "new_cases_7d")
    [(differ, mean_exact, mean_close)] = query(
        f"SELECT count(*) FILTER (WHERE p.state IS NULL OR d.state IS NULL OR {others}), "
        "count(*) FILTER (WHERE p.new_cases_7d IS DISTINCT FROM d.new_cases_7d), "
        "count(*) FILTER (WHERE abs(p.new_cases_7d - d.new_cases_7d) > 1e-9) "
        "FROM pg.county_daily AS p FULL JOIN duck.county_daily AS d USING (state, county, date)")
    conn.close()
    return differ, mean_exact, mean_close


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--memory", type=int, default=300, help="DuckDB's memory limit, MB (default 300)")
    add_data_argument(parser)
    args = parser.parse_args()
    source = data_file(args.data, COUNTY_FILE)
    with tempfile.TemporaryDirectory() as folder, scratch_database() as url:
        path = Path(folder) / "us-counties.csv"
        rows = build_file(source, path, args.copies)
        print(f"{rows:,} rows, {path.stat().st_size / 1e6:.0f} MB; {os.cpu_count()} cores, load average "
              f"{os.getloadavg()[0]:.2f}; {server_settings(url)}; DuckDB threads {args.threads}, memory {args.memory} MB")
        conn = psycopg2.connect(url)
        with conn, conn.cursor() as cur:
            _run_migration(cur)  # covid.regions, as the platform migrates it
        conn.close()
        floor = bare_copy(url, path)
        print(f"bare COPY: {floor:.1f} s")
        pg_splits = {}
        pg_checks = postgres_path(url, path, pg_splits)
        results = multiprocessing.get_context("spawn").Queue()
        child = multiprocessing.get_context("spawn").Process(
            target=duckdb_path, args=(url, path, args.threads, args.memory, results))
        child.start()
        duck_splits, duck_checks, duck_rss = results.get()
        child.join()
        for name, splits in (("PostgreSQL", pg_splits), ("DuckDB", duck_splits)):
            total = sum(seconds for label, seconds in splits.items() if not label.startswith("apart"))
            print(f"{name}: {total:.1f} s = {total / floor:.1f}× the bare COPY")
            for label, seconds in splits.items():
                print(f"  {label}: {seconds:.1f} s ({seconds / floor:.2f}×)")
        print(f"DuckDB's process peak RSS: {duck_rss:.0f} MB")
        print(f"checks (rows, bad counts, empty key parts, repeated keys, unknown regions): "
              f"PostgreSQL {pg_checks}, DuckDB {duck_checks}")
        differ, mean_exact, mean_close = compare(url)
        print(f"exactness: {differ} rows differ; the 7-day mean differs on {mean_exact} rows, by more than 1e-9 on "
              f"{mean_close}; load average at the end {os.getloadavg()[0]:.2f}")
        sys.exit(1 if differ or mean_close or pg_checks != duck_checks else 0)


if __name__ == "__main__":
    main()
