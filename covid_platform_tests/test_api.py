"""The read API over real HTTP (uvicorn on a free port) against real PostgreSQL holding real slices loaded
through the platform, read as a covid_reader login (DATABASE_READ_URL): values against pandas, CSV against
JSON, keyset pages, every 400/404, 503 with the database down, and schemathesis against /openapi.json."""

import csv
import datetime as dt
import io
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from urllib.parse import urlparse

import dagster as dg
import hypothesis
import pandas as pd
import psycopg2
import pytest
import requests
import schemathesis
import uvicorn
from dagster_aws.s3 import S3Resource
from hypothesis import strategies
from psycopg2 import sql

from covid_platform.api import catalog
from covid_platform.api.app import create_app
from covid_platform.api.errors import BadParameter
from covid_platform.api.tables import page_request
from covid_platform.datasets import DATASETS
from covid_platform.resources.http_source import HttpSources
from covid_platform.resources.landing import LandingZone
from covid_platform.resources.notifier import Notifier
from covid_platform.resources.warehouse import Warehouse
from covid_platform_tests.conftest import _free_port
from covid_platform_tests.helpers import (
    PR_DE,
    as_user,
    data_file,
    drop,
    ingest,
    nyt_published,
    nyt_states_slice,
)
from covid_platform_tests.oracles import STATE_COLUMNS, with_differences, with_rolling_7d

STATES = nyt_states_slice("2020-06-01", "2020-08-31")
COUNTIES = nyt_published(data_file(PR_DE))  # Puerto Rico's municipios without deaths: nulls
NUMBERS = {"cases", "deaths", "new_cases", "new_deaths", "new_cases_7d", "new_deaths_7d"}
READ_URL_ENV = "COVID_API_TEST_READ_URL"  # the app's DATABASE_READ_URL, without touching the real variable


