"""Scheduled CSV downloads (`CsvDownload`): a real HTTP server in a thread publishes real NYT slices at a URL,
with ETag / Last-Modified and conditional answers; the pull asset lands a changed file (which then loads
like any drop), lands nothing for an unchanged one, retries a 500, and never lands a body cut short."""

import email.utils
import gzip
import io
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pandas as pd
import pytest

from covid_platform.assets.factory import build_dataset_schedules
from covid_platform.assets.pulls import build_pull_schedule
from covid_platform.datasets import DATASETS, US_COUNTIES, US_STATES, CsvDownload, Dataset, DatasetError
from covid_platform.definitions import defs
from covid_platform.resources.http_source import HttpSources
from covid_platform_tests.helpers import (
    ASSETS,
    county_rows,
    ingest,
    nyt_states_slice,
)
from covid_platform_tests.oracles import with_differences, with_rolling_7d

STATES = {"Ohio", "Texas", "Vermont"}
COLUMNS = ["state", "fips", "date", "cases", "deaths", "new_cases", "new_deaths", "new_cases_7d", "new_deaths_7d"]


@dataclass
class Published:
    """What the server publishes, and what it was asked. `plan`: how to answer the next requests, before
    the normal answers ("500", "html": a web page answered 200, or "short": Content-Length beyond the body, then
    the connection closed)."""

    body: bytes = b""
    etag: str | None = None
    last_modified: datetime | None = None
    validators: tuple[str, ...] = ("etag", "last_modified")  # which ones the server sends and honours
    plan: list[str] = field(default_factory=list)
    seen: list[tuple[int, dict]] = field(default_factory=list)  # (status answered, request headers)
    version: int = 0

    def publish(self, body: bytes) -> None:
        self.version += 1
        self.body, self.etag = body, f'"v{self.version}"'
        # whole seconds apart, as HTTP dates are: versions published within a second would compare equal
        self.last_modified = datetime(2023, 3, 24, tzinfo=timezone.utc) + timedelta(days=self.version)

    def unchanged_for(self, headers) -> bool:
        """RFC 9110 13.2.2: If-None-Match decides when sent; else If-Modified-Since."""
        if "If-None-Match" in headers:
            return "etag" in self.validators and headers["If-None-Match"] == self.etag
        since = headers.get("If-Modified-Since")
        return ("last_modified" in self.validators and since is not None
                and self.last_modified <= email.utils.parsedate_to_datetime(since))


