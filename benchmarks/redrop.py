"""The daily full-history re-drop: NYT, JHU and COVID Tracking publish their whole history every day, each
day's file repeating every earlier row with the day's new rows and a scattering of revisions to old dates.

    .venv/bin/python benchmarks/redrop.py [--data DIR] [--days-limit N] [--keep]

Builds two files from the JHU county file (counties/… of the --data folder, default ../shared/data), in a
temporary folder, seeded and deterministic:
  day 1: the file (1.88M rows), minus its one conflicting duplicate key;
  day 2: the same rows, plus one new date (the last date + 1) for every (state, county), its values the
         region's last ones plus a small increment (an empty count stays empty), plus 1% of the earlier
         non-empty cases/deaths cells raised by 1 to 500, spread over all dates and counties.
With --days-limit N, only the first N dates of the file (a quick run).

Then in one run, on a scratch database, both dropped under the same landing key (us_counties/us-counties.csv,
overwritten as a user would) and run through the platform in-process (raw → county_daily → downstream), each
in a child process so its peak RSS is the platform's alone:
  1. day 1 loaded (the first load);
  2. day 2 dropped onto it (after a VACUUM ANALYZE of county_daily and its history: by the next day
     autovacuum is done with the first load): the materialize call, each step's time from the run's event
     log, and the split from the ledger registering the file (covid.ingested_files.received_at) to the end of
     county_daily's step and of the run's last step; county_daily's materialization metadata, and the rows
     whose values changed (derived columns included) against a copy of the table taken after day 1;
  3. a bare COPY of the day-2 file into a plain typed table (the floor): the goal is ingestion ≤ 2× it, and
     rows written to county_daily = the keys that changed (new or revised);
  4. exactness: day 2 loaded alone into a second scratch database; county_daily of both compared on every
     column but file_id (exit status 1 when they differ); the history's rows added by day 2 against the new
     and revised keys.
PostgreSQL: BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres); --keep keeps the
scratch databases.
"""

import argparse
import csv
import datetime
import gzip
import multiprocessing
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

import psycopg2.errors

from common import COUNTY_FILE, add_data_argument, bare_copy, connect, data_file, scratch_database, server_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATASET = "us_counties"
KEY = f"{DATASET}/us-counties.csv"  # both days, the second overwriting the first
TABLE = "covid.county_daily"
HISTORY = "covid.county_daily_history"
REGION_KEY = ("state", "county", "date")  # county_daily's key
CONFLICT = b"2020-03-22,District of Columbia,District of Columbia,11001,102,2\r\n"  # as in ingest_vs_copy.py
NEWLINE = b"\r\n"  # the source file's, kept: COPY rejects a file that mixes line endings
REVISED_SHARE = 0.01
SEED = 20211029
# county_daily's metadata the issue asks for, in this order; any other numeric entry is printed after them
METADATA = ("rows_written", "rows_in_files", "keys_added", "keys_revised", "keys_unchanged", "keys_changed")


# --- the two files ----------------------------------------------------------------------------------------

Key = tuple[str, str, str]  # state, county, date: county_daily's key


@dataclass
class Files:
    day1: Path
    day2: Path
    rows1: int
    rows2: int
    bytes1: int
    bytes2: int
    revised_cells: int
    new_keys: set[Key]
    revised_keys: set[Key]
    """Keys of day 2 with at least one cell revised."""
    earliest: dict[tuple[str, str], str]
    """Each region's earliest new or revised date in day 2."""
    from_earliest: dict[tuple[str, str], int]
    """Each region's rows in day 2 on or after that date: what a merge that rewrites every region from its
    earliest change on writes (the issue's 'not every row after a region's earliest revision')."""


def fields(line: bytes) -> list[bytes]:
    """date, county, state, fips, cases, deaths (the file quotes nothing: checked on reading)."""
    return line.rstrip(NEWLINE).split(b",")


def key_of(row: list[bytes]) -> Key:
    return row[2].decode(), row[1].decode(), row[0].decode()