@contextmanager
def serving(app) -> Iterator[str]:
    """The app on uvicorn in a thread, on a free loopback port; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def loaded(postgres_admin_url, s3_endpoint) -> Iterator[str]:
    """A database of its own for the module (loading once is most of its time), with three months of NYT
    states and a month of Delaware and Puerto Rico counties loaded through the platform; yields its URL."""
    name = f"covid_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(postgres_admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlparse(postgres_admin_url)._replace(path=f"/{name}").geturl()
    bucket = f"landing-{uuid.uuid4().hex[:12]}"
    s3 = S3Resource(endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.get_client().create_bucket(Bucket=bucket)
    landing = LandingZone(url=f"s3://{bucket}/drops", s3=s3)
    resources = {"landing": landing, "warehouse": Warehouse(database_url=url), "notifier": Notifier(),
                 "http": HttpSources(backoff_seconds=0.1)}
    with dg.instance_for_test() as instance:
        for key, body in (("us_states/summer.csv", STATES), ("us_counties/pr-de.csv", COUNTIES)):
            assert ingest(landing, resources, drop(landing, key, body), instance).success
    yield url
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.close()


@pytest.fixture(scope="module")
def api(loaded, postgres_admin_url) -> Iterator[str]:
    """The API reading as a new covid_reader login; its DATABASE_URL (the owner) is never used."""
    login = f"covid_api_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(postgres_admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE covid_reader").format(sql.Identifier(login)))
    os.environ[READ_URL_ENV] = as_user(loaded, login)
    try:
        with serving(create_app("postgresql://nobody@127.0.0.1:1/none", read_url_env=READ_URL_ENV)) as base:
            yield base
    finally:
        del os.environ[READ_URL_ENV]
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(login)))
        admin.close()


def get(base: str, path: str, **params) -> requests.Response:
    return requests.get(f"{base}{path}", params=params, timeout=30)


def expected_states() -> pd.DataFrame:
    """state_daily computed from the slice with pandas (the derived columns over the whole slice)."""
    frame = pd.read_csv(io.BytesIO(STATES), dtype={"fips": str})
    frame = with_differences(frame, {"cases": "new_cases", "deaths": "new_deaths"})
    return with_rolling_7d(frame, ["new_cases", "new_deaths"])[STATE_COLUMNS]


def frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """Rows as a frame whose counts are floats (NaN for null), as pandas computes them."""
    return pd.DataFrame(rows, columns=columns).astype({c: "float64" for c in columns if c in NUMBERS})


def test_a_filtered_request_equals_pandas(api):
    answer = get(api, "/v1/tables/state_daily", state=["Ohio", "Texas"], **{"from": "2020-07-01", "to": "2020-07-31"})
    assert answer.status_code == 200, answer.text
    page = answer.json()
    assert (page["table"], page["columns"], page["next_cursor"]) == ("state_daily", [*STATE_COLUMNS, "file_id", "state_fips", "state_name"], None)

    expected = expected_states()
    expected = expected[expected.state.isin(["Ohio", "Texas"]) & expected.date.between("2020-07-01", "2020-07-31")]
    got = frame(page["rows"], STATE_COLUMNS)
    pd.testing.assert_frame_equal(got, frame(expected.to_dict("records"), STATE_COLUMNS), rtol=1e-9)
    assert len(got) == 62


def test_chosen_columns_of_a_two_column_key_with_nulls(api):
    columns = ["county", "date", "deaths", "new_deaths"]
    answer = get(api, "/v1/tables/county_daily", state="Puerto Rico", county=["Ponce", "Unassigned"],
                 columns=",".join(columns), to="2021-02-20")
    page = answer.json()
    assert page["columns"] == columns
    expected = pd.read_csv(io.BytesIO(COUNTIES), dtype={"fips": str})
    expected = with_differences(expected, {"deaths": "new_deaths"}, region=("state", "county"))
    expected = expected[(expected.state == "Puerto Rico") & expected.county.isin(["Ponce", "Unassigned"])
                        & (expected.date <= "2021-02-20")]
    pd.testing.assert_frame_equal(frame(page["rows"], columns), frame(expected.to_dict("records"), columns))
    assert [row["deaths"] for row in page["rows"] if row["county"] == "Ponce"] == [None] * 5  # not reported


def test_csv_equals_json(api):
    params = {"state": ["Delaware", "Puerto Rico"], "from": "2021-03-01", "limit": 300}
    json_page = get(api, "/v1/tables/county_daily", **params)
    csv_page = get(api, "/v1/tables/county_daily", format="csv", **params)
    assert csv_page.headers["content-type"] == "text/csv; charset=utf-8"
    header, *lines = list(csv.reader(io.StringIO(csv_page.text)))
    body = json_page.json()
    assert header == body["columns"]
    assert len(lines) == len(body["rows"])
    assert lines == [[as_csv(row[c], field) for c, field in zip(header, line)] for row, line in zip(body["rows"], lines)]
    assert len(lines) == 300 and any("" in line for line in lines)  # a full page, with unreported deaths
    # both point to the same next page
    assert body["next_cursor"] in csv_page.headers["link"] and body["next_cursor"] in json_page.headers["link"]


def as_csv(value, field: str) -> str:
    """The JSON value written as CSV, given the field written (the same number may read 37 or 37.0)."""
    if value is None or isinstance(value, str):
        return value or ""
    return field if field and float(field) == value else str(value)


def walk(base: str, path: str, **params) -> tuple[list, int]:
    """Every page from the first, following next_cursor; the rows and the number of pages."""
    rows, pages, cursor = [], 0, None
    while True:
        page = get(base, path, **params, **({"cursor": cursor} if cursor else {})).json()
        rows += page["rows"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return rows, pages


@pytest.mark.parametrize("table, key, params, limit", [
    ("state_daily", ("state", "date"), {}, 397),
    ("county_daily", ("state", "county", "date"), {"state": "Delaware"}, 13),
    ("national_daily", ("date",), {}, 10),
])
def test_pages_walk_every_row_once_in_key_order(api, loaded, table, key, params, limit):
    rows, pages = walk(api, f"/v1/tables/{table}", limit=limit, columns=",".join(key), **params)
    where = sql.SQL("WHERE state = %(state)s" if params else "")
    with psycopg2.connect(loaded) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT {} FROM {} {} ORDER BY {}").format(
            sql.SQL(", ").join(map(sql.Identifier, key)), sql.Identifier("covid", table), where,
            sql.SQL(", ").join(map(sql.Identifier, key))), params)
        expected = [tuple(str(v) for v in row) for row in cur.fetchall()]
    assert [tuple(row[c] for c in key) for row in rows] == expected
    assert len(set(expected)) == len(expected) > limit and pages == -(-len(expected) // limit)


def test_csv_pages_follow_the_link_header(api):
    url, lines = f"{api}/v1/tables/state_daily?format=csv&limit=1000&state=Ohio&state=Guam", []
    while url:
        answer = requests.get(url, timeout=30)
        lines += answer.text.splitlines()[1:]
        url = answer.links.get("next", {}).get("url")
    assert len(lines) == 2 * 92 and lines == sorted(lines)  # Guam, then Ohio, each by date


def test_a_head_request_has_its_gets_status_and_headers(api):
    url = f"{api}/v1/tables/state_daily?format=csv&limit=5&state=Ohio"
    got, head = requests.get(url, timeout=30), requests.head(url, timeout=30)
    assert (head.status_code, head.content) == (200, b"")
    assert {k: head.headers[k] for k in ("content-type", "link")} == {k: got.headers[k] for k in ("content-type", "link")}
    assert requests.head(f"{api}/v1/tables/no_such_table", timeout=30).status_code == 404


@pytest.mark.parametrize("path, params, status, parameter", [
    ("/v1/tables/no_such_table", {}, 404, None),
    ("/v1/tables/ingested_files", {}, 404, None),  # in the schema, but not a declared table
    ("/v1/tables/testing_state_summary", {}, 404, None),  # declared, not built: covidtracking loaded nothing
    ("/v1/tables/state_daily", {"columns": "state,secret"}, 400, "columns"),
    ("/v1/tables/state_daily", {"columns": ""}, 400, "columns"),  # no column named: not every column
    ("/v1/tables/state_daily", {"columns": " , "}, 400, "columns"),
    ("/v1/tables/state_daily", {"from": "2020-13-01"}, 400, "from"),
    ("/v1/tables/state_daily", {"to": "yesterday"}, 400, "to"),
    # pydantic alone reads a number as a Unix time: from=0 would be 1970-01-01, to=86400 1970-01-02
    ("/v1/tables/state_daily", {"from": "0.0"}, 400, "from"),
    ("/v1/tables/state_daily", {"to": "86400"}, 400, "to"),
    ("/v1/tables/state_daily", {"from": "20200801"}, 400, "from"),
    ("/v1/tables/state_daily", {"limit": "0"}, 400, "limit"),
    ("/v1/tables/state_daily", {"limit": "10001"}, 400, "limit"),
    ("/v1/tables/state_daily", {"limit": "ten"}, 400, "limit"),
    ("/v1/tables/state_daily", {"cursor": "not-a-cursor"}, 400, "cursor"),
    ("/v1/tables/state_daily", {"cursor": "eyJ0YWJsZSI6InN0YXRlX2RhaWx5IiwiYWZ0ZXIiOlsiT2hpbyJdfQ"}, 400, "cursor"),
    ("/v1/tables/state_daily", {"county": "Kent"}, 400, "county"),  # a filter of county_daily only
    ("/v1/tables/state_daily", {"cases": "1"}, 400, "cases"),  # not a region column
    ("/v1/tables/state_daily", {"state": "Ohio\x00"}, 400, "state"),
    ("/v1/tables/state_daily", {"format": "xml"}, 400, "format"),
    ("/v1/tables/state_daily", {"from": "2020-08-02", "to": "2020-08-01"}, 400, "from"),
    ("/v1/tables/state_daily", {"as_of": "yesterday"}, 400, "as_of"),
    ("/v1/tables/state_daily", {"as_of": "2021-02-30T00:00:00Z"}, 400, "as_of"),
    ("/v1/tables/state_daily/revisions", {"as_of": "2021-13-01"}, 400, "as_of"),
    ("/v1/tables/state_daily/revisions", {"county": "Kent"}, 400, "county"),
    ("/v1/tables/national_daily/revisions", {}, 404, None),
    ("/v1/tables/nowhere/revisions", {}, 404, None),
])
def test_bad_requests_are_named(api, path, params, status, parameter):
    answer = get(api, path, **params)
    assert (answer.status_code, answer.json()["parameter"]) == (status, parameter), answer.text
    if parameter:
        assert answer.json()["detail"].startswith(f"{parameter}: ")


def test_an_unknown_parameter_is_told_the_parameters_that_apply():
    """A table with no date column (school_summary's kind) is not offered from and to, which it would refuse;
    a table that keeps no past versions (a summary but national_daily) is not offered as_of."""
    dated = catalog.clean_table(DATASETS["us_states"])
    undated = replace(dated, name="school_summary", columns=tuple(c for c in dated.columns if c.name != "date"))
    for table, offered in ((dated, True), (undated, False)):
        with pytest.raises(BadParameter) as error:
            page_request(table, [("school", "X")], None, None, None, None, 10, as_of=offered)
        assert ("from, to" in str(error.value)) is offered, str(error.value)
        assert ("as_of" in str(error.value)) is offered, str(error.value)


def test_a_filter_value_in_another_case_names_the_tables_value(api):
    answer = get(api, "/v1/tables/county_daily", state="puerto rico", county="Ponce")
    assert (answer.status_code, answer.json()["parameter"]) == (400, "state")
    assert "'Puerto Rico'" in answer.json()["detail"]
    answer = get(api, "/v1/tables/county_daily/revisions", state="Puerto Rico", county="PONCE")
    assert (answer.status_code, answer.json()["parameter"]) == (400, "county")
    assert "'Ponce'" in answer.json()["detail"]
    # a region named as the table does not write it: state_daily names states, testing_daily writes codes
    answer = get(api, "/v1/tables/state_daily", state="OH")
    assert (answer.status_code, answer.json()["parameter"]) == (400, "state")
    assert "the table writes that region 'Ohio'" in answer.json()["detail"], answer.text
    # a county is no region of covid.regions: county=FL is no rows, not Puerto Rico's municipio Florida
    assert get(api, "/v1/tables/county_daily", county="Florida").json()["rows"]
    assert get(api, "/v1/tables/county_daily", county="FL").json()["rows"] == []
    # a value the table does not have in any case is no rows, as before; so is an empty page without filters
    assert get(api, "/v1/tables/state_daily", state="Atlantis").json()["rows"] == []
    answer = get(api, "/v1/tables/state_daily", **{"from": "2099-01-01"})
    assert (answer.status_code, answer.json()["rows"]) == (200, [])


def test_an_unencoded_plus_in_a_time_is_named(api):
    """A zone's '+' written as is in a URL reads as a space: the answer says so, and the encoded one is read."""
    answer = requests.get(f"{api}/v1/tables/state_daily?as_of=2021-03-18T00:00:00+02:00", timeout=30)
    assert (answer.status_code, answer.json()["parameter"]) == (400, "as_of")
    assert "'2021-03-18T00:00:00 02:00'" in answer.json()["detail"] and "%2B" in answer.json()["detail"]
    for other in ("yesterday", "2021-03-18 25:00"):  # not a zone's offset after the space
        assert "%2B" not in get(api, "/v1/tables/state_daily", as_of=other).json()["detail"]
    assert requests.get(f"{api}/v1/tables/state_daily?as_of=2021-03-18T00:00:00%2B02:00", timeout=30).ok


def test_a_cursor_of_another_table_is_refused(api):
    cursor = get(api, "/v1/tables/national_daily", limit=1).json()["next_cursor"]
    answer = get(api, "/v1/tables/state_daily", cursor=cursor)
    assert (answer.status_code, answer.json()["parameter"]) == (400, "cursor")


def test_datasets_describe_tables_columns_and_freshness(api):
    answer = get(api, "/v1/datasets").json()["datasets"]
    assert [d["name"] for d in answer] == list(DATASETS)
    states = answer[0]
    assert states["freshness"]["stale"] is False and states["freshness"]["freshness_hours"] == 26
    clean, national = states["tables"]
    assert (clean["name"], clean["kind"], clean["key"], clean["filters"], clean["built"]) == (
        "state_daily", "clean", ["state", "date"], ["state"], True)
    columns = {c["name"]: c for c in clean["columns"]}
    assert list(columns) == [*STATE_COLUMNS, "file_id", "state_fips", "state_name"]
    assert (columns["deaths"]["nullable"], columns["cases"]["nullable"], columns["new_deaths_7d"]["nullable"]) == (
        True, False, True)
    # cases is never empty here, deaths may be
    assert columns["new_cases"]["description"].startswith("Daily difference: cases minus cases on the region's")
    assert columns["new_deaths"]["description"].startswith("Daily difference: null where deaths is; otherwise")
    assert (national["name"], national["kind"], national["key"], national["built"]) == (
        "national_daily", "summary", ["date"], True)
    assert national["description"].startswith("covid.national_daily: one row per date")
    assert [(c["name"], c["type"]) for c in national["columns"][:2]] == [("date", "date"), ("cases", "bigint")]

    testing = answer[2]
    assert testing["freshness"] == {"last_load": None, "freshness_hours": 26, "stale": True}
    assert [(t["name"], t["built"]) for t in testing["tables"]] == [
        ("testing_daily", False), ("testing_state_summary", False), ("testing_outcome_totals", False)]
    assert get(api, "/v1/tables/testing_daily").json()["rows"] == []  # declared, nothing loaded: no rows


def test_health_names_each_dataset_last_load(api, loaded):
    answer = get(api, "/health")
    assert answer.status_code == 200
    loads = {d["dataset"]: d["last_load"] for d in answer.json()["datasets"]}
    assert list(loads) == list(DATASETS)
    with psycopg2.connect(loaded) as conn, conn.cursor() as cur:
        cur.execute("SELECT max(processed_at) FROM covid.ingested_files WHERE dataset = 'us_states'")
        assert pd.Timestamp(loads["us_states"]) == pd.Timestamp(cur.fetchone()[0])
    assert loads["covidtracking"] is None


def test_503_when_the_database_is_down():
    closed = f"postgresql://postgres@127.0.0.1:{_free_port()}/covid"
    with serving(create_app(closed, read_url_env="COVID_API_TEST_UNSET")) as base:
        started = time.monotonic()
        for path in ("/health", "/v1/datasets", "/v1/tables/state_daily"):
            answer = get(base, path)
            assert (answer.status_code, answer.headers.get("retry-after")) == (503, "5"), (path, answer.text)
            assert answer.json()["detail"] == "the warehouse is not reachable" and "127.0.0.1" not in answer.text
        assert time.monotonic() - started < 10
        assert get(base, "/v1/tables/no_such_table").status_code == 404  # known without the database
        assert get(base, "/openapi.json").status_code == 200


def test_the_command_serves_through_database_read_url(loaded, api):
    """`covid-platform api` as deployed: DATABASE_READ_URL (the reader login) wins over DATABASE_URL, which
    here points nowhere."""
    port = _free_port()
    env = {**os.environ, "DATABASE_READ_URL": os.environ[READ_URL_ENV], "DATABASE_URL": "postgresql://x@127.0.0.1:1/x"}
    server = subprocess.Popen([sys.executable, "-m", "covid_platform.cli", "api", "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/v1/tables/national_daily?limit=5", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert answer.status_code == 200 and len(answer.json()["rows"]) == 5
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(30) == 0


def test_openapi_and_docs_are_served(api):
    schema = get(api, "/openapi.json").json()
    assert set(schema["paths"]) == {"/health", "/v1/datasets", "/v1/tables/{table}", "/v1/tables/{table}/revisions"}
    table = schema["paths"]["/v1/tables/{table}"]["get"]
    assert set(table["responses"]) == {"200", "400", "404", "503"}
    assert "state_daily" in table["parameters"][0]["schema"]["enum"]
    assert get(api, "/docs").status_code == 200


def test_no_request_gets_a_server_error(api):
    """Schemathesis' requests, valid and invalid by the API's own description, over HTTP, with every check it
    has (no 5xx; status codes, content types, headers and bodies as described; invalid input refused) but
    one: that every schema-valid request is accepted. Whether a column name, a filter or a cursor is valid
    depends on the table, which one generic operation's schema cannot say (/v1/datasets does); those are
    400s. schemathesis.pytest's lazy fixture does not run under pytest 9: hence one Hypothesis test."""
    schema = schemathesis.openapi.from_url(f"{api}/openapi.json")
    cases = strategies.one_of(*(schema.as_strategy(mode) for mode in schemathesis.GenerationMode))

    @hypothesis.given(case=cases)
    @hypothesis.settings(max_examples=300, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck))
    def every_case(case):
        case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])

    every_case()