@pytest.fixture
def server(monkeypatch):
    """A real HTTP server publishing `us_states` and `us_counties` files (each its own `Published`)."""
    published = {"us_states": Published(), "us_counties": Published()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            source = published[self.path.strip("/").split(".")[0]]
            action = source.plan.pop(0) if source.plan else None
            if action == "500":
                return self._answer(source, 500, b"")
            if action == "404":
                return self._answer(source, 404, b"")
            if action == "html":  # a maintenance page, answered 200
                return self._answer(source, 200, b"<html><body>Down for maintenance</body></html>",
                                    {"Content-Type": "text/html; charset=utf-8", "ETag": '"page"'})
            if action is None and source.unchanged_for(self.headers):
                return self._answer(source, 304, b"")
            headers = {}
            if "etag" in source.validators:
                headers["ETag"] = source.etag
            if "last_modified" in source.validators:
                headers["Last-Modified"] = email.utils.format_datetime(source.last_modified, usegmt=True)
            if action == "short":
                headers["Content-Length"] = str(len(source.body) + 1000)
            self._answer(source, 200, source.body, headers)

        def _answer(self, source: Published, status: int, body: bytes, headers: dict | None = None):
            source.seen.append((status, dict(self.headers)))
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True  # a short body: the client sees the connection end before it is all

        def log_message(self, *args):
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{http.server_port}"
    monkeypatch.setenv("US_STATES_URL", f"{base}/us_states.csv")
    monkeypatch.setenv("US_COUNTIES_URL", f"{base}/us_counties.csv.gz")
    yield published
    http.shutdown()


def pull(dataset: str, resources: dict, instance: dg.DagsterInstance, **http_settings):
    resources = {**resources, "http": HttpSources(backoff_seconds=0.05, timeout_seconds=10, **http_settings)}
    return dg.materialize(ASSETS, selection=[f"{dataset}_pull"], instance=instance, resources=resources,
                          raise_on_error=False)


def landed(result: dg.ExecuteInProcessResult) -> str:
    (event,) = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["changed"].value is True
    return metadata["key"].value


def objects(landing, dataset: str) -> list[str]:
    return [o.key for o in landing.list_after("", within=f"{dataset}/")]


def revised(body: bytes, state: str, dates: set[str], more_cases: int) -> bytes:
    """The file as its publisher revises it: `state`'s cumulative cases on `dates` raised (the other bytes
    kept)."""
    lines = body.splitlines(keepends=True)
    for i, line in enumerate(lines):
        fields = line.decode().split(",")
        if fields[1] == state and fields[0] in dates:
            fields[3] = str(int(fields[3]) + more_cases)
            lines[i] = ",".join(fields).encode()
    return b"".join(lines)


def expected_states(body: bytes) -> pd.DataFrame:
    """state_daily computed from the published file with pandas."""
    frame = pd.read_csv(io.BytesIO(body), dtype={"fips": str})
    frame = with_rolling_7d(with_differences(frame, {"cases": "new_cases", "deaths": "new_deaths"}),
                            ["new_cases", "new_deaths"])[COLUMNS]
    return frame.astype({"date": "datetime64[ns]", **{c: "float64" for c in COLUMNS[3:]}})


def state_daily(query) -> pd.DataFrame:
    frame = pd.DataFrame(query(f"SELECT {', '.join(COLUMNS)} FROM covid.state_daily ORDER BY state, date"),
                         columns=COLUMNS)
    return frame.astype({"date": "datetime64[ns]", **{c: "float64" for c in COLUMNS[3:]}})


def test_changed_files_land_and_load_and_an_unchanged_one_adds_nothing(server, landing, resources, query):
    source = server["us_states"]
    first = nyt_states_slice("2021-02-01", "2021-02-14", STATES)
    source.publish(first)
    with dg.instance_for_test() as instance:
        # 1. first pull: the file lands (byte for byte) and loads
        result = pull("us_states", resources, instance)
        assert result.success
        key = landed(result)
        assert objects(landing, "us_states") == [key]
        assert landing.open(key).read() == first
        status, asked = source.seen[-1]
        assert status == 200 and "If-None-Match" not in asked and "If-Modified-Since" not in asked
        assert ingest(landing, resources, key, instance).success
        pd.testing.assert_frame_equal(state_daily(query), expected_states(first), check_exact=False)

        # 2. unchanged: the server answers 304 to the validators kept in covid.pull_state; nothing lands
        result = pull("us_states", resources, instance)
        assert result.success and not result.get_asset_materialization_events()
        status, asked = source.seen[-1]
        assert status == 304 and asked["If-None-Match"] == source.etag
        assert email.utils.parsedate_to_datetime(asked["If-Modified-Since"]) == source.last_modified
        (observation,) = result.get_asset_observation_events()
        metadata = observation.event_specific_data.asset_observation.metadata
        assert metadata["changed"].value is False and metadata["last_landed"].value == key
        assert "Not Modified" in metadata["reason"].value
        assert objects(landing, "us_states") == [key]

        # 3. the publisher revises Ohio's last three days and adds a day: the new version lands and loads
        revised_days = {"2021-02-12", "2021-02-13", "2021-02-14"}
        second = revised(nyt_states_slice("2021-02-01", "2021-02-15", STATES), "Ohio", revised_days, 500)
        source.publish(second)
        result = pull("us_states", resources, instance)
        assert result.success
        new_key = landed(result)
        assert sorted(objects(landing, "us_states")) == sorted([key, new_key])
        assert ingest(landing, resources, new_key, instance).success

    pd.testing.assert_frame_equal(state_daily(query), expected_states(second), check_exact=False)
    assert query("""SELECT r.keys_added, r.keys_revised FROM covid.revisions r
                    JOIN covid.ingested_files f USING (file_id) WHERE f.key = %s AND r.table_name = 'state_daily'""",
                 (new_key,)) == [(len(STATES), len(revised_days))]
    assert query("SELECT key, etag FROM covid.pull_state WHERE dataset = 'us_states'") == [(new_key, source.etag)]


@pytest.mark.parametrize("validators", [("etag",), ("last_modified",), ()])
def test_each_way_of_knowing_a_file_is_unchanged(server, landing, resources, validators):
    """A server with ETags only, with Last-Modified only, or with neither (the bytes' sha256 decides)."""
    source = server["us_states"]
    source.validators = validators
    source.publish(nyt_states_slice("2021-02-01", "2021-02-03", STATES))
    with dg.instance_for_test() as instance:
        key = landed(pull("us_states", resources, instance))
        result = pull("us_states", resources, instance)
    assert result.success and not result.get_asset_materialization_events()
    assert source.seen[-1][0] == (304 if validators else 200)
    assert objects(landing, "us_states") == [key]


def test_the_same_bytes_under_new_validators_are_answered_not_modified_next(server, landing, resources, query):
    """A publisher's rebuild sends the same bytes under a new ETag and Last-Modified: nothing lands, and the new
    validators are kept, so the check after it is answered 304 rather than with the body again."""
    source = server["us_states"]
    body = nyt_states_slice("2021-02-01", "2021-02-03", STATES)
    source.publish(body)
    with dg.instance_for_test() as instance:
        key = landed(pull("us_states", resources, instance))
        source.publish(body)
        assert not pull("us_states", resources, instance).get_asset_materialization_events()
        assert source.seen[-1][0] == 200
        assert not pull("us_states", resources, instance).get_asset_materialization_events()
        assert source.seen[-1][0] == 304
    assert objects(landing, "us_states") == [key]
    assert query("SELECT key, etag FROM covid.pull_state WHERE dataset = 'us_states'") == [(key, source.etag)]


def test_a_gzip_file_lands_as_csv_gz_and_loads(server, landing, resources, query):
    rows = county_rows("2020-12-20", "2021-01-05", {"Delaware"})
    server["us_counties"].publish(gzip.compress(rows))
    with dg.instance_for_test() as instance:
        key = landed(pull("us_counties", resources, instance))
        assert key.endswith(".csv.gz")
        assert ingest(landing, resources, key, instance).success
    assert query("SELECT count(*) FROM covid.county_daily") == [(len(rows.splitlines()) - 1,)]


def test_a_500_then_a_success_is_retried(server, landing, resources):
    source = server["us_states"]
    source.publish(nyt_states_slice("2021-02-01", "2021-02-03", STATES))
    source.plan = ["500"]
    with dg.instance_for_test() as instance:
        key = landed(pull("us_states", resources, instance))
    assert [status for status, _ in source.seen] == [500, 200]
    assert landing.open(key).read() == source.body


def test_a_body_cut_short_is_fetched_again_and_never_landed(server, landing, resources, query):
    source = server["us_states"]
    source.publish(nyt_states_slice("2021-02-01", "2021-02-03", STATES))
    with dg.instance_for_test() as instance:
        # cut short once: fetched again from the start, the whole file lands
        source.plan = ["short"]
        key = landed(pull("us_states", resources, instance))
        assert landing.open(key).read() == source.body

        # cut short on every try: the pull fails, says why, lands nothing and keeps the last version's state
        source.publish(nyt_states_slice("2021-02-01", "2021-02-04", STATES))
        source.plan = ["short"] * 3
        result = pull("us_states", resources, instance, max_retries=2)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.event_specific_data.error.message
    assert "us_states.csv" in message and "broke off" in message and "1000 more expected" in message
    assert "on each of 3 tries" in message
    assert len(source.seen) == 2 + 3 and not source.plan
    assert objects(landing, "us_states") == [key]
    assert query("SELECT key, etag FROM covid.pull_state") == [(key, '"v1"')]


def test_a_web_page_answered_200_is_not_landed(server, landing, resources, query):
    """A maintenance page instead of the file fails the pull, says so, lands nothing and keeps the last
    version's state: the next pull asks for the file as before."""
    source = server["us_states"]
    source.publish(nyt_states_slice("2021-02-01", "2021-02-03", STATES))
    with dg.instance_for_test() as instance:
        key = landed(pull("us_states", resources, instance))
        source.publish(nyt_states_slice("2021-02-01", "2021-02-04", STATES))
        source.plan = ["html"]
        result = pull("us_states", resources, instance)
        assert not result.success
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        message = failure.event_specific_data.error.message
        assert "a web page (text/html), not the file: nothing landed" in message and "not retried" in message
        assert objects(landing, "us_states") == [key]
        assert query("SELECT key, etag FROM covid.pull_state") == [(key, '"v1"')]
        assert source.seen[-1][1]["If-None-Match"] == '"v1"'
        newer = landed(pull("us_states", resources, instance))
    assert landing.open(newer).read() == source.body


def test_a_server_that_keeps_failing_fails_the_pull_with_the_url(server, resources):
    source = server["us_states"]
    source.publish(b"date,state,fips,cases,deaths\n")
    source.plan = ["500"] * 3
    with dg.instance_for_test() as instance:
        result = pull("us_states", resources, instance, max_retries=2)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "GET http://127.0.0.1" in failure.event_specific_data.error.message and "500" in \
        failure.event_specific_data.error.message
    assert len(source.seen) == 3  # the session's retries only: the step's retry policy does not repeat them
    assert "after retries with backoff" in failure.event_specific_data.error.message


def test_a_404_fails_at_once_and_says_it_was_not_retried(server, resources):
    """A wrong URL is not a flaky server: one request, and the failure says no retry was made."""
    source = server["us_states"]
    source.publish(b"date,state,fips,cases,deaths\n")
    source.plan = ["404"]
    with dg.instance_for_test() as instance:
        result = pull("us_states", resources, instance, max_retries=2)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.event_specific_data.error.message
    assert "404" in message and "not retried" in message and "after retries" not in message
    assert [status for status, _ in source.seen] == [404]


def test_downloads_are_declared_validated_upstream_of_raw_and_off_unless_turned_on(monkeypatch):
    graph = defs.resolve_asset_graph()
    for name in ("us_states", "us_counties", "cps_schools"):
        assert graph.get(dg.AssetKey(f"raw_{name}")).parent_keys == {dg.AssetKey(f"{name}_pull")}

    for variable in ("COVID_PULLS", *(f"{name.upper()}_URL" for name in DATASETS)):
        monkeypatch.delenv(variable, raising=False)
    # every pull's schedule, the Socrata pull's (pcr_testing) as the downloads', is off unless turned on
    schedules = {s.name: s.default_status for d in DATASETS.values() for s in build_dataset_schedules(d)}
    assert set(schedules) == {f"{name}_daily_pull" for name in ("us_states", "us_counties", "cps_schools",
                                                                 "pcr_testing")}
    assert set(schedules.values()) == {dg.DefaultScheduleStatus.STOPPED}
    monkeypatch.setenv("US_STATES_URL", "http://mirror.example/us-states.csv")
    assert build_pull_schedule(US_STATES).default_status == dg.DefaultScheduleStatus.RUNNING
    assert build_pull_schedule(US_COUNTIES).default_status == dg.DefaultScheduleStatus.STOPPED
    monkeypatch.setenv("COVID_PULLS", "on")
    assert build_pull_schedule(US_COUNTIES).default_status == dg.DefaultScheduleStatus.RUNNING

    declared = {"name": "x", "table": "x_daily", "region": ("state",), "counts": ("cases",)}
    for pull, problem in [(CsvDownload(url="ftp://example.org/x.csv"), r"not an http\(s\) URL"),
                          (CsvDownload(url="https://example.org/x.csv", cron="daily"), "five-field cron")]:
        with pytest.raises(DatasetError, match=f"field 'pull': .*{problem}"):
            Dataset(**declared, pull=pull)
    with pytest.raises(DatasetError, match="date_in_file_name"):
        Dataset(**declared, date_in_file_name="%m-%d-%Y", pull=CsvDownload(url="https://example.org/x.csv"))
