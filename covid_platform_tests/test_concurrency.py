"""Many files at once, and restarts: the tables end as a sequential load leaves them, every key loaded once.

"Sequential" has one meaning here: the files applied one after another in ledger order (`file_id`, the order
their runs registered them), a later file's values replacing an earlier one's for the same (region, date).
Concurrent runs register their files in whatever order they happen to start, so the expected tables are
computed (with pandas, independently of the platform's SQL) from the files in the ledger order the
concurrent load produced: any other order would make the comparison depend on a race.
"""

import multiprocessing
import random
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import date, timedelta
from importlib import resources

import dagster as dg
import pandas as pd
from dagster_aws.s3 import S3Resource
from psycopg2 import sql

from covid_platform.assets.raw import ETAG_TAG, KEY_TAG
from covid_platform.cli import SAMPLE as SAMPLE_DROP
from covid_platform.datasets import DATASETS
from covid_platform.engine import history, ledger
from covid_platform.engine.tables import add_year_partitions, summary_sql, table_ddl
from covid_platform.engine.ledger import partition_key
from covid_platform.resources import warehouse as warehouse_module
from covid_platform.resources.http_source import HttpSources
from covid_platform.resources.landing import LandingZone
from covid_platform.resources.notifier import Notifier
from covid_platform.resources.warehouse import Warehouse
from covid_platform.sensors.landing import MAX_KEYS_PER_TICK
from covid_platform_tests.helpers import (
    county_rows,
    dev_env,
    drop,
    ingest,
    loaded_files,
    nyt_states_slice,
    start_dev,
    stop_dev,
    tick_until_quiet,
    wait_for,
)
from covid_platform_tests.oracles import (
    assert_tables_match,
    county_table,
    expected_counties,
    read_counties,
    read_nyt,
)

SAMPLE = resources.files("covid_platform.sample_data").joinpath("us_states.csv").read_bytes()
SAMPLE_KEY = "/".join(SAMPLE_DROP)  # dropped by `covid-platform dev` at each start
STATE_KEY = ["state", "date"]
COUNTY_KEY = ["state", "county", "date"]
COUNTY_STATES = {"Rhode Island", "Delaware", "Vermont", "Connecticut"}


def _day(start: str, offset: int) -> str:
    return (date.fromisoformat(start) + timedelta(days=offset)).isoformat()


def _revised(frame: pd.DataFrame, extra: int) -> bytes:
    """The rows with `extra` more cases each: every file's values differ, so which file wins is visible."""
    frame = frame.assign(cases=frame["cases"] + extra, date=frame["date"].dt.strftime("%Y-%m-%d"))
    return frame.to_csv(index=False).encode()


def overlapping_files(per_dataset: int) -> dict[str, bytes]:
    """Real slices, each (region, date) in several files with different values: states, 10 days per file,
    a new file every 2 days (each date in 5 files); counties of 4 states, 5 days per file, one a day."""
    states = read_nyt(nyt_states_slice("2020-10-01", _day("2020-10-01", 2 * per_dataset + 9)))
    counties = read_counties(county_rows("2020-04-01", _day("2020-04-01", per_dataset + 4), COUNTY_STATES))
    files = {}
    for i in range(per_dataset):
        first, last = _day("2020-10-01", 2 * i), _day("2020-10-01", 2 * i + 9)
        files[f"us_states/batch-{i:03d}.csv"] = _revised(states[states["date"].between(first, last)], i + 1)
        first, last = _day("2020-04-01", i), _day("2020-04-01", i + 4)
        files[f"us_counties/batch-{i:03d}.csv"] = _revised(counties[counties["date"].between(first, last)], i + 1)
    return files


def in_ledger_order(query, files: dict[str, bytes], dataset: str, read, key: list[str]) -> pd.DataFrame:
    """A sequential load's result: the dataset's files in ledger order, a later file winning per key."""
    keys = [k for (k,) in query("SELECT key FROM covid.ingested_files WHERE dataset = %s ORDER BY file_id",
                                (dataset,))]
    frames = [read(files[k]).assign(order=n) for n, k in enumerate(keys)]
    rows = pd.concat(frames, ignore_index=True).sort_values("order", kind="stable")
    return rows.drop_duplicates(key, keep="last").drop(columns="order").reset_index(drop=True)


def test_a_file_registered_first_but_merged_last_does_not_overwrite_a_later_file(landing, resources, warehouse, query):
    """The race of two overlapping runs, made deterministic: run A registers its file first, run B
    registers, stages and merges its file, then A merges. B is the later file in the ledger: its values stay."""
    first = nyt_states_slice("2020-12-01", "2020-12-20", {"Ohio", "Utah"})
    later = _revised(read_nyt(nyt_states_slice("2020-12-10", "2020-12-31", {"Ohio", "Utah"})), 1000)
    key_a, key_b = drop(landing, "us_states/a.csv", first), drop(landing, "us_states/b.csv", later)
    with dg.instance_for_test() as instance, warehouse.connect() as conn:
        etag_a = landing.describe(key_a).etag
        ledger.register(conn, key_a, etag_a, partition_key(key_a, etag_a), "us_states", "run-a")  # A starts
        assert ingest(landing, resources, key_b, instance).success  # B runs from start to end
        assert ingest(landing, resources, key_a, instance, etag=etag_a).success  # A finishes

    assert query("SELECT key, status FROM covid.ingested_files ORDER BY file_id") == [
        (key_a, "loaded"), (key_b, "loaded")
    ]
    early = read_nyt(first)
    assert_tables_match(query, pd.concat([early[early["date"] < "2020-12-10"], read_nyt(later)], ignore_index=True))