# --- vintages: as_of and revisions (the as-of values against real vintages: test_vintages.py) -------------


def issued_at(loaded: str, key: str):
    with psycopg2.connect(loaded) as conn, conn.cursor() as cur:
        cur.execute("SELECT issued_at FROM covid.ingested_files WHERE key = %s", (key,))
        return cur.fetchone()[0]


def test_as_of_after_the_load_is_the_table_and_before_it_empty(api, loaded):
    issued = issued_at(loaded, "us_states/summer.csv")
    params = {"state": ["Ohio", "Texas"], "from": "2020-07-01", "limit": 50}
    current, _ = walk(api, "/v1/tables/state_daily", **params)
    then, pages = walk(api, "/v1/tables/state_daily", as_of=issued.isoformat(), **params)
    assert then == current and pages > 1  # the cursor pages the as-of table too
    before = (issued - dt.timedelta(seconds=1)).astimezone(dt.timezone(dt.timedelta(hours=-5)))
    assert get(api, "/v1/tables/state_daily", as_of=before.isoformat(), **params).json()["rows"] == []
    national = get(api, "/v1/tables/national_daily", as_of=issued.isoformat(), limit=10000).json()
    assert national["rows"] == get(api, "/v1/tables/national_daily", limit=10000).json()["rows"]
    # a date alone is the end of that day, UTC: the day of the load has it, the day before does not
    day = issued.astimezone(dt.timezone.utc).date()
    csv_page = get(api, "/v1/tables/county_daily", as_of=day.isoformat(), format="csv", state="Delaware",
                   limit=10000)
    assert csv_page.status_code == 200
    assert csv_page.text == get(api, "/v1/tables/county_daily", format="csv", state="Delaware", limit=10000).text
    day_before = (day - dt.timedelta(days=1)).isoformat()
    assert get(api, "/v1/tables/state_daily", as_of=day_before, **params).json()["rows"] == []


