"""Faults during ingestion, against real services: PostgreSQL connections terminated mid-statement, S3 objects
deleted or overwritten after listing, S3 throttling and timeouts (a proxy in front of moto injects them).

Every fault must end in one of two ways: the work is retried and the file is loaded exactly once (the tables
equal a load without the fault), or the run fails with an error that names the problem and the ledger says
the file is not loaded. Never a half-written table, never a silent skip.
"""

import hashlib
import http.client
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import botocore.exceptions
import dagster as dg
import pandas as pd
import psycopg2
import pytest
from dagster_aws.s3 import S3Resource

from covid_platform.assets.policies import RETRY
from covid_platform.assets.raw import ETAG_TAG, KEY_TAG
from covid_platform.engine import intake, ledger
from covid_platform.resources.landing import LandingZone
from covid_platform_tests.helpers import county_rows, drop, ingest, nyt_states_slice, tick, tick_until_quiet
from covid_platform_tests.oracles import (
    assert_tables_match,
    county_table,
    expected_counties,
    read_counties,
    read_nyt,
)

# How psycopg2 reports a backend terminated under it: the server's message when it arrives (an idle or
# querying connection), else libpq's (a connection busy sending COPY data).
LOST_CONNECTION = re.compile(
    "terminating connection due to administrator command|server closed the connection unexpectedly"
)


def with_copies(data: bytes, copies: int) -> bytes:
    """The rows, then `copies - 1` copies of them as other counties (names suffixed " #1", " #2", ...; the
    same values): many rows from the small real slice, the same on every run."""
    header, *lines = data.splitlines(keepends=True)
    out = [header, *lines]
    for copy in range(1, copies):
        for line in lines:
            date, county, rest = line.split(b",", 2)
            out.append(b"%s,%s #%d,%s" % (date, county, copy, rest))
    return b"".join(out)


def step_events(run, event_type: dg.DagsterEventType, step: str) -> list[dg.DagsterEvent]:
    return [e for e in run.all_events if e.event_type == event_type and e.step_key == step]


def attempt_errors(run, step: str) -> list[str]:
    """Each failed attempt of a step: the error chain as the UI shows it, from the first error that is not
    Dagster's own wrapper (retry requested, step execution error) down to the root cause."""
    events = step_events(run, dg.DagsterEventType.STEP_UP_FOR_RETRY, step)
    events += step_events(run, dg.DagsterEventType.STEP_FAILURE, step)
    errors = []
    for event in events:
        error = event.event_specific_data.error
        while error.cause and error.cls_name in ("RetryRequestedFromPolicy", "DagsterExecutionStepExecutionError"):
            error = error.cause
        errors.append(error.to_string())
    return errors


# --- PostgreSQL connection terminated mid-statement -------------------------------------------------


class BackendKiller(threading.Thread):
    """Terminates the platform's PostgreSQL backend while it runs a statement matching `pattern` (LIKE),
    up to `times` times; after each kill, once the backend is gone, calls `observe()` and keeps its result:
    what a reader sees between the failed attempt and its retry."""

    def __init__(self, database_url: str, pattern: str, times: int = 1, observe=lambda: None):
        super().__init__(daemon=True)
        self.database_url, self.pattern, self.times, self.observe = database_url, pattern, times, observe
        self.killed: list[str] = []
        self.observed: list = []
        self.stop = threading.Event()

    def run(self):
        conn = psycopg2.connect(self.database_url)
        conn.autocommit = True  # and no `with conn`: it would open a transaction, freezing pg_stat_activity
        with conn.cursor() as cur:
            while len(self.killed) < self.times and not self.stop.is_set():
                cur.execute(
                    """
                    SELECT pid, left(query, 60) FROM pg_stat_activity
                    WHERE datname = current_database() AND application_name = 'covid_platform'
                      AND state = 'active' AND query LIKE %s
                    """,
                    (self.pattern,),
                )
                found = cur.fetchone()
                if not found:
                    time.sleep(0.005)
                    continue
                pid, statement = found
                time.sleep(0.05)  # well inside the statement, not at its first byte
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid = %s AND state = 'active' AND query LIKE %s",
                    (pid, self.pattern),
                )
                if not cur.fetchone():
                    continue  # it finished first; wait for the next one
                while True:
                    cur.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))
                    if not cur.fetchone():
                        break
                    time.sleep(0.005)
                self.killed.append(statement)
                self.observed.append(self.observe())
        conn.close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join(10)