def build_files(source: Path, work: Path, days_limit: int | None) -> Files:
    # The lines stay bytes, split where needed: a list of 1.9M split rows would take several times the memory.
    with gzip.open(source) as f:
        header = f.readline()
        lines = [line for line in f if line != CONFLICT]
    if any(b'"' in line for line in lines):
        sys.exit(f"{source} has quoted fields: this benchmark splits its lines on commas")
    if days_limit:
        kept = set(sorted({line[:10] for line in lines})[:days_limit])
        lines = [line for line in lines if line[:10] in kept]
    day1 = work / "day1.csv"
    with open(day1, "wb") as out:
        out.write(header)
        out.writelines(lines)

    # Each region's latest row (before any revision): the new date's values grow from it.
    latest: dict[tuple[bytes, bytes], list[bytes]] = {}
    for line in lines:
        row = fields(line)
        region = (row[2], row[1])
        if region not in latest or row[0] > latest[region][0]:
            latest[region] = row
    last_date = max(row[0] for row in latest.values())
    next_day = datetime.date.fromisoformat(last_date.decode()) + datetime.timedelta(days=1)
    new_date = next_day.isoformat().encode()

    # 1% of the earlier non-empty cases/deaths cells (cell 2 × line + 0 for cases, 1 for deaths), sampled over
    # the whole file, so over all dates and counties.
    rng = random.Random(SEED)
    cells = array("q", (2 * i + c for i, line in enumerate(lines)
                        for c, value in enumerate(fields(line)[4:]) if value))
    chosen = rng.sample(range(len(cells)), round(REVISED_SHARE * len(cells)))
    revised: dict[int, list[bytes]] = {}
    for index in chosen:
        i, c = divmod(cells[index], 2)
        row = revised.setdefault(i, fields(lines[i]))
        row[4 + c] = b"%d" % (int(row[4 + c]) + rng.randint(1, 500))
    del cells
    for i, row in revised.items():
        lines[i] = b",".join(row) + NEWLINE

    new_rows = []
    for (state, county), row in sorted(latest.items()):
        cases, deaths = (b"%d" % (int(value) + rng.randint(0, most)) if value else b""
                         for value, most in zip(row[4:], (30, 2)))
        new_rows.append([new_date, county, state, row[3], cases, deaths])

    day2 = work / "day2.csv"
    with open(day2, "wb") as out:
        out.write(header)
        out.writelines(lines)
        out.writelines(b",".join(row) + NEWLINE for row in new_rows)

    # Where each region's first change is, and how many of its day-2 rows lie on or after it.
    earliest = {(state.decode(), county.decode()): new_date.decode() for state, county in latest}
    for row in revised.values():
        state, county, date = key_of(row)
        earliest[state, county] = min(earliest[state, county], date)
    from_earliest = dict.fromkeys(earliest, 1)  # the new date's row
    for state, county, date in map(key_of, map(fields, lines)):
        if date >= earliest[state, county]:
            from_earliest[state, county] += 1
    return Files(day1, day2, len(lines), len(lines) + len(new_rows), day1.stat().st_size, day2.stat().st_size,
                 len(chosen), {key_of(row) for row in new_rows}, {key_of(row) for row in revised.values()},
                 earliest, from_earliest)


@dataclass
class Expected:
    """What day 2 should change, counted on the rows the gates let through (a row of a region the platform
    does not know, like JHU's 'Wuhan Evacuee', is set aside in covid.rejected_rows)."""

    rejected: int
    rows: int
    new: int
    revised: int
    unchanged: int
    from_earliest: int

    @property
    def changed(self) -> int:
        return self.new + self.revised


def expected(files: Files, rejected: list[Key]) -> Expected:
    new, revised = set(files.new_keys), set(files.revised_keys)
    from_earliest = sum(files.from_earliest.values())
    for state, county, date in rejected:
        new.discard((state, county, date))
        revised.discard((state, county, date))
        if date >= files.earliest[state, county]:  # approximate if it held the region's earliest change
            from_earliest -= 1
    rows = files.rows2 - len(rejected)
    unchanged = rows - len(new) - len(revised)
    return Expected(len(rejected), rows, len(new), len(revised), unchanged, from_earliest)


def rejected_keys(query, file_id: int) -> list[Key]:
    """The keys of the file's rows the gates set aside."""
    rejected = query("SELECT raw_line FROM covid.rejected_rows WHERE file_id = %s", (file_id,))
    return [(row[2], row[1], row[0]) for row in csv.reader(raw for (raw,) in rejected)]


# --- running a file through the platform ------------------------------------------------------------------

def drop(landing_dir: Path, path: Path) -> None:
    """Copy the file under KEY in the landing folder, overwriting what is there, as a user would."""
    target = landing_dir / KEY
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)


