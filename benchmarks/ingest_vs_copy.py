"""Ingestion throughput and memory against the floor PostgreSQL sets: a bare COPY of the same file.

    .venv/bin/python benchmarks/ingest_vs_copy.py [--copies N] [--dev] [--data DIR]

Builds a county file from the JHU county file (counties/… of the --data folder, default ../shared/data):
N copies with the county names suffixed, seeded and deterministic; the one conflicting duplicate key of the
source is dropped. Then in one run measures:
  1. bare COPY of the file into a plain table (the floor),
  2. the platform's ingestion in-process: raw (archive, COPY to staging, gates) → county_daily (merge),
  3. a one-day file (the next date for every county) ingested onto the loaded table,
and prints each time, the ratio to the bare COPY, and the peak RSS of the ingesting process. With --dev, then:
  4. the same file put into S3 (moto's server, in this process) with `covid-platform dev` running on a fresh
     database: the time from the put's completion to the ledger saying the file is loaded (county_daily holds
     every row), and the peak RSS of each of dev's processes (webserver, daemon, code servers, the run).
PostgreSQL: BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres); a scratch database
is created and dropped.
"""

import argparse
import gzip
import multiprocessing
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import psycopg2
from common import (
    COUNTY_FILE, add_data_argument, connect, dagster_dev, data_file, moto_s3, scratch_database, wait_for,
)

CONFLICT = b"2020-03-22,District of Columbia,District of Columbia,11001,102,2\r\n"  # CRLF, as the file


def build_file(source_path: Path, path: Path, copies: int) -> int:
    """Write `copies` copies of the source rows, county names suffixed per copy; returns the row count."""
    rows = 0
    with gzip.open(source_path) as source, open(path, "wb") as out:
        header = source.readline()
        body = [line for line in source if line != CONFLICT]
        out.write(header)
        for copy in range(copies):
            suffix = f" #{copy}".encode() if copy else b""
            for line in body:
                date, county, rest = line.split(b",", 2)
                out.write(b"%s,%s%s,%s" % (date, county, suffix, rest))
            rows += len(body)
    return rows


def bare_copy(url: str, path: Path) -> float:
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE bare "
                    "(date date, county text, state text, fips text, cases bigint, deaths bigint)")
        started = time.perf_counter()
        with open(path, "rb") as f:
            cur.copy_expert("COPY bare FROM STDIN WITH (FORMAT csv, HEADER)", f, size=1 << 20)
    elapsed = time.perf_counter() - started
    with conn, conn.cursor() as cur:
        cur.execute("DROP TABLE bare")
    conn.close()
    return elapsed