# A small earlier file, then a large one (126k county rows, 6 MB: the slice's 4 states over 45 days, 83 times)
# whose COPY and merge take long enough to be caught. The small file's counts are off by one, so the large
# file revises its last 3 days.
EARLY = county_rows("2020-03-28", "2020-04-03", {"Rhode Island", "Delaware", "Vermont"})
LARGE = with_copies(county_rows("2020-04-01", "2020-05-15"), 83)


def _bumped(data: bytes) -> bytes:
    frame = read_counties(data)
    frame["cases"] += 1
    return frame.assign(date=frame["date"].dt.strftime("%Y-%m-%d")).to_csv(index=False).encode()


def _load_early(landing, resources, instance) -> None:
    assert ingest(landing, resources, drop(landing, "us_counties/early.csv", _bumped(EARLY)), instance).success


def _expected_after_both() -> pd.DataFrame:
    early, large = read_counties(_bumped(EARLY)), read_counties(LARGE)
    return expected_counties(pd.concat([early[early["date"] < "2020-04-01"], large], ignore_index=True))


@pytest.mark.parametrize(
    ("statement", "pattern", "step", "status_between"),
    [
        ("COPY into staging", "COPY %", "raw_us_counties", "received"),
        # pg_stat_activity keeps the first 1 kB of the merge's statements: where it reads the staged files.
        ("merge into county_daily", '%incoming%"county"%', "county_daily", "staged"),
    ],
)
def test_connection_killed_mid_statement_is_retried_and_loads_once(
    landing, resources, query, database_url, statement, pattern, step, status_between
):
    with dg.instance_for_test() as instance:
        _load_early(landing, resources, instance)
        before = query("SELECT * FROM covid.county_daily ORDER BY state, county, date")

        def observe():
            return (
                query("SELECT * FROM covid.county_daily ORDER BY state, county, date"),
                query("SELECT status FROM covid.ingested_files WHERE key = 'us_counties/large.csv'"),
            )

        key = drop(landing, "us_counties/large.csv", LARGE)
        with BackendKiller(database_url, pattern, observe=observe) as killer:
            run = ingest(landing, resources, key, instance)

    assert len(killer.killed) == 1, f"the {statement} was never caught running"
    # The attempt failed with PostgreSQL's own words, and was retried after a backoff.
    assert len(step_events(run, dg.DagsterEventType.STEP_UP_FOR_RETRY, step)) == 1
    (error,) = attempt_errors(run, step)
    assert LOST_CONNECTION.search(error), error
    # Between the attempts: no half-written table, and the ledger does not say loaded.
    (table_between, ledger_between), = killer.observed
    assert table_between == before
    assert ledger_between == [(status_between,)]
    # The retry loaded the file exactly once: the tables equal a load without the fault.
    assert run.success
    assert query("SELECT key, status, rows FROM covid.ingested_files ORDER BY file_id") == [
        ("us_counties/early.csv", "loaded", EARLY.count(b"\n") - 1),
        ("us_counties/large.csv", "loaded", LARGE.count(b"\n") - 1),
    ]
    pd.testing.assert_frame_equal(county_table(query), _expected_after_both(), check_dtype=False)
    assert query("SELECT count(*) FROM pg_tables WHERE schemaname = 'covid_staging'") == [(0,)]
    # What the UI shows first is the lost connection, not a follow-on error from cleaning up after it.
    first_line = error.split("\n")[0]
    assert LOST_CONNECTION.search(first_line), first_line