def test_revisions_serve_history_rows_filtered_and_paged(api, loaded):
    rows, pages = walk(api, "/v1/tables/state_daily/revisions", state="Ohio", limit=40)
    expected = expected_states()
    assert len(rows) == (expected.state == "Ohio").sum() and pages == -(-len(rows) // 40)
    assert {"state", "fips", "date", "cases", "deaths", "file_id", "issued_at"} <= set(rows[0])
    assert not {"new_cases", "new_cases_7d"} & set(rows[0])  # versions of what files report, not derived
    issued = issued_at(loaded, "us_states/summer.csv")
    assert {dt.datetime.fromisoformat(row["issued_at"]) for row in rows} == {issued}
    before = (issued - dt.timedelta(seconds=1)).isoformat()
    assert get(api, "/v1/tables/state_daily/revisions", state="Ohio", as_of=before).json()["rows"] == []
    answer = get(api, "/v1/tables/state_daily/revisions", state="Ohio", columns="date,cases", format="csv",
                 **{"from": "2020-08-01", "to": "2020-08-02"})
    assert answer.text.splitlines()[0] == "date,cases" and len(answer.text.splitlines()) == 3
    # times in CSV as in JSON: ISO 8601
    answer = get(api, "/v1/tables/state_daily/revisions", state="Ohio", columns="issued_at", format="csv", limit=1)
    assert answer.text.splitlines()[1] == rows[0]["issued_at"]