def ingest(url: str, landing_dir: str, key: str, out) -> None:
    """In a child process, so its peak RSS is the platform's alone."""
    import dagster as dg
    from dagster_aws.s3 import S3Resource

    from covid_platform.assets.raw import ETAG_TAG, KEY_TAG
    from covid_platform.definitions import defs
    from covid_platform.engine.ledger import partition_key
    from covid_platform.resources.landing import LandingZone
    from covid_platform.resources.http_source import HttpSources
    from covid_platform.resources.notifier import Notifier
    from covid_platform.resources.warehouse import Warehouse

    landing = LandingZone(url=Path(landing_dir).as_uri(), s3=S3Resource())
    etag = landing.describe(key).etag
    partition = partition_key(key, etag)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("us_counties_files", [partition])
        started = time.perf_counter()
        result = dg.materialize(
            list(defs.assets),
            selection=dg.AssetSelection.assets("raw_us_counties").downstream(),
            partition_key=partition,
            instance=instance,
            resources={"landing": landing, "warehouse": Warehouse(database_url=url), "notifier": Notifier(),
                       "http": HttpSources()},
            tags={KEY_TAG: key, ETAG_TAG: etag},
            raise_on_error=False,
        )
        elapsed = time.perf_counter() - started
    out.send((result.success, elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def ingest_in_child(url: str, work: Path, key: str) -> tuple[bool, float, float]:
    receive, send = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("spawn").Process(target=ingest, args=(url, str(work), key, send))
    child.start()
    child.join()
    if not receive.poll():
        raise SystemExit(f"the ingesting process died (exit code {child.exitcode}); see its error above")
    return receive.recv()


def count_rows(url: str) -> int:
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM covid.county_daily")
        rows = cur.fetchone()[0]
    conn.close()
    return rows


class PeakRss:
    """Samples the RSS of a process and all its descendants every 0.2 s; keeps each one's peak."""

    def __init__(self, pid: int):
        self.root, self.peaks, self._stop = psutil.Process(pid), {}, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.wait(0.2):
            for process in [self.root, *self.root.children(recursive=True)]:
                try:
                    name = " ".join(process.cmdline()[1:4])[:60]
                    rss = process.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.peaks[(process.pid, name)] = max(rss, self.peaks.get((process.pid, name), 0))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def through_dagster_dev(path: Path, key: str, floor: float, day_path: Path, day_key: str) -> None:
    """The file put into S3 with `covid-platform dev` running: put → loaded in the ledger; then the one-day
    file onto it."""
    import boto3

    with moto_s3() as endpoint, scratch_database() as url, tempfile.TemporaryDirectory() as work:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        bucket = "bench-landing"
        s3.create_bucket(Bucket=bucket)
        conn, query = connect(url)

        def status(of: str | None = None):
            if not query("SELECT to_regclass('covid.ingested_files')")[0][0]:
                return None
            rows = query("SELECT status FROM covid.ingested_files WHERE key = %s OR %s IS NULL", (of, of))
            return rows and rows[0][0] in ("loaded", "quarantined", "failed") and rows[0][0]

        with dagster_dev(url, endpoint, bucket, Path(work)) as (dev, _):
            wait_for(dev, status, 300, "the sample file covid-platform dev drops", 0.5)
            s3.upload_file(str(path), bucket, f"drops/{key}")
            landed = time.perf_counter()
            with PeakRss(dev.pid) as rss:
                outcome = wait_for(dev, lambda: status(key), 3600, f"{key} to load", 0.2)
            elapsed = time.perf_counter() - landed
            rows = query("SELECT count(*) FROM covid.county_daily")[0][0]
            print(f"S3 put → county_daily, dagster dev: {elapsed:7.2f} s  ({elapsed / floor:.2f}x)  "
                  f"{outcome}, rows in county_daily: {rows:,}", flush=True)
            for (pid, name), peak in sorted(rss.peaks.items(), key=lambda item: -item[1])[:6]:
                print(f"    peak RSS {peak:6.0f} MB  pid {pid:>7}  {name}")

            s3.upload_file(str(day_path), bucket, f"drops/{day_key}")
            landed = time.perf_counter()
            outcome = wait_for(dev, lambda: status(day_key), 600, f"{day_key} to load", 0.1)
            elapsed = time.perf_counter() - landed
            rows = query("SELECT count(*) FROM covid.county_daily")[0][0]
            print(f"one-day file, S3 put → county_daily, dagster dev (sensor every 10 s): {elapsed:5.2f} s  "
                  f"{outcome}, rows in county_daily: {rows:,}")
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--dev", action="store_true", help="then the same file through covid-platform dev")
    add_data_argument(parser)
    args = parser.parse_args()
    source = data_file(args.data, COUNTY_FILE)
    with scratch_database() as url, tempfile.TemporaryDirectory(prefix="covid_bench_") as work:
        work = Path(work)
        key = "us_counties/bench.csv"
        path = work / key
        path.parent.mkdir(parents=True)
        rows = build_file(source, path, args.copies)
        size = path.stat().st_size
        print(f"cores: {os.cpu_count()}  file: {rows:,} rows, {size / 1e6:.0f} MB")
        floor = bare_copy(url, path)
        print(f"bare COPY:                 {floor:7.2f} s  (1.00x)")
        ok, elapsed, peak_mb = ingest_in_child(url, work, key)
        print(f"ingestion raw → clean:     {elapsed:7.2f} s  ({elapsed / floor:.2f}x)  "
              f"peak RSS {peak_mb:.0f} MB  rows in county_daily: {count_rows(url):,}  success: {ok}")

        # Incremental: the next day for every county, onto the loaded table.
        day_key = "us_counties/next-day.csv"
        conn = psycopg2.connect(url)
        with conn.cursor() as cur, open(work / day_key, "wb") as out:
            cur.copy_expert(
                "COPY (SELECT date + 1 AS date, county, state, fips, cases + 3 AS cases, deaths "
                "FROM covid.county_daily WHERE date = (SELECT max(date) FROM covid.county_daily)) "
                "TO STDOUT WITH (FORMAT csv, HEADER)",
                out,
            )
        conn.close()
        day_rows = (work / day_key).read_bytes().count(b"\n") - 1
        ok, elapsed, peak_mb = ingest_in_child(url, work, day_key)
        print(f"one-day file ({day_rows:,} rows) onto the table: {elapsed:5.2f} s  peak RSS {peak_mb:.0f} MB"
              f"  rows in county_daily: {count_rows(url):,}  success: {ok}")
        if args.dev:
            through_dagster_dev(path, key, floor, work / day_key, day_key)


if __name__ == "__main__":
    sys.exit(main())