def test_merge_killed_on_every_attempt_fails_the_run_then_re_execution_loads_once(
    landing, resources, query, database_url
):
    """1 attempt + 3 retries (backoff 2, 6, 14 s ± 2 s), each killed: the run fails, naming the lost
    connection; the table and the ledger are as before the run. Re-executing the run loads the file once."""
    with dg.instance_for_test() as instance:
        _load_early(landing, resources, instance)
        before = query("SELECT * FROM covid.county_daily ORDER BY state, county, date")
        key = drop(landing, "us_counties/large.csv", LARGE)
        with BackendKiller(database_url, '%incoming%"county"%', times=4) as killer:
            failed = ingest(landing, resources, key, instance)
        assert len(killer.killed) == 4
        assert not failed.success
        errors = attempt_errors(failed, "county_daily")
        assert len(errors) == 4 and all(LOST_CONNECTION.match(e.split(": ", 1)[1]) for e in errors), errors
        assert query("SELECT * FROM covid.county_daily ORDER BY state, county, date") == before
        assert query("SELECT status FROM covid.ingested_files WHERE key = %s", (key,)) == [("staged",)]

        retried = ingest(landing, resources, key, instance)  # what "Re-execute" launches

    assert retried.success
    assert query("SELECT key, status FROM covid.ingested_files ORDER BY file_id") == [
        ("us_counties/early.csv", "loaded"), ("us_counties/large.csv", "loaded")
    ]
    pd.testing.assert_frame_equal(county_table(query), _expected_after_both(), check_dtype=False)


def test_a_ledger_write_on_a_dropped_connection_raises_the_servers_error(warehouse, database_url, query):
    """Between statements (idle in transaction, say after the gates) the backend is terminated: the next
    ledger write says so, instead of psycopg2's "connection already closed" from rolling back a dead one."""
    with warehouse.connect() as conn:
        entry = ledger.register(conn, "us_states/a.csv", "e1", "a-1", "us_states", "run-1")
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            (pid,) = cur.fetchone()
        query("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg2.OperationalError, match=LOST_CONNECTION):
            ledger.update(conn, entry.file_id, status="staged")
    assert query("SELECT status FROM covid.ingested_files") == [("received",)]


# --- S3: objects gone after listing, throttling, timeouts ------------------------------------------------


class FaultyS3(ThreadingHTTPServer):
    """An HTTP proxy in front of moto that spoils GetObject requests for archived files (what the raw step
    streams into COPY), one planned fault per request, then forwards the rest untouched:

    - "slowdown": 503 SlowDown, as S3 answers when throttling a prefix;
    - "stall": no answer for `stall_seconds` (longer than the client's read timeout), then the socket closes;
    - "stall_body": headers and the first 100 bytes of the body, then nothing for `stall_seconds`;
    - "cut_body": the same, then the connection closes (a reset mid-transfer; the rest never comes).
    """

    def __init__(self, upstream: str, plan: list[str], stall_seconds: float = 3):
        super().__init__(("127.0.0.1", 0), _Forward)
        self.daemon_threads = True
        self.upstream = urlparse(upstream)
        self.plan, self.stall_seconds = list(plan), stall_seconds
        self.gets: list[str] = []  # the fault (or "ok") each GetObject of an archived file met
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fault_for(self, method: str, path: str) -> str:
        if method != "GET" or "/_archive/" not in path or "list-type=" in path:
            return "ok"
        with self._lock:
            fault = self.plan.pop(0) if self.plan else "ok"
            self.gets.append(fault)
        return fault

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}

    def log_message(self, *args):
        pass

    def _handle(self):
        server: FaultyS3 = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fault = server.fault_for(self.command, self.path)
        if fault == "slowdown":
            self._reply(503, b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                             b"<Message>Please reduce your request rate.</Message></Error>",
                        {"Content-Type": "application/xml"})
            return
        if fault == "stall":
            time.sleep(server.stall_seconds)
            self.close_connection = True
            return
        upstream = http.client.HTTPConnection(server.upstream.hostname, server.upstream.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in self.HOP_BY_HOP}
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        upstream.close()
        passed = {k: v for k, v in response.getheaders() if k.lower() not in self.HOP_BY_HOP}
        if self.command == "HEAD":
            self._reply(response.status, b"", {**passed, "Content-Length": response.getheader("Content-Length", "0")})
        elif fault in ("stall_body", "cut_body"):
            self._reply(response.status, data[:100], {**passed, "Content-Length": str(len(data))})
            if fault == "stall_body":
                time.sleep(server.stall_seconds)
            self.close_connection = True
        else:
            self._reply(response.status, data, passed)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

    def _reply(self, status: int, data: bytes, headers: dict):
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(data)
                self.wfile.flush()
            except OSError:
                pass  # the client gave up first


