"""pcr_testing: the scheduled pull pages a Socrata endpoint (a real local HTTP server serving generated
pages, failing now and then) into the landing zone; the file then loads like any drop, and the four
summaries match values computed here."""

import csv
import io
import random
import threading
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import dagster as dg
import pandas as pd
import pytest

from covid_platform.assets.pulls import build_pull_schedule
from covid_platform.datasets import PCR_TESTING
from covid_platform.resources.http_source import HttpSources
from covid_platform_tests.helpers import ASSETS, ingest

COLUMNS = list(PCR_TESTING.pull.columns)
STATES = [("AL", "Alabama", "01", "Region 4"), ("VT", "Vermont", "50", "Region 1"), ("WA", "Washington", "53", "Region 10")]
OUTCOMES = ["Negative", "Positive", "Inconclusive"]


def generated_rows(seed: int = 7) -> list[list[str]]:
    """Seeded rows in the healthdata.gov layout: per state and outcome, daily new and cumulative results,
    with a few days missing (gaps) so calendar windows differ from row windows, a day no state reported, and
    an outcome one state never reported (Washington's inconclusive results)."""
    rng = random.Random(seed)
    rows = []
    for state, name, fips, region in STATES:
        for outcome in OUTCOMES:
            if (state, outcome) == ("WA", "Inconclusive"):
                continue
            total = 0
            for day in range(40):
                if rng.random() < 0.1 or day == 20:
                    continue  # a day the state (or, on day 20, every state) did not report
                new = rng.randint(0, 500 if outcome == "Negative" else 80)
                total += new
                when = (date(2021, 1, 1) + timedelta(days=day)).isoformat() + "T00:00:00.000"
                rows.append([state, name, fips, region, outcome, when, str(new), str(total)])
    return rows


@pytest.fixture
def socrata(monkeypatch):
    """A Socrata-like CSV endpoint honouring $select, $order, $limit and $offset; every third request fails
    with 503 first, to exercise retries."""
    rows = generated_rows()
    requests_seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            params = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
            requests_seen.append(params)
            if len(requests_seen) % 3 == 1:
                self.send_response(503)
                self.end_headers()
                return
            assert params["$select"].split(",") == COLUMNS and params["$order"] == ":id"
            offset, limit = int(params["$offset"]), int(params["$limit"])
            out = io.StringIO()
            writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")  # Socrata quotes every field
            writer.writerow(COLUMNS)
            writer.writerows(rows[offset: offset + limit])
            body = out.getvalue().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PCR_TESTING_URL", f"http://127.0.0.1:{server.server_port}/resource/j8mb-icvb.csv")
    yield rows, requests_seen
    server.shutdown()


def expected_tables(rows: list[list[str]]) -> dict[str, pd.DataFrame]:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["date"] = pd.to_datetime(frame["date"].str[:10])
    for column in ("new_results_reported", "total_results_reported"):
        frame[column] = frame[column].astype("int64")
    outcome_totals = (frame.groupby("overall_outcome", as_index=False)["new_results_reported"].sum()
                      .rename(columns={"new_results_reported": "results"}))
    # an outcome a state never reported is not reported (NaN), not 0
    by_state = frame.pivot_table(index="state", columns="overall_outcome", values="new_results_reported",
                                 aggfunc="sum")
    state_results = pd.DataFrame({
        "state": by_state.index,
        "positive": by_state["Positive"].values,
        "negative": by_state["Negative"].values,
        "inconclusive": by_state["Inconclusive"].values,
    })
    state_results["positivity"] = state_results["positive"] / (state_results["positive"] + state_results["negative"])
    national = frame.groupby("date")["new_results_reported"].sum()
    # the mean over the days with reports among the 7 (a day with none is not 0)
    calendar = national.asfreq("D").rolling(7, min_periods=1).mean()
    smoothed = pd.DataFrame({"date": national.index, "new_results_7d": calendar.loc[national.index].values})
    latest = frame[frame["date"] == frame.groupby("state")["date"].transform("max")]
    state_totals = (latest.groupby(["state", "date"], as_index=False)["total_results_reported"].sum()
                    .rename(columns={"total_results_reported": "total_results"}))
    return {"pcr_outcome_totals": outcome_totals, "pcr_state_results": state_results,
            "pcr_smoothed": smoothed, "pcr_state_totals": state_totals}


def test_pull_pages_with_retries_then_loads_and_summarises(socrata, landing, resources, query):
    rows, requests_seen = socrata
    resources = {**resources, "http": HttpSources(page_size=100, backoff_seconds=0.1)}
    with dg.instance_for_test() as instance:
        pulled = dg.materialize(ASSETS, selection=["pcr_testing_pull"], instance=instance, resources=resources)
        assert pulled.success
        metadata = pulled.get_asset_materialization_events()[0].materialization.metadata
        key = metadata["key"].value
        assert metadata["rows"].value == len(rows)
        assert metadata["pages"].value == len(rows) // 100 + 1
        assert [int(r["$offset"]) for r in requests_seen if r] == sorted(int(r["$offset"]) for r in requests_seen)
        assert any(requests_seen[i] == requests_seen[i + 1] for i in range(len(requests_seen) - 1))  # a retry

        assert ingest(landing, resources, key, instance).success

    assert query("SELECT count(*) FROM covid.pcr_testing_daily") == [(len(rows),)]
    for table, expected in expected_tables(rows).items():
        columns = list(expected.columns)
        actual = pd.DataFrame(query(f"SELECT {', '.join(columns)} FROM covid.{table} ORDER BY 1, 2"), columns=columns)
        if "date" in actual:
            actual["date"] = pd.to_datetime(actual["date"])
        expected = expected.sort_values(columns[:2]).reset_index(drop=True)
        pd.testing.assert_frame_equal(actual, expected, check_dtype=False, check_exact=False)


def test_the_schedule_is_off_unless_turned_on(monkeypatch):
    """As every pull's: a fresh `covid-platform dev`, a CI job or a test never calls healthdata.gov by itself.
    PCR_TESTING_URL (a mirror, or the public endpoint itself) or COVID_PULLS=on turns it on."""
    for variable in ("PCR_TESTING_URL", "COVID_PULLS"):
        monkeypatch.delenv(variable, raising=False)
    schedule = build_pull_schedule(PCR_TESTING)
    assert schedule.name == "pcr_testing_daily_pull"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    monkeypatch.setenv("COVID_PULLS", "on")
    assert build_pull_schedule(PCR_TESTING).default_status == dg.DefaultScheduleStatus.RUNNING
    monkeypatch.delenv("COVID_PULLS")
    monkeypatch.setenv("PCR_TESTING_URL", "https://healthdata.gov/resource/j8mb-icvb.csv")
    assert build_pull_schedule(PCR_TESTING).default_status == dg.DefaultScheduleStatus.RUNNING


def test_a_server_that_keeps_failing_fails_the_pull(monkeypatch, resources):
    monkeypatch.setenv("PCR_TESTING_URL", "http://127.0.0.1:9/nothing-listens-here.csv")
    resources = {**resources, "http": HttpSources(max_retries=1, backoff_seconds=0.1, timeout_seconds=2)}
    with dg.instance_for_test() as instance:
        result = dg.materialize(ASSETS, selection=["pcr_testing_pull"], instance=instance, resources=resources,
                                raise_on_error=False)
    assert not result.success