def ingest(url: str, landing_dir: str, out) -> None:
    """In a child process (its peak RSS is the platform's alone): the landed file's raw partition and
    everything downstream, as vintages.py runs them; sends back the run's outcome, its steps' times from the
    event log and county_daily's materialization metadata."""
    import dagster as dg
    from dagster_aws.s3 import S3Resource

    from covid_platform.assets.raw import ETAG_TAG, KEY_TAG
    from covid_platform.definitions import defs
    from covid_platform.engine.ledger import partition_key
    from covid_platform.resources.http_source import HttpSources
    from covid_platform.resources.landing import LandingZone
    from covid_platform.resources.notifier import Notifier
    from covid_platform.resources.warehouse import Warehouse

    landing = LandingZone(url=Path(landing_dir).as_uri(), s3=S3Resource())
    etag = landing.describe(KEY).etag
    partition = partition_key(KEY, etag)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(f"{DATASET}_files", [partition])
        started = time.perf_counter()
        result = dg.materialize(
            list(defs.assets), selection=dg.AssetSelection.assets(f"raw_{DATASET}").downstream(),
            partition_key=partition, instance=instance, tags={KEY_TAG: KEY, ETAG_TAG: etag},
            raise_on_error=False,
            # warnings and errors only: the table at the end stays readable
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            resources={"landing": landing, "warehouse": Warehouse(database_url=url), "notifier": Notifier(),
                       "http": HttpSources()},
        )
        elapsed = time.perf_counter() - started
        steps = [(s.step_key, s.start_time, s.end_time, s.status.value if s.status else "-")
                 for s in instance.get_run_step_stats(result.run_id)]
    metadata = {}
    for materialization in result.asset_materializations_for_node(TABLE.split(".")[1]):
        metadata = {name: value.value for name, value in materialization.metadata.items()
                    if isinstance(value.value, (int, float))}
    failures = [event.message for event in result.all_events
                if event.event_type_value in ("STEP_FAILURE", "RUN_FAILURE")]
    out.send(dict(success=result.success, seconds=elapsed, steps=steps, metadata=metadata, failures=failures,
                  peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def ingest_in_child(url: str, landing_dir: Path, what: str) -> dict:
    receive, send = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("spawn").Process(target=ingest, args=(url, str(landing_dir), send))
    child.start()
    child.join()
    if not receive.poll():
        sys.exit(f"the process ingesting {what} died (exit code {child.exitcode}); see its error above")
    outcome = receive.recv()
    if not outcome["success"]:
        sys.exit(f"ingesting {what} failed:\n" + "\n".join(outcome["failures"]))
    print(f"  {what}: {outcome['seconds']:.1f} s, peak RSS {outcome['peak_rss_mb']:.0f} MB", flush=True)
    return outcome


def count(query, relation: str) -> int:
    return query(f"SELECT count(*) FROM {relation}")[0][0]


def latest_file(query) -> tuple[int, float]:
    """The latest file's id and when the ledger registered it (epoch seconds, the event log's clock)."""
    return query("SELECT file_id, extract(epoch FROM received_at)::float8 FROM covid.ingested_files "
                 "WHERE dataset = %s ORDER BY file_id DESC LIMIT 1", (DATASET,))[0]


# --- comparing tables -------------------------------------------------------------------------------------

def compared_columns(query) -> list[str]:
    """county_daily's columns but file_id (which file wrote a row differs between databases)."""
    return [name for (name,) in query(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'covid' "
        "AND table_name = 'county_daily' AND column_name <> 'file_id' ORDER BY ordinal_position")]


def dump(url: str, columns: list[str], path: Path) -> None:
    """county_daily's rows, those columns, to a file (COPY's text format: floats round-trip exactly)."""
    conn, _ = connect(url)
    with conn.cursor() as cur, open(path, "wb") as f:
        cur.copy_expert(f"COPY (SELECT {', '.join(columns)} FROM {TABLE}) TO STDOUT", f, size=1 << 20)
    conn.close()


def differences(url: str, columns: list[str], path: Path, table: str, keep: bool) -> tuple[int, list[tuple]]:
    """county_daily against the dump at `path` (loaded beside it as `table`, full-joined on the key): the
    number of rows that differ in any of the columns or exist on one side only, and a few of them."""
    listed = ", ".join(columns)
    conn, query = connect(url)
    with conn.cursor() as cur, open(path, "rb") as f:
        cur.execute(f"DROP TABLE IF EXISTS {table}; "
                    f"CREATE TABLE {table} AS SELECT {listed} FROM {TABLE} WITH NO DATA")
        cur.copy_expert(f"COPY {table} ({listed}) FROM STDIN", f, size=1 << 20)
    on = " AND ".join(f"t.{c} = d.{c}" for c in REGION_KEY)
    table_row, dump_row = (f"ROW({', '.join(f'{alias}.{c}' for c in columns)})" for alias in ("t", "d"))
    differing = (f"FROM {TABLE} AS t FULL JOIN {table} AS d ON {on} "
                 f"WHERE {table_row} IS DISTINCT FROM {dump_row}")
    differ = query(f"SELECT count(*) {differing}")[0][0]
    examples = query(f"SELECT {table_row}::text, {dump_row}::text {differing} "
                     f"ORDER BY coalesce(t.date, d.date), coalesce(t.state, d.state) LIMIT 5"
                     ) if differ else []
    if not keep:
        conn.cursor().execute(f"DROP TABLE {table}")
    conn.close()
    return differ, examples


# --- the run ----------------------------------------------------------------------------------------------

@dataclass
class Run:
    files: Files
    expected: Expected
    first: dict
    second: dict
    fresh: dict
    floor: float
    registered: float
    history: tuple[int, int]
    """covid.county_daily_history's rows after day 1, after day 2."""
    rows_differing: int
    """county_daily's rows whose values (derived columns included) differ after day 2 from after day 1."""
    differ: int
    examples: list[tuple]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0, 0, 0)
    server: str = ""
    """The PostgreSQL settings that bound a large load (common.server_settings)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--days-limit", type=int, metavar="N", help="only the first N dates of the file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    args = parser.parse_args()
    source = data_file(args.data, COUNTY_FILE)
    load_before = os.getloadavg()
    print(f"{os.cpu_count()} cores, load average {' '.join(f'{v:.2f}' for v in load_before)}", flush=True)

    with (tempfile.TemporaryDirectory(prefix="covid_bench_") as work, scratch_database(args.keep) as url,
          scratch_database(args.keep) as fresh_url):
        work = Path(work)
        started = time.perf_counter()
        files = build_files(source, work, args.days_limit)
        print(f"files built in {time.perf_counter() - started:.0f} s in {work}: day 1 {files.rows1:,} rows, "
              f"day 2 {files.rows2:,} rows ({len(files.new_keys):,} new keys, {files.revised_cells:,} cells "
              f"revised in {len(files.revised_keys):,} keys)", flush=True)
        landing_dir = work / "landing"
        conn, query = connect(url)
        server = server_settings(url)

        drop(landing_dir, files.day1)
        first = ingest_in_child(url, landing_dir, "day 1, first load")
        history1 = count(query, HISTORY)
        columns = compared_columns(query)
        dump(url, columns, work / "day1.copy")  # county_daily after day 1, compared after the timings
        # A day passes before the next drop: autovacuum has long done with the first load's rows, and the
        # checkpoints with its WAL (none is under way during the re-drop, whose first change to each page
        # since the last one writes the whole page to the WAL, as on any day).
        conn.cursor().execute(f"VACUUM (ANALYZE) {TABLE}, {HISTORY}")
        try:
            conn.cursor().execute("CHECKPOINT")
        except psycopg2.errors.InsufficientPrivilege:  # superuser or pg_checkpoint only
            print("  no CHECKPOINT before the re-drop (the role may not): one may be under way", flush=True)

        floor = bare_copy(url, files.day2)
        print(f"  bare COPY of day 2: {floor:.1f} s", flush=True)

        time.sleep(1.5)  # a modification time (the file's issue time) distinct from day 1's
        drop(landing_dir, files.day2)
        second = ingest_in_child(url, landing_dir, "day 2, re-drop")
        file_id, registered = latest_file(query)
        history2 = count(query, HISTORY)
        rows_differing, _ = differences(url, columns, work / "day1.copy", "bench_day1", args.keep)
        expect = expected(files, rejected_keys(query, file_id))
        conn.close()

        # Exactness: day 2 alone into a fresh database, from its own landing folder (and archive).
        drop(work / "landing_fresh", files.day2)
        fresh = ingest_in_child(fresh_url, work / "landing_fresh", "day 2 alone, fresh database")
        dump(fresh_url, columns, work / "fresh.copy")
        differ, examples = differences(url, columns, work / "fresh.copy", "bench_fresh", args.keep)

    run = Run(files, expect, first, second, fresh, floor, registered, (history1, history2), rows_differing,
              differ, examples, load_before, os.getloadavg(), server)
    report(run)
    return 1 if differ else 0


def report(run: Run) -> None:
    files, expect, metadata = run.files, run.expected, run.second["metadata"]
    steps = {key: (start, end, status) for key, start, end, status in run.second["steps"]}
    clean_end = steps[TABLE.split(".")[1]][1]
    ingestion = max(end for _, end, _ in steps.values()) - run.registered

    def line(label: str, value: str) -> None:
        print(f"  {label:<70} {value}")

    def seconds(value: float, rss: float | None = None) -> str:
        return f"{value:8.1f} s" + (f"   peak RSS {rss:.0f} MB" if rss is not None else "")

    def verdict(ok: bool, good: str = "met", bad: str = "MISSED") -> str:
        return good if ok else bad

    print("\nThe daily full-history re-drop")
    line("cores", f"{os.cpu_count()}")
    line("PostgreSQL", run.server)
    line("load average (1, 5, 15 min) before", " ".join(f"{v:.2f}" for v in run.load_before))
    line("load average (1, 5, 15 min) after", " ".join(f"{v:.2f}" for v in run.load_after))
    line("day-1 file", f"{files.rows1:,} rows, {files.bytes1 / 1e6:.0f} MB")
    line("day-2 file", f"{files.rows2:,} rows, {files.bytes2 / 1e6:.0f} MB")
    line("  new keys (one new date per county)", f"{len(files.new_keys):,}")
    line("  revised keys (cells revised)", f"{len(files.revised_keys):,} ({files.revised_cells:,})")
    line("  rows set aside by the gates (covid.rejected_rows)", f"{expect.rejected:,}")
    line("  past the gates: new + revised keys = keys changed",
         f"{expect.new:,} + {expect.revised:,} = {expect.changed:,}")
    line("  rows from each region's earliest change on (reference)", f"{expect.from_earliest:,}")
    print()
    line("first load (day 1): materialize call", seconds(run.first["seconds"], run.first["peak_rss_mb"]))
    line("re-drop (day 2): materialize call", seconds(run.second["seconds"], run.second["peak_rss_mb"]))
    for key, (start, end, status) in sorted(steps.items(), key=lambda item: item[1][0] or 0):
        line(f"  step {key} ({status.lower()})", seconds(end - start))
    line("  registered in the ledger → end of the county_daily step", seconds(clean_end - run.registered))
    line("  registered in the ledger → end of the run's last step", seconds(ingestion))
    line("bare COPY of the day-2 file", seconds(run.floor))
    ratio = ingestion / run.floor
    line("re-drop ingestion / bare COPY (goal ≤ 2×)", f"{ratio:8.2f}×   {verdict(ratio <= 2)}")
    print()
    print("  county_daily's materialization metadata, day 2 (expected from the files)")
    wanted = {"rows_in_files": expect.rows, "keys_added": expect.new, "keys_revised": expect.revised,
              "keys_unchanged": expect.unchanged, "keys_changed": expect.changed}
    for name in (*METADATA, *sorted(set(metadata) - set(METADATA))):
        value, want = metadata.get(name), wanted.get(name)
        shown = "-" if value is None else f"{value:,}"
        if want is not None:
            shown = f"{shown:>12}   expected {want:,}" + ("" if value in (None, want) else "  DIFFERENT")
        line(f"  {name}", f"{shown:>12}")
    written = metadata.get("rows_written")
    line("rows written = keys changed (goal)", "-" if written is None else
         f"{written:,} vs {expect.changed:,}   {verdict(written == expect.changed)}")
    line("  rows whose values changed, derived columns included (reference)", f"{run.rows_differing:,}")
    added = run.history[1] - run.history[0]
    line("history rows added by day 2 = keys changed",
         f"{added:,} vs {expect.changed:,}   {verdict(added == expect.changed, 'ok', 'DIFFERENT')}")
    print()
    line("day 2 alone, fresh database: materialize call",
         seconds(run.fresh["seconds"], run.fresh["peak_rss_mb"]))
    line("county_daily re-dropped vs fresh (all columns but file_id)",
         "identical" if not run.differ else f"{run.differ:,} rows DIFFER")
    for redropped, fresh in run.examples:
        print(f"    re-dropped {redropped}\n    fresh      {fresh}")


if __name__ == "__main__":
    sys.exit(main())