STATES_FILE = nyt_states_slice("2021-01-01", "2021-01-31")


def landing_through(proxy: FaultyS3, bucket: str, **settings) -> LandingZone:
    """The landing zone of the `landing` fixture, reached through the proxy; a 1 s read timeout."""
    return LandingZone(
        url=f"s3://{bucket}/drops",
        s3=S3Resource(endpoint_url=proxy.url, region_name="us-east-1", **settings),
        read_timeout_seconds=1,
    )


@pytest.mark.parametrize(
    ("plan", "gets", "step_retries"),
    [
        # botocore retries throttling and a read timeout before the response itself ('standard' mode)
        (["slowdown", "slowdown"], ["slowdown", "slowdown", "ok"], 0),
        (["stall"], ["stall", "ok"], 0),
        # a stream that stalls mid-body cannot be resumed by botocore: the step fails, Dagster retries it
        (["stall_body"], ["stall_body", "ok"], 1),
        # a body cut short is never taken for the whole file
        (["cut_body"], ["cut_body", "ok"], 1),
    ],
    ids=["throttled", "timeout_before_response", "timeout_mid_stream", "cut_mid_stream"],
)
def test_s3_throttling_and_timeouts_are_retried_and_the_file_loads_once(
    s3_endpoint, bucket, landing, resources, query, plan, gets, step_retries
):
    key = drop(landing, "us_states/jan.csv", STATES_FILE)
    with FaultyS3(s3_endpoint, plan) as proxy, dg.instance_for_test() as instance:
        zone = landing_through(proxy, bucket)
        run = ingest(zone, {**resources, "landing": zone}, key, instance)
    assert proxy.gets == gets
    assert len(step_events(run, dg.DagsterEventType.STEP_UP_FOR_RETRY, "raw_us_states")) == step_retries
    if step_retries:
        (error,) = attempt_errors(run, "raw_us_states")
        cause = "ReadTimeoutError: .*Read timed out" if plan == ["stall_body"] else "IncompleteRead"
        assert re.search(r"reading s3://\S+/drops/_archive/us_states/jan\.csv/\w+ broke off after [\d,]+ of "
                         rf"[\d,]+ bytes: .*{cause}", error), error
    assert run.success, attempt_errors(run, "raw_us_states")
    assert query("SELECT key, status, rows, reason FROM covid.ingested_files") == [
        (key, "loaded", STATES_FILE.count(b"\n") - 1, None)
    ]
    assert query("SELECT count(*) FROM covid.state_daily") == [(STATES_FILE.count(b"\n") - 1,)]


def test_s3_throttling_beyond_the_clients_retries_is_an_error_naming_it(s3_endpoint, bucket, landing):
    """What the raw step sees when S3 keeps throttling: botocore's `max_attempts` tries, then SlowDown.
    (The step then fails and is retried by its RetryPolicy like any other error: test_sensor.py.)"""
    drop(landing, "_archive/us_states/jan.csv/e1", STATES_FILE)
    with FaultyS3(s3_endpoint, ["slowdown"] * 10) as proxy:
        zone = landing_through(proxy, bucket, max_attempts=3)
        with pytest.raises(botocore.exceptions.ClientError, match=r"\(SlowDown\) when calling the GetObject"):
            zone.open("_archive/us_states/jan.csv/e1")
    assert proxy.gets == ["slowdown"] * 3