def test_a_new_worker_starts_while_a_run_holds_the_ledger(warehouse, database_url, query):
    """A run worker starting while another run is in a ledger transaction finds the schema in place and runs
    no DDL: the migration's CREATE INDEX and ALTER TABLE on the ledger used to wait for that run while it
    waited for them (a deadlock, in CI). After an upgrade (another digest) the migration runs again."""
    with warehouse.connect() as conn, conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM covid.ingested_files")  # the run's transaction holds the ledger
        started = threading.Thread(target=_start_worker, args=(database_url,), daemon=True)
        started.start()
        started.join(timeout=20)
        assert not started.is_alive(), "the new worker waited for the run's transaction"

    with warehouse.connect() as conn, conn, conn.cursor() as cur:
        cur.execute("UPDATE covid.migrated SET digest = 'an older version';"
                    " DROP FUNCTION covid.ensure_column(text, text, text)")
    _start_worker(database_url)
    assert query("SELECT to_regprocedure('covid.ensure_column(text, text, text)') IS NOT NULL") == [(True,)]
    assert query("SELECT count(*) FROM covid.migrated WHERE digest <> 'an older version'") == [(1,)]


def _start_worker(database_url: str) -> None:
    warehouse_module._migrated.discard(database_url)  # as a new process would
    with Warehouse(database_url=database_url).connect():
        pass


def test_readers_do_not_wait_for_a_merge_or_a_summary(landing, resources, warehouse, query):
    """A merge makes sure of its table (columns nullable, added, indexed; a partition for a new year; its
    functions) and a summary rebuild of its own, in their transactions: none of it may lock readers out until
    they commit, nor drop a function a reader may have looked up (it fails "cache lookup failed")."""
    with dg.instance_for_test() as instance:
        data = nyt_states_slice("2020-12-01", "2020-12-10", {"Ohio"})
        assert ingest(landing, resources, drop(landing, "us_states/a.csv", data), instance).success
        counties = county_rows("2020-04-01", "2020-04-05", {"Delaware"})
        assert ingest(landing, resources, drop(landing, "us_counties/a.csv", counties), instance).success
    states, counties = DATASETS["us_states"], DATASETS["us_counties"]
    functions = "SELECT to_regprocedure('covid.state_daily_as_of(timestamptz)')::oid, " \
                "to_regprocedure('covid.national_daily_as_of(timestamptz)')::oid"
    before = query(functions)
    with warehouse.connect() as conn, conn, conn.cursor() as cur:
        cur.execute(table_ddl(states))
        history.functions_ddl(cur, states)
        for name in states.summaries:
            cur.execute(summary_sql(name))
        add_year_partitions(cur, counties, range(2020, 2022))
        with warehouse.connect_read() as reader, reader, reader.cursor() as read:
            read.execute("SET lock_timeout = '2s'")
            for table in (states.table, *states.summaries, counties.table):
                read.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("covid", table)))
                assert read.fetchone()[0] > 0, table
    assert query(functions) == before
    assert query("SELECT count(*) FROM pg_inherits WHERE inhparent = 'covid.county_daily'::regclass") == [(2,)]


def test_a_function_whose_result_changed_is_made_again(warehouse, query):
    """An older version's `<table>_as_of` with other columns: CREATE OR REPLACE cannot change its result."""
    states = DATASETS["us_states"]
    with warehouse.connect() as conn, conn, conn.cursor() as cur:
        cur.execute(table_ddl(states))
        history.ddl(cur, states)
        cur.execute("DROP FUNCTION covid.state_daily_as_of(timestamptz);"
                    " CREATE FUNCTION covid.state_daily_as_of(timestamptz) RETURNS TABLE (state text)"
                    " LANGUAGE sql AS 'SELECT NULL::text'")
        history.functions_ddl(cur, states)
    result = query("SELECT pg_get_function_result('covid.state_daily_as_of(timestamptz)'::regprocedure)")[0][0]
    assert result.startswith("TABLE(state text, fips text, date date, cases bigint"), result


def _ingest_in_worker(landing_url: str, s3_endpoint: str, database_url: str, key: str, etag: str) -> str:
    """One run as a run worker process executes it (its own process, instance and connections): what failed."""
    resources = {
        "landing": LandingZone(url=landing_url, s3=S3Resource(endpoint_url=s3_endpoint, region_name="us-east-1")),
        "warehouse": Warehouse(database_url=database_url),
        "notifier": Notifier(),
        "http": HttpSources(),
    }
    run = ingest(resources["landing"], resources, key, dg.DagsterInstance.ephemeral(), etag=etag)
    return "\n".join(
        e.event_specific_data.error.to_string() for e in run.all_events
        if e.event_type_value in ("STEP_FAILURE", "STEP_UP_FOR_RETRY") and e.event_specific_data.error
    )


