"""Ingestion throughput and memory against the floor PostgreSQL sets: a bare COPY of the same file.

    .venv/bin/python benchmarks/ingest_vs_copy.py [--copies N] [--dev] [--as-published] [--data DIR]

Builds a county file from the JHU county file (counties/… of the --data folder, default ../shared/data):
N copies with the county names suffixed, seeded and deterministic; the source's rows the gates reject are
dropped (its one conflicting duplicate key, and its one row of a state covid.regions does not know), so the
file is one the gates pass whole. With --as-published they are kept, as the publisher's file has them: the
gates then set those rows aside, and the split shows what that costs. Then in one run measures:
  1. bare COPY of the file into a plain table (the floor),
  2. the platform's ingestion in-process: raw (archive, COPY to staging, gates) → county_daily (merge),
  3. a one-day file (the next date for every county) ingested onto the loaded table,
and prints each time, the ratio to the bare COPY, the peak RSS of the ingesting process and of PostgreSQL's
backends serving it, and where the time went (SPLIT: each step's time, and within it the engine's parts, timed
around their functions). With --dev, then:
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
from urllib.parse import urlparse

import psutil
import psycopg2
from common import (
    COUNTY_FILE, add_data_argument, bare_copy, connect, dagster_dev, data_file, moto_s3, scratch_database,
    server_settings, wait_for,
)

CONFLICT = b"2020-03-22,District of Columbia,District of Columbia,11001,102,2\r\n"  # CRLF, as the file
UNKNOWN_STATE = b",Wuhan Evacuee,"  # not a region of covid.regions: a bad row


def build_file(source_path: Path, path: Path, copies: int, as_published: bool = False) -> int:
    """Write `copies` copies of the source rows, county names suffixed per copy; returns the row count."""
    rows = 0
    with gzip.open(source_path) as source, open(path, "wb") as out:
        header = source.readline()
        body = [line for line in source
                if as_published or (line != CONFLICT and UNKNOWN_STATE not in line)]
        out.write(header)
        for copy in range(copies):
            suffix = f" #{copy}".encode() if copy else b""
            for line in body:
                date, county, rest = line.split(b",", 2)
                out.write(b"%s,%s%s,%s" % (date, county, suffix, rest))
            rows += len(body)
    return rows


# The engine's parts of each step, timed around these functions (step, module, function, label); a function
# that does not run (the rows gated as text, for a file the typed COPY's aggregate admits whole) takes no time.
RAW, CLEAN = "raw_us_counties", "county_daily"
SPLIT = [
    (RAW, "covid_platform.engine.intake", "archive", "archive (copy to _archive/)"),
    (RAW, "covid_platform.engine.gates", "copy_typed", "COPY straight into typed columns"),
    (RAW, "covid_platform.engine.gates", "create_region_map", "region map (distinct regions)"),
    (RAW, "covid_platform.engine.gates", "_typed_checks", "checks' one scan (either path)"),
    (RAW, "covid_platform.engine.gates", "_stage_unadmitted", "rows not admitted, staged as text"),
    (RAW, "covid_platform.engine.gates", "_find_bad_rows", "their gates: finding bad rows"),
    (RAW, "covid_platform.engine.regions", "find_unknown", "  of which unknown regions"),
    (RAW, "covid_platform.engine.gates", "_find_good_dates", "  of which good dates"),
    (RAW, "covid_platform.engine.gates", "_set_aside", "setting bad rows aside"),
    (RAW, "covid_platform.engine.gates", "_keep_checked", "the other rows' values as text reads them"),
    (RAW, "covid_platform.engine.intake", "stage", "text path: COPY as text"),
    (RAW, "covid_platform.engine.gates", "create_typed", "text path: typed cast of the text"),
    (CLEAN, "covid_platform.assets.clean", "merge_pending", "merge into the clean table"),
    (CLEAN, "covid_platform.engine.merge", "_first_load", "  of which a first load's rows, indexes"),
    (CLEAN, "covid_platform.engine.merge", "_merge_changes", "  of which the changes' rows"),
    (CLEAN, "covid_platform.engine.history", "record", "  of which history and revisions"),
]


def time_functions(times: dict) -> None:
    """Wrap each function of SPLIT where its callers look it up, adding its time to `times[label]`."""
    import importlib

    for _, module_name, name, label in SPLIT:
        module = importlib.import_module(module_name)
        function = getattr(module, name)

        def timed(*args, _function=function, _label=label, **kwargs):
            started = time.perf_counter()
            try:
                return _function(*args, **kwargs)
            finally:
                times[_label] = times.get(_label, 0.0) + time.perf_counter() - started

        setattr(module, name, timed)


def ingest(url: str, landing_dir: str, key: str, out) -> None:
    """In a child process, so its peak RSS is the platform's alone."""
    import dagster as dg
    from dagster_aws.s3 import S3Resource

    times: dict[str, float] = {}
    time_functions(times)
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
        steps = {stats.step_key: stats.end_time - stats.start_time
                 for stats in instance.get_run_step_stats(result.run_id) if stats.end_time}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.send((result.success, elapsed, peak_mb, steps, times))