def test_a_key_deleted_after_listing_fails_its_run_and_the_ledger_says_why(
    landing, resources, query, s3_client, bucket
):
    key = drop(landing, "us_states/gone.csv", STATES_FILE)
    with dg.instance_for_test() as instance:
        result, cursor = tick(instance, landing, None)
        (request,) = result.run_requests
        etag = request.tags[ETAG_TAG]
        s3_client.delete_object(Bucket=bucket, Key=f"drops/{key}")

        run = ingest(landing, resources, key, instance, etag=etag)
        again, _, _ = tick_until_quiet(instance, landing, cursor)

    assert not run.success
    # Retrying cannot bring a deleted version back: no retry, and the error says what happened.
    assert step_events(run, dg.DagsterEventType.STEP_UP_FOR_RETRY, "raw_us_states") == []
    gone = f"{key} no longer has ETag {etag}: it was overwritten or deleted after it was listed"
    (error,) = attempt_errors(run, "raw_us_states")
    assert gone in error, error
    assert query("SELECT key, etag, status, reason FROM covid.ingested_files") == [(key, etag, "received", gone)]
    with resources["warehouse"].connect() as conn, conn.cursor() as cur:  # the data status: not in flight
        cur.execute(ledger.STATUS_BY_DATASET)
        assert [(row[0], row[5]) for row in cur.fetchall()] == [("us_states", 0)]  # (dataset, in_progress)
    assert again == []  # not requested again, and not forgotten: the ledger row and the failed run remain
    assert s3_client.list_objects_v2(Bucket=bucket, Prefix="drops/_archive/").get("KeyCount") == 0
    assert query("SELECT to_regclass('covid.state_daily')") == [(None,)]


def test_a_step_failing_for_a_reason_no_gate_names_keeps_it_in_the_ledger(landing, resources, query, monkeypatch):
    """A fault or a bug while the file is read (here an error injected where the raw step gates the archived
    copy) fails the run, and the ledger says why: the file is listed with the quarantined ones, not in flight
    for ever. Run again once mended, it loads and the reason goes."""
    key = drop(landing, "us_states/crash.csv", STATES_FILE)
    seen = []  # the ledger's (status, reason) as each attempt starts gating

    def failing(*args, **kwargs):
        seen.extend(query("SELECT status, reason FROM covid.ingested_files"))
        raise RuntimeError("injected while gating")

    with dg.instance_for_test() as instance:
        with monkeypatch.context() as patch:
            patch.setattr(intake, "gate_archived", failing)
            run = ingest(landing, resources, key, instance)
        assert not run.success
        # an attempt the step's RetryPolicy retries is still in flight: only the last one says why it failed
        assert seen == [("received", None)] * (RETRY.max_retries + 1)
        reason = "the raw step failed: RuntimeError: injected while gating"
        assert query("SELECT status, reason FROM covid.ingested_files") == [("received", reason)]
        with resources["warehouse"].connect() as conn, conn.cursor() as cur:
            cur.execute(ledger.STATUS_BY_DATASET)
            assert [(row[0], row[5]) for row in cur.fetchall()] == [("us_states", 0)]  # (dataset, in_progress)

        assert ingest(landing, resources, key, instance).success
    assert query("SELECT status, reason FROM covid.ingested_files") == [("loaded", None)]


def texas_cases_plus(data: bytes, extra: int) -> bytes:
    """The NYT file with `extra` more cases for Texas on every date (a corrected re-upload)."""
    if not extra:
        return data
    frame = read_nyt(data)
    frame.loc[frame["state"] == "Texas", "cases"] += extra
    return frame.assign(date=frame["date"].dt.strftime("%Y-%m-%d")).to_csv(index=False).encode()


def texas_on_jan_31(query) -> int:
    return query("SELECT cases FROM covid.state_daily WHERE state = 'Texas' AND date = '2021-01-31'")[0][0]


