"""Vintages: one state's full series as of a past time (goal < 50 ms), on the real NYT states file loaded and
re-dropped with 1% of its cumulative values revised; and the storage the history adds when the full-history
county file (1.88M rows) is re-dropped with 1% of its values revised, against the table's size.

    .venv/bin/python benchmarks/vintages.py [--data DIR] [--runs 50] [--skip-states] [--skip-counties]

Files go through the platform in-process (raw → clean → summaries) from a landing folder; a file's issue time
is its modification time there.
"""

import argparse
import csv
import gzip
import io
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import COUNTY_FILE, NYT_STATES, add_data_argument, connect, data_file, scratch_database

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STATE = "New York"
NEWLINE = b"\n"


def revised(data: bytes, share: float, seed: int = 12) -> tuple[bytes, int]:
    """The CSV with `share` of its non-empty cases/deaths cells raised by 1 to 500; and how many."""
    rows = list(csv.reader(io.StringIO(data.decode())))
    header = [name.lower() for name in rows[0]]
    columns = [header.index("cases"), header.index("deaths")]
    cells = [(r, c) for r in range(1, len(rows)) for c in columns if rows[r][c]]
    rng = random.Random(seed)
    chosen = rng.sample(cells, round(share * len(cells)))
    for r, c in chosen:
        rows[r][c] = str(int(rows[r][c]) + rng.randint(1, 500))
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode(), len(chosen)


def load(url: str, landing_dir: Path, key: str, data: bytes) -> float:
    """Drop the file and run its raw partition and everything downstream; seconds taken."""
    import dagster as dg
    from dagster_aws.s3 import S3Resource

    from covid_platform.assets.raw import ETAG_TAG, KEY_TAG
    from covid_platform.datasets import DATASETS
    from covid_platform.definitions import defs
    from covid_platform.engine.ledger import partition_key
    from covid_platform.resources.http_source import HttpSources
    from covid_platform.resources.landing import LandingZone
    from covid_platform.resources.notifier import Notifier
    from covid_platform.resources.warehouse import Warehouse

    landing = LandingZone(url=landing_dir.as_uri(), s3=S3Resource())
    landing.put(key, io.BytesIO(data))
    dataset = DATASETS[key.split("/", 1)[0]]
    etag = landing.describe(key).etag
    partition = partition_key(key, etag)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(f"{dataset.name}_files", [partition])
        started = time.perf_counter()
        result = dg.materialize(
            list(defs.assets), selection=dg.AssetSelection.assets(f"raw_{dataset.name}").downstream(),
            partition_key=partition, instance=instance, tags={KEY_TAG: key, ETAG_TAG: etag}, raise_on_error=False,
            resources={"landing": landing, "warehouse": Warehouse(database_url=url), "notifier": Notifier(),
                       "http": HttpSources()},
        )
    if not result.success:
        sys.exit(f"loading {key} failed")
    return time.perf_counter() - started


def timed(query, statement: str, params, runs: int) -> tuple[float, float, int]:
    """p50 and p95 in ms of `runs` runs (after one warm-up), and the rows returned."""
    rows = len(query(statement, params))
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        query(statement, params)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], rows


def size(query, relation: str) -> int:
    """Bytes of the relation with its indexes and TOAST, summed over its partitions (county_daily's years)."""
    return query("SELECT coalesce((SELECT sum(pg_total_relation_size(relid))::bigint FROM pg_partition_tree(%s)), "
                 "pg_total_relation_size(%s))", (relation, relation))[0][0]


def states(url: str, landing_dir: Path, folder: Path, runs: int) -> None:
    conn, query = connect(url)
    first = data_file(folder, NYT_STATES).read_bytes()
    second, changed = revised(first, 0.01)
    print(f"NYT states: {first.count(NEWLINE) - 1:,} rows; {changed:,} values revised in the second drop")
    print(f"  load 1: {load(url, landing_dir, 'us_states/us-states-v1.csv', first):.1f} s")
    time.sleep(1.5)  # distinct modification times
    print(f"  load 2: {load(url, landing_dir, 'us_states/us-states-v2.csv', second):.1f} s")
    issued = [row[0] for row in query("SELECT issued_at FROM covid.ingested_files ORDER BY file_id")]
    between = issued[0] + (issued[1] - issued[0]) / 2
    statement = "SELECT * FROM covid.state_daily_as_of(%s) WHERE state = %s ORDER BY date"
    for label, when in (("as of between the drops", between), ("as of after both", issued[1])):
        p50, p95, rows = timed(query, statement, (when, STATE), runs)
        print(f"  {STATE}'s full series {label}: {rows} rows, p50 {p50:.1f} ms, p95 {p95:.1f} ms (goal < 50 ms)")
    p50, p95, rows = timed(query, "SELECT * FROM covid.state_daily WHERE state = %s ORDER BY date", (STATE,), runs)
    print(f"  the same from covid.state_daily (latest): p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    p50, p95, rows = timed(query, "SELECT * FROM covid.national_daily_as_of(%s)", (between,), max(5, runs // 5))
    print(f"  national_daily_as_of (all states, {rows} dates): p50 {p50:.0f} ms, p95 {p95:.0f} ms")
    history = query("SELECT count(*) FROM covid.state_daily_history")[0][0]
    print(f"  history rows {history:,} (table {query('SELECT count(*) FROM covid.state_daily')[0][0]:,})")
    conn.close()


def counties(url: str, landing_dir: Path, folder: Path) -> None:
    conn, query = connect(url)
    first = gzip.decompress(data_file(folder, COUNTY_FILE).read_bytes())
    second, changed = revised(first, 0.01)
    print(f"Counties: {first.count(NEWLINE) - 1:,} rows; {changed:,} values revised in the second drop")
    print(f"  load 1: {load(url, landing_dir, 'us_counties/full-v1.csv', first):.0f} s")
    table, history = size(query, "covid.county_daily"), size(query, "covid.county_daily_history")
    time.sleep(1.5)
    print(f"  load 2 (re-drop, 1% revised): {load(url, landing_dir, 'us_counties/full-v2.csv', second):.0f} s")
    added = size(query, "covid.county_daily_history") - history
    rows = query("SELECT count(*) FROM covid.county_daily_history")[0][0]
    print(f"  county_daily {table / 2**20:,.0f} MB; its history after load 1 {history / 2**20:,.0f} MB, "
          f"after the re-drop {rows:,} rows, +{added / 2**20:,.1f} MB ({added / table:.1%} of the table)")
    revisions = query("SELECT keys_added, keys_revised, keys_unchanged FROM covid.revisions ORDER BY file_id DESC LIMIT 1")
    print(f"  revisions of the re-drop: added, revised, unchanged = {revisions[0]}")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--skip-counties", action="store_true")
    parser.add_argument("--skip-states", action="store_true")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    with scratch_database() as url, tempfile.TemporaryDirectory() as work:
        if not args.skip_states:
            states(url, Path(work) / "landing", args.data, args.runs)
        if not args.skip_counties:
            counties(url, Path(work) / "landing", args.data)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