def test_a_hundred_files_at_once_give_the_tables_of_a_sequential_load(
    landing, s3_endpoint, database_url, query
):
    """100 files (us_states and us_counties, overlapping dates, later files revising values) dropped at
    once; one sensor tick requests them all; 4 worker processes (dagster.yaml runs 4 at a time) run the
    requests in a shuffled order, each as the sensor's run would (raw → clean → summaries)."""
    files = overlapping_files(50)
    assert len(files) == 100 <= MAX_KEYS_PER_TICK
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda item: drop(landing, *item), files.items()))
    with dg.instance_for_test() as instance:
        requests, _, _ = tick_until_quiet(instance, landing, None)
    assert sorted(r.tags[KEY_TAG] for r in requests) == sorted(files)
    random.Random(100).shuffle(requests)

    with ProcessPoolExecutor(max_workers=4, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = [pool.submit(_ingest_in_worker, landing.url, s3_endpoint, database_url, r.tags[KEY_TAG],
                            r.tags[ETAG_TAG]) for r in requests]
        failures = {r.tags[KEY_TAG]: run.result() for r, run in zip(requests, runs) if run.result()}
    assert failures == {}

    ledger = query("SELECT key, status, rows, count(*) OVER (PARTITION BY key) FROM covid.ingested_files")
    assert sorted(key for key, *_ in ledger) == sorted(files)
    assert {(status, copies) for _, status, _, copies in ledger} == {("loaded", 1)}
    assert {key: rows for key, _, rows, _ in ledger} == {k: data.count(b"\n") - 1 for k, data in files.items()}
    assert query("SELECT count(*) FROM pg_tables WHERE schemaname = 'covid_staging'") == [(0,)]

    assert_tables_match(query, in_ledger_order(query, files, "us_states", read_nyt, STATE_KEY))
    expected = expected_counties(in_ledger_order(query, files, "us_counties", read_counties, COUNTY_KEY))
    pd.testing.assert_frame_equal(county_table(query), expected, check_dtype=False)


# --- restarts -------------------------------------------------------------------------------------------


def unfinished_runs(query) -> int:
    """Runs queued or running, in Dagster's storage (kept by covid-platform dev in DATABASE_URL's database)."""
    return query("SELECT count(*) FROM runs WHERE status NOT IN ('SUCCESS', 'FAILURE', 'CANCELED')")[0][0]


def test_a_restart_in_the_middle_of_a_backlog_loads_every_key_exactly_once(
    database_url, s3_endpoint, s3_client, bucket, query, tmp_path
):
    """`covid-platform dev` (S3 landing, 2 s sensor interval, 4 runs at a time) is stopped while 30 files
    dropped at once are being loaded, and started again on the same Dagster home and database: every file
    ends loaded, once, and the tables are those of loading them one by one."""
    env = dev_env(database_url, s3_endpoint, bucket, tmp_path)
    states = sorted(read_nyt(SAMPLE)["state"].unique())[:30]
    files = {f"us_states/june/{state}.csv": nyt_states_slice("2020-06-01", "2020-06-30", {state})
             for state in states}

    def loaded() -> int:
        return loaded_files(query, "us_states/june/%")

    with open(tmp_path / "dev.log", "w") as log:
        dev = start_dev(env, log)
        try:
            wait_for(dev, lambda: loaded_files(query), 180, "the sample file")
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda item: s3_client.put_object(
                    Bucket=bucket, Key=f"drops/{item[0]}", Body=item[1]), files.items()))
            wait_for(dev, lambda: loaded() >= 3, 180, "the first files of the backlog to load")
        finally:
            ended = stop_dev(dev)
        at_stop = loaded()
        assert at_stop < len(files), "the backlog was done before the stop; nothing was interrupted"
        in_flight = query("SELECT key, status FROM covid.ingested_files WHERE status NOT IN ('loaded')")

        log.write(f"\n==== {ended} with {at_stop} loaded; in flight: {in_flight} ====\n")
        log.flush()
        dev = start_dev(env, log)
        try:
            wait_for(dev, lambda: loaded() == len(files), 300, f"all {len(files)} files after the restart "
                     f"({at_stop} loaded at the stop, in flight {in_flight}, see {tmp_path / 'dev.log'})")
            # A file is loaded once merged into state_daily; its run goes on to national_daily.
            wait_for(dev, lambda: not unfinished_runs(query), 120, "the last runs to finish")
        finally:
            stop_dev(dev)

    ledger = query("SELECT key, status FROM covid.ingested_files ORDER BY key")
    assert ledger == sorted([(key, "loaded") for key in [*files, SAMPLE_KEY]])
    assert query("SELECT count(*) FROM pg_tables WHERE schemaname = 'covid_staging'") == [(0,)]
    everything = pd.concat([read_nyt(SAMPLE), *(read_nyt(data) for data in files.values())], ignore_index=True)
    assert_tables_match(query, everything)