def requests_until_found(instance, landing, cursor, ticks: int = 5):
    """Tick until a tick requests runs (the sweep may need a tick or two): (those requests, cursor)."""
    for _ in range(ticks):
        result, cursor = tick(instance, landing, cursor)
        if result.run_requests:
            return result.run_requests, cursor
    raise AssertionError(f"no run requested in {ticks} ticks")


def test_a_key_overwritten_after_listing_loads_its_newest_version_and_later_values_win(landing, resources, query):
    """v1 is listed and loaded; v2 overwrites it and is listed, but v3 overwrites it before v2's run reads
    it: v2's run fails (that version is gone), the sweep finds v3, and v3's values replace v1's."""
    key = "us_states/jan.csv"
    versions = [texas_cases_plus(STATES_FILE, extra) for extra in (0, 1000, 2000)]
    with dg.instance_for_test() as instance:
        drop(landing, key, versions[0])
        (v1,), cursor = requests_until_found(instance, landing, None)
        assert ingest(landing, resources, key, instance, etag=v1.tags[ETAG_TAG]).success
        loaded_first = texas_on_jan_31(query)

        drop(landing, key, versions[1])
        (v2,), cursor = requests_until_found(instance, landing, cursor)
        drop(landing, key, versions[2])
        failed = ingest(landing, resources, key, instance, etag=v2.tags[ETAG_TAG])
        assert not failed.success
        assert texas_on_jan_31(query) == loaded_first

        (v3,), cursor = requests_until_found(instance, landing, cursor)
        assert ingest(landing, resources, key, instance, etag=v3.tags[ETAG_TAG]).success
        assert tick_until_quiet(instance, landing, cursor)[0] == []

    etags = [hashlib.md5(version).hexdigest() for version in versions]
    assert [request.tags[ETAG_TAG] for request in (v1, v2, v3)] == etags
    assert query("SELECT etag, status, reason FROM covid.ingested_files ORDER BY file_id") == [
        (etags[0], "loaded", None),
        (etags[1], "received", f"{key} no longer has ETag {etags[1]}: it was overwritten or deleted after it "
                               "was listed"),
        (etags[2], "loaded", None),
    ]
    assert texas_on_jan_31(query) == loaded_first + 2000
    # The whole tables, derived columns included, are those of v3 alone.
    assert_tables_match(query, read_nyt(versions[2]))


# --- the sensor's cursor (test_sensor.py covers same-second uploads, a late key, 1,000+ new keys) ----------


def test_the_sweep_finds_late_and_overwritten_keys_on_every_page_behind_the_cursor(landing, s3_client, bucket):
    """1,010 keys listed (two sweep pages); then, behind the cursor, a late key on each page and a key of
    page 2 overwritten: each new version is requested once, within one sweep cycle, and nothing else."""
    keys = [f"us_states/f{i:05d}.csv" for i in range(0, 2020, 2)]

    def put(key: str, body: bytes = b"date,state,fips,cases,deaths\n") -> str:
        return s3_client.put_object(Bucket=bucket, Key=f"drops/{key}", Body=body)["ETag"].strip('"')

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, keys))
    with dg.instance_for_test() as instance:
        listed, _, cursor = tick_until_quiet(instance, landing, None)
        assert len(listed) == len(keys)

        late = {key: put(key) for key in ("us_states/f00001.csv", "us_states/f02001.csv")}
        overwritten = {keys[1005]: put(keys[1005], b"date,state,fips,cases,deaths\n2021-01-01,Ohio,39,1,0\n")}
        found = []
        for _ in range(3):  # a sweep cycle: page 1, page 2, back to the start
            result, cursor = tick(instance, landing, cursor)
            found += result.run_requests

    assert sorted((r.tags[KEY_TAG], r.tags[ETAG_TAG]) for r in found) == sorted({**late, **overwritten}.items())
    assert len({r.run_key for r in found}) == len(found)