def ingest_in_child(url: str, work: Path, key: str) -> tuple[bool, float, float, dict, dict]:
    receive, send = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("spawn").Process(target=ingest, args=(url, str(work), key, send))
    child.start()
    child.join()
    if not receive.poll():
        raise SystemExit(f"the ingesting process died (exit code {child.exitcode}); see its error above")
    return receive.recv()


def print_split(steps: dict, times: dict, floor: float) -> None:
    """Each step's time, the engine's parts timed within it, and the rest (ledger, checks' results, warnings,
    Dagster's own work)."""
    for step, seconds in steps.items():
        print(f"    step {step + ':':44} {seconds:7.2f} s  ({seconds / floor:.2f}x)")
        parts = [(label, times[label]) for part_step, _, _, label in SPLIT
                 if part_step == step and label in times]
        timed = sum(part for label, part in parts if not label.startswith(" "))  # "  of which": inside another
        for label, part in [*parts, ("other", seconds - timed)]:
            print(f"      {label + ':':46} {part:7.2f} s  ({part / floor:.2f}x)")


def count_rows(url: str) -> int:
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM covid.county_daily")
        rows = cur.fetchone()[0]
    conn.close()
    return rows


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def backends(url: str) -> list[psutil.Process]:
    """The PostgreSQL backends connected to the database of `url` (on this machine: their titles name it)."""
    database = f" {urlparse(url).path.lstrip('/')} "
    return [p for p in psutil.process_iter(["cmdline"]) if database in " ".join(p.info["cmdline"] or ())]


class PeakRss:
    """Samples the RSS of some processes (`processes()`: those running now) every 0.2 s; keeps each one's
    peak."""

    def __init__(self, processes):
        self.processes, self.peaks, self._stop = processes, {}, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.wait(0.2):
            try:
                processes = self.processes()
            except psutil.Error:  # gone while listed
                continue
            for process in processes:
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
            with PeakRss(lambda: process_tree(dev.pid)) as rss:
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
    parser.add_argument("--as-published", action="store_true",
                        help="keep the source's rows the gates set aside (one conflicting key, one unknown state)")
    add_data_argument(parser)
    args = parser.parse_args()
    source = data_file(args.data, COUNTY_FILE)
    with scratch_database() as url, tempfile.TemporaryDirectory(prefix="covid_bench_") as work:
        work = Path(work)
        key = "us_counties/bench.csv"
        path = work / key
        path.parent.mkdir(parents=True)
        rows = build_file(source, path, args.copies, args.as_published)
        size = path.stat().st_size
        print(f"cores: {os.cpu_count()}  file: {rows:,} rows, {size / 1e6:.0f} MB  server: {server_settings(url)}")
        floor = bare_copy(url, path)
        print(f"bare COPY:                 {floor:7.2f} s  (1.00x)")
        with PeakRss(lambda: backends(url)) as backend_rss:
            ok, elapsed, peak_mb, steps, times = ingest_in_child(url, work, key)
        print(f"ingestion raw → clean:     {elapsed:7.2f} s  ({elapsed / floor:.2f}x)  "
              f"peak RSS {peak_mb:.0f} MB  rows in county_daily: {count_rows(url):,}  success: {ok}")
        print(f"    peak RSS of PostgreSQL's backends: {max(backend_rss.peaks.values(), default=0):.0f} MB "
              "(shared buffers they touched included)")
        print_split(steps, times, floor)

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
        ok, elapsed, peak_mb, _, _ = ingest_in_child(url, work, day_key)
        print(f"one-day file ({day_rows:,} rows) onto the table: {elapsed:5.2f} s  peak RSS {peak_mb:.0f} MB"
              f"  rows in county_daily: {count_rows(url):,}  success: {ok}")
        if args.dev:
            through_dagster_dev(path, key, floor, work / day_key, day_key)


if __name__ == "__main__":
    sys.exit(main())
