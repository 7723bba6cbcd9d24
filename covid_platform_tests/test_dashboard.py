"""The dashboard against a real database holding real slices loaded through the platform: each page's numbers
against pandas computations from the same slice (streamlit.testing.v1.AppTest runs the pages in-process),
each page without data, and once the whole app as `covid-platform dashboard` in headless Chromium."""

import datetime as dt
import io
import os
import re
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlparse
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import vl_convert
from playwright.sync_api import sync_playwright
from streamlit.testing.v1 import AppTest

from covid_platform.dashboard import charts, queries, view
from covid_platform.datasets import DATASETS
from covid_platform_tests.conftest import _free_port
from covid_platform_tests.helpers import (
    COVIDTRACKING,
    REPO,
    TEST_DATA,
    county_rows,
    dev_env,
    drop,
    ingest,
    nyt_states_slice,
    stop_dev,
)
from covid_platform_tests.oracles import (
    expected_testing_daily,
    read_covidtracking,
    read_nyt,
    with_differences,
    with_rolling_7d,
)

APP = REPO / "covid_platform" / "dashboard" / "app.py"
PAGES = ("national", "states", "counties", "schools", "status")
CPS = TEST_DATA / "cps" / "allCpsCovidData_2021-03-28.csv"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "screenshots"


@pytest.fixture
def dashboard(database_url, monkeypatch):
    """Opens a page of the app (AppTest) on the test database; fails on any exception the page raised."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("DATABASE_READ_URL", raising=False)

    def open_page(page: str) -> AppTest:
        app = AppTest.from_file(str(APP), default_timeout=60).run()
        if page != "national":
            app.switch_page(f"pages/{page}.py").run()
        assert [e.value for e in app.exception] == []
        return app

    return open_page


@pytest.fixture
def load(landing, resources):
    """Drops each (key, bytes) and ingests it as the sensor's run would; returns whether each run succeeded."""

    def run(*files: tuple[str, bytes]) -> list[bool]:
        with dg.instance_for_test() as instance:
            return [ingest(landing, resources, drop(landing, key, body), instance).success for key, body in files]

    return run


def metric(app: AppTest, label: str) -> str:
    (found,) = [m for m in app.metric if m.label == label]
    return found.value


def whole(value: float) -> str:
    return f"{value:z,.0f}"


def national_expected(data: bytes) -> pd.DataFrame:
    """Cases and deaths summed per date over the states, their differences and 7-day averages."""
    totals = read_nyt(data).groupby("date", as_index=False)[["cases", "deaths"]].sum().assign(region="US")
    totals = with_differences(totals, {"cases": "new_cases", "deaths": "new_deaths"}, region=("region",))
    return with_rolling_7d(totals, ["new_cases", "new_deaths"], region=("region",))


# --- no data ---------------------------------------------------------------------------------------------


def test_every_page_says_it_has_no_data_yet(dashboard):
    """A database the platform never wrote to: not even the ledger exists."""
    for page in PAGES:
        app = dashboard(page)
        (notice,) = app.info
        assert "No data yet" in notice.value or "No file has been loaded yet" in notice.value, page
        assert len(app.get("vega_lite_chart")) == 0, page
    status = app.dataframe[0].value
    assert status["dataset"].tolist() == list(DATASETS)
    assert set(status["state"]) == {"never loaded"}


def test_the_read_url_is_the_one_used(dashboard, monkeypatch, database_url):
    monkeypatch.setenv("DATABASE_READ_URL", database_url.rsplit("/", 1)[0] + "/covid_no_such_database")
    (error,) = dashboard("national").error
    assert "cannot be reached" in error.value and "covid_no_such_database" in error.value


# --- pages with data -------------------------------------------------------------------------------------


def test_national_page_latest_date_and_7_day_averages(dashboard, load):
    data = nyt_states_slice("2020-11-01", "2021-01-31")
    assert load(("us_states/2021-01-31.csv", data)) == [True]
    expected = national_expected(data)
    latest, week_before = expected.iloc[-1], expected.iloc[-8]

    app = dashboard("national")
    assert metric(app, "Latest date") == "2021-01-31"
    assert metric(app, "New cases, 7-day average") == whole(latest["new_cases_7d"])
    assert metric(app, "New deaths, 7-day average") == whole(latest["new_deaths_7d"])
    assert metric(app, "Cases to date") == whole(latest["cases"])
    (cases_7d,) = [m for m in app.metric if m.label == "New cases, 7-day average"]
    assert cases_7d.delta == whole(latest["new_cases_7d"] - week_before["new_cases_7d"])
    assert len(app.get("vega_lite_chart")) == 2

    shown = app.dataframe[0].value.iloc[::-1].reset_index(drop=True)  # newest first on the page
    np.testing.assert_allclose(shown["new_cases_7d"], expected["new_cases_7d"], rtol=1e-9)
    assert shown["date"].tolist() == expected["date"].tolist()
    (download,) = app.get("download_button")
    assert download.label == f"Download national_daily.csv ({len(expected)} rows)"


def test_a_new_load_shows_at_once(dashboard, load):
    assert load(("us_states/a.csv", nyt_states_slice("2020-11-01", "2020-11-30"))) == [True]
    app = dashboard("national")
    assert metric(app, "Latest date") == "2020-11-30"
    assert load(("us_states/b.csv", nyt_states_slice("2020-12-01", "2020-12-10"))) == [True]
    queries.latest_load.clear()  # as its LEDGER_TTL (seconds) passing would: the page's queries stay cached
    assert metric(app.run(), "Latest date") == "2020-12-10"


def new_york_spring() -> tuple[bytes, pd.DataFrame]:
    """The test data's NY rows of the COVID Tracking Project (2020-03-20 to 05-20), and its positives and
    deaths as a us_states file, so both tables cover the same dates; the expected 7-day positivity."""
    tracking = pd.read_csv(COVIDTRACKING, parse_dates=["date"])
    ny = tracking[tracking["state"] == "NY"].sort_values("date").reset_index(drop=True)
    positivity = expected_testing_daily(read_covidtracking(COVIDTRACKING.read_bytes()))
    positivity = positivity[positivity["state"] == "NY"]
    states = pd.DataFrame({"date": ny["date"].dt.strftime("%Y-%m-%d"), "state": "New York", "fips": "36",
                           "cases": ny["positive"].astype(int), "deaths": ny["death"].astype(int)})
    return states.to_csv(index=False).encode(), positivity[["date", "positivity_7d"]]


def test_state_explorer_with_test_positivity(dashboard, load):
    states, positivity = new_york_spring()
    tracking = COVIDTRACKING.read_bytes()
    ohio = nyt_states_slice("2020-11-01", "2020-11-30", {"Ohio"})
    assert load(("us_states/ny.csv", states), ("us_states/ohio.csv", ohio),
                ("covidtracking/all-states-history.csv", tracking)) == [True, True, True]
    expected = with_rolling_7d(with_differences(
        read_nyt(states), {"cases": "new_cases", "deaths": "new_deaths"}), ["new_cases", "new_deaths"])
    first, last = dt.date(2020, 4, 1), dt.date(2020, 5, 20)
    expected = expected[expected["date"].between(pd.Timestamp(first), pd.Timestamp(last))].reset_index(drop=True)
    latest = expected.iloc[-1]

    app = dashboard("states")
    assert app.selectbox(key="state").value == "New York"
    app.date_input(key="dates").set_value((first, last)).run()
    assert metric(app, "Latest date") == "2020-05-20"
    assert metric(app, "New cases, 7-day average") == whole(latest["new_cases_7d"])
    assert metric(app, "New deaths, 7-day average") == whole(latest["new_deaths_7d"])
    assert metric(app, "Deaths to date") == whole(latest["deaths"])
    assert len(app.get("vega_lite_chart")) == 3  # cases, deaths, positivity

    shown = app.dataframe[0].value.iloc[::-1].reset_index(drop=True)
    assert shown["date"].tolist() == expected["date"].tolist()
    np.testing.assert_allclose(shown["new_cases_7d"], expected["new_cases_7d"], rtol=1e-9)
    wanted = expected[["date"]].merge(positivity, on="date", how="left")
    np.testing.assert_allclose(shown["positivity_7d"], wanted["positivity_7d"], rtol=1e-9)
    assert not any("series' first date" in caption.value for caption in app.caption)

    # a range of 3 days: the change since the average a week before still reads the days before the range
    app.date_input(key="dates").set_value((last - dt.timedelta(days=2), last)).run()
    (cases_7d,) = [m for m in app.metric if m.label == "New cases, 7-day average"]
    week_before = expected[expected["date"] == pd.Timestamp(last - dt.timedelta(days=7))].iloc[0]
    assert cases_7d.delta == whole(latest["new_cases_7d"] - week_before["new_cases_7d"])
    assert len(app.dataframe[0].value) == 3
    app.date_input(key="dates").set_value((first, last)).run()

    # from the series' first date: its first week has no positivity (no report 7 days before)
    app.date_input(key="dates").set_value((dt.date(2020, 3, 20), last)).run()
    shown = app.dataframe[0].value.iloc[::-1].reset_index(drop=True)
    first_valid = positivity.loc[positivity["positivity_7d"].notna(), "date"].min()
    assert shown.loc[shown["positivity_7d"].first_valid_index(), "date"] == first_valid
    assert shown["positivity_7d"].notna().sum() == positivity["positivity_7d"].notna().sum()

    app.selectbox(key="state").set_value("Ohio").run()
    assert any("No test positivity for Ohio" in notice.value for notice in app.info)
    assert len(app.get("vega_lite_chart")) == 2


def test_another_state_shows_its_own_latest_days(dashboard, load):
    """New York to 2020-11-20, Ohio to 2020-11-30: picking Ohio after New York shows Ohio's days to its latest,
    not New York's range (which lies within Ohio's dates)."""
    assert load(("us_states/ny.csv", nyt_states_slice("2020-11-01", "2020-11-20", {"New York"})),
                ("us_states/ohio.csv", nyt_states_slice("2020-11-01", "2020-11-30", {"Ohio"}))) == [True, True]
    app = dashboard("states")
    assert app.selectbox(key="state").value == "New York" and metric(app, "Latest date") == "2020-11-20"
    app.selectbox(key="state").set_value("Ohio").run()
    assert metric(app, "Latest date") == "2020-11-30"
    assert app.date_input(key="dates").value == (dt.date(2020, 11, 1), dt.date(2020, 11, 30))
    app.date_input(key="dates").set_value((dt.date(2020, 11, 5), dt.date(2020, 11, 9))).run()  # kept while Ohio
    assert metric(app, "Latest date") == "2020-11-09"
    # another page, then this one again (Streamlit forgets the widgets' values), from New York and from Ohio
    for state in ("New York", "Ohio"):
        app.selectbox(key="state").set_value(state).run()
        app.switch_page("pages/national.py").run()
        app.switch_page("pages/states.py").run()
        assert [e.value for e in app.exception] == []
        assert metric(app, "Latest date") == "2020-11-20"  # the page opens on New York


def test_a_count_not_reported_on_the_latest_date_and_whole_numbers_around_empty_ones(dashboard, load, monkeypatch,
                                                                                     database_url):
    """Ohio's deaths left empty on two dates, the latest among them: the figure is the latest value reported,
    labelled with its date; the table's counts stay whole numbers (its CSV download: no "94518.0")."""
    frame = pd.read_csv(io.BytesIO(nyt_states_slice("2020-11-01", "2020-11-30", {"Ohio"})), dtype={"fips": str})
    frame["deaths"] = frame["deaths"].astype("Int64")
    frame.loc[frame["date"].isin(["2020-11-20", "2020-11-30"]), "deaths"] = pd.NA
    assert load(("us_states/ohio.csv", frame.to_csv(index=False).encode())) == [True]

    app = dashboard("states")
    assert app.selectbox(key="state").value == "Ohio"
    assert metric(app, "Cases to date") == whole(frame["cases"].iloc[-1])
    reported = frame[frame["date"] == "2020-11-29"]["deaths"].iloc[0]
    assert metric(app, "Deaths to date (reported 2020-11-29)") == whole(reported)

    monkeypatch.setenv("DATABASE_URL", database_url)
    read = queries.read("state_daily", state="Ohio", first=dt.date(2020, 11, 1), last=dt.date(2020, 11, 30))
    assert read["deaths"].isna().sum() == 2 and str(read["deaths"].dtype) == "Int64"
    assert read["deaths"].dropna().tolist() == frame["deaths"].dropna().tolist()
    written = pd.read_csv(io.StringIO(read.to_csv(index=False)), dtype=str)  # what the download offers
    for column in ("cases", "deaths", "new_cases", "new_deaths"):
        assert written[column].dropna().str.fullmatch(r"-?\d+").all(), written[column].tolist()


def test_positivity_of_every_test_positive_says_negatives_were_not_reported(dashboard, load):
    """Puerto Rico's negative results stopped in May 2020: from then on its positivity is 100%, which the page
    says is not a measured positivity, naming how many of the days shown are so."""
    tracking = COVIDTRACKING.read_bytes()
    rows = pd.read_csv(COVIDTRACKING).query("state == 'PR' and positive.notna()")
    states = pd.DataFrame({"date": rows["date"], "state": "Puerto Rico", "fips": "72",
                           "cases": rows["positive"].astype(int), "deaths": rows["death"].astype("Int64")})
    assert load(("us_states/pr.csv", states.to_csv(index=False).encode()),
                ("covidtracking/all-states-history.csv", tracking)) == [True, True]
    expected = expected_testing_daily(read_covidtracking(tracking))
    shown = expected[(expected["state"] == "PR") & expected["date"].between("2020-04-15", "2020-05-20")]
    all_positive = int((shown["positivity_7d"] == 1).sum())
    above = int((shown["positivity_7d"] > 1).sum())  # positives rose more than tests: not 100%
    assert 0 < all_positive < shown["positivity_7d"].notna().sum()
    app = dashboard("states")
    app.date_input(key="dates").set_value((dt.date(2020, 4, 15), dt.date(2020, 5, 20))).run()
    captions = " ".join(caption.value for caption in app.caption)
    assert f"On {all_positive} of these days every test counted was a positive" in captions
    assert (f"On {above} of these days positive results rose more than test results" in captions) == bool(above)


def test_a_change_that_rounds_to_zero_reads_0_without_a_sign(dashboard, load):
    """Puerto Rico's 7-day average of new deaths on 2020-12-10 (11.86) against a week before (12.29): -0.43,
    shown as 0, grey and without an arrow, not as a fall of "-0"."""
    assert load(("us_states/pr.csv", nyt_states_slice("2020-11-01", "2020-12-10", {"Puerto Rico"}))) == [True]
    app = dashboard("states")
    app.date_input(key="dates").set_value((dt.date(2020, 11, 20), dt.date(2020, 12, 10))).run()
    (deaths_7d,) = [m for m in app.metric if m.label == "New deaths, 7-day average"]
    assert deaths_7d.delta == "0"
    assert deaths_7d.proto.direction == deaths_7d.proto.MetricDirection.NONE

    shown = [view.number(v) for v in (-0.43, -0.5, 0.49, -0.51, -1234567.8)]
    assert shown == ["0", "0", "0", "-1", "-1,234,568"]
    assert view.number(-0.04, decimals=1) == "0.0"
    assert view.change(11.857, 12.286) == "0"
    assert view.change(3.0, 1.2) == "2" and view.change(1.0, 3.0) == "-2"
    # a missing average (deaths not reported for a week) has no change, not a "–" with an arrow
    assert view.change(float("nan"), 3.0) is None and view.change(3.0, None) is None


@pytest.mark.parametrize("days", [2, 3, 8, 15, 16, 19, 30, 180])
def test_a_chart_labels_each_date_once(days):
    """Drawn as Vega draws it (to SVG), at a narrow and a wide width: a short range is not ticked every few
    hours with each tick labelled by its date, and every day of it is labelled where there is room."""
    frame = pd.DataFrame({"date": pd.date_range("2020-05-18", periods=days), "new_cases": range(days)})
    frame["new_cases_7d"] = frame["new_cases"].rolling(7, min_periods=1).mean()
    for width in (300, 1600):
        for chart in (charts.daily(frame, "new_cases", "New cases"),
                      charts.over_time(frame, "new_cases", "New cases", "people", ",.0f")):
            svg = vl_convert.vegalite_to_svg(chart.properties(width=width).to_dict())
            labels = re.findall(r"<text[^>]*>(\w{3} \d\d, \d{4})</text>", svg)
            assert labels and len(labels) == len(set(labels)), (width, labels)
            if days <= 3:
                assert len(labels) == days


def test_counties_top_20_and_one_states_counties(dashboard, load):
    """On 2020-04-01, Connecticut's "Unassigned" has no row on one of the 7 days before (it first appears within
    them): its 7-day average is not one of new cases per day, so it is not ranked, though its value would be."""
    data = county_rows("2020-03-22", "2020-05-25")
    assert load(("us_counties/spring.csv", data)) == [True]
    frame = with_differences(read_nyt(data), {"cases": "new_cases", "deaths": "new_deaths"},
                             region=("state", "county"))
    frame = with_rolling_7d(frame, ["new_cases"], region=("state", "county"))
    keys = set(zip(frame["state"], frame["county"], frame["date"]))
    frame["whole_week"] = [all((state, county, date - pd.Timedelta(days=k)) in keys for k in range(1, 8))
                           for state, county, date in zip(frame["state"], frame["county"], frame["date"])]
    day = frame[frame["date"] == pd.Timestamp("2020-04-01")]
    expected_top = day[day["whole_week"]].nlargest(20, "new_cases_7d")
    unranked = day.nlargest(20, "new_cases_7d")
    assert ("Connecticut", "Unassigned") in set(zip(unranked["state"], unranked["county"]))

    app = dashboard("counties")
    assert app.date_input(key="date").value == dt.date(2020, 5, 25)  # the latest date
    app.date_input(key="date").set_value(dt.date(2020, 4, 1)).run()
    top = app.dataframe[0].value
    # ties may come in either order: the values in order, and each county with its own value
    np.testing.assert_allclose(top["new_cases_7d"], expected_top["new_cases_7d"], rtol=1e-9)
    values = day.set_index(["state", "county"])["new_cases_7d"]
    np.testing.assert_allclose(values.loc[list(zip(top["state"], top["county"]))], top["new_cases_7d"])
    assert ("Connecticut", "Unassigned") not in set(zip(top["state"], top["county"]))

    app.selectbox(key="county_state").set_value("Connecticut").run()
    shown = app.dataframe[1].value.set_index("county").sort_index()
    expected = day[day["state"] == "Connecticut"].set_index("county").sort_index()
    pd.testing.assert_series_equal(shown["new_cases_7d"], expected["new_cases_7d"], check_names=False)
    assert shown["whole_week"].tolist() == expected["whole_week"].tolist()
    assert not shown.loc["Unassigned", "whole_week"]
    assert len(app.get("vega_lite_chart")) == 2
    whole = f"({expected['whole_week'].sum()} of {len(expected)}; "
    assert 0 < expected["whole_week"].sum() < len(expected)
    assert any(whole in caption.value for caption in app.caption), whole


def test_schools_cases_by_school_and_week(dashboard, load):
    assert load(("cps_schools/2021-03-28.csv", CPS.read_bytes())) == [True]
    source = pd.read_csv(CPS, dtype={"CPS_School_ID": str})
    dates = [c for c in source.columns if c.isdigit() and len(c) == 8]
    long = source.melt(id_vars=["CPS_School_ID"], value_vars=dates, var_name="date", value_name="new_cases")
    long["date"] = pd.to_datetime(long["date"], format="%Y%m%d")
    long["week"] = long["date"] - pd.to_timedelta(long["date"].dt.day_of_week, unit="D")  # weeks start on Monday
    expected = (long.groupby(["week", "CPS_School_ID"], as_index=False)["new_cases"].sum()
                .sort_values(["week", "CPS_School_ID"]).reset_index(drop=True))

    app = dashboard("schools")
    summary, weeks = (table.value for table in app.dataframe)
    assert weeks["week"].tolist() == expected["week"].tolist()
    assert weeks["school_id"].tolist() == expected["CPS_School_ID"].tolist()
    assert weeks["new_cases"].tolist() == expected["new_cases"].tolist()
    totals = long.groupby("CPS_School_ID")["new_cases"].sum()
    assert summary["total_cases"].tolist() == sorted(totals, reverse=True)
    assert app.multiselect(key="schools").value == summary["school"].head(5).tolist()
    assert len(app.get("vega_lite_chart")) == 2


BAD_LINE = 10  # of ONE_BAD_ROW; the header is line 1
NO_DEATHS = ("us_states/no_deaths.csv", b"date,state,fips,cases\n2020-12-06,Ohio,39,100\n")  # quarantined


def one_bad_row() -> tuple[str, bytes]:
    """A real slice whose line BAD_LINE has negative cases: set aside, the other 279 rows load."""
    lines = nyt_states_slice("2020-12-01", "2020-12-05").decode().splitlines(keepends=True)
    fields = lines[BAD_LINE - 1].split(",")
    lines[BAD_LINE - 1] = ",".join([*fields[:3], "-5", *fields[4:]])
    return "us_states/one_bad_row.csv", "".join(lines).encode()


def test_data_status_counts_files_quarantines_and_rows_set_aside(dashboard, load):
    good = nyt_states_slice("2020-12-01", "2020-12-05")
    assert load(("us_states/good.csv", good), one_bad_row(), NO_DEATHS) == [True, True, False]

    app = dashboard("status")
    status = app.dataframe[0].value.set_index("dataset")
    assert status.loc["us_states", ["state", "loaded", "quarantined", "rows_set_aside"]].tolist() == \
        ["fresh", 2, 1, 1]
    assert set(status.drop(index="us_states")["state"]) == {"never loaded"}
    quarantined, rejected = app.dataframe[1].value, app.dataframe[2].value
    assert quarantined["key"].tolist() == ["us_states/no_deaths.csv"]
    assert "deaths" in quarantined["reason"].iloc[0]
    assert rejected[["key", "line"]].values.tolist() == [["us_states/one_bad_row.csv", BAD_LINE]]
    assert "cases" in rejected["reason"].iloc[0]
    # each loaded file's revisions: the second file repeats the first's values but for its row set aside
    revisions = app.dataframe[3].value.set_index("key")[["keys_added", "keys_revised", "keys_unchanged"]]
    rows = len(good.splitlines()) - 1
    assert revisions.loc["us_states/good.csv"].tolist() == [rows, 0, 0]
    assert revisions.loc["us_states/one_bad_row.csv"].tolist() == [0, 0, rows - 1]


# --- the app as a process, in a browser ------------------------------------------------------------------


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    """Until Streamlit's health endpoint (the one load balancers poll) answers "ok"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the dashboard exited with {process.returncode}"
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url}/_stcore/health did not answer ok within {timeout} s")


@pytest.fixture
def served(database_url, tmp_path):
    """`covid-platform dashboard` on a free port, on the test database; yields its base URL."""
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": database_url}
    env.pop("DATABASE_READ_URL", None)
    with open(tmp_path / "dashboard.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "covid_platform.cli", "dashboard", "--port", str(port)],
                                   cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_healthy(f"http://127.0.0.1:{port}", process)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(30)


def shows(page, text: str) -> None:
    """Waits until the page shows `text` (Streamlit renders after the page has loaded)."""
    page.get_by_text(text, exact=True).first.wait_for(timeout=30_000)


def screenshot(page, name: str) -> Path:
    """The whole page: Streamlit scrolls its main area, not the document, so the window is made as tall as
    that area before the shot."""
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(1500)  # the charts' first drawing
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": max(900, height)})
    page.wait_for_timeout(500)
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"dashboard_{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 900})
    return path


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (Debian's chromium package; .ci/run "
                                                  "installs it): the browser test drives that one, never a download")
def test_dashboard_in_a_browser(served, load, query):
    assert load(
        ("us_states/2021-01-31.csv", nyt_states_slice("2020-06-01", "2021-01-31")),
        ("covidtracking/all-states-history.csv", COVIDTRACKING.read_bytes()),
        ("us_counties/spring.csv", county_rows("2020-03-22", "2020-05-25")),
        ("cps_schools/2021-03-28.csv", CPS.read_bytes()),
        one_bad_row(), NO_DEATHS,  # for the data status page
    ) == [True] * 5 + [False]
    ((latest, average),) = query("SELECT date, new_cases_7d FROM covid.national_daily ORDER BY date DESC LIMIT 1")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        requested = []  # everything a page fetches is the dashboard's own (nothing from the internet)
        page.on("request", lambda request: requested.append(request.url))
        page.goto(served)
        shows(page, "New cases, 7-day average")
        shows(page, latest.isoformat())
        shows(page, whole(average))
        assert screenshot(page, "national").stat().st_size > 0
        for name, title in (("states", "State explorer"), ("counties", "Counties"), ("schools", "Schools"),
                            ("status", "Data status")):
            page.goto(f"{served}/{name}")
            page.get_by_role("heading", name=title, exact=True).wait_for(timeout=30_000)
            assert page.locator('[data-testid="stException"]').count() == 0, name
            assert screenshot(page, name).stat().st_size > 0
        browser.close()
    elsewhere = [url for url in requested if urlparse(url).scheme in ("http", "https", "ws", "wss")
                 and urlparse(url).hostname not in (urlparse(served).hostname, "localhost")]
    assert requested and not elsewhere, elsewhere


def test_dev_serves_the_dashboard_and_stops_it(database_url, s3_endpoint, bucket, tmp_path):
    """`covid-platform dev` starts the dashboard beside `dagster dev`, prints its URL, and stops it on exit."""
    port = _free_port()
    with open(tmp_path / "dev.log", "w") as log:
        dev = subprocess.Popen(
            [sys.executable, "-m", "covid_platform.cli", "dev", "--port", str(_free_port()),
             "--dashboard-port", str(port), "--state-dir", str(tmp_path)],
            cwd=REPO, env=dev_env(database_url, s3_endpoint, bucket, tmp_path), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}", dev, timeout=120)
            dev.terminate()  # to `covid-platform dev` alone, as `docker stop` would: it stops what it started
            dev.wait(60)
        finally:
            if dev.poll() is None:
                stop_dev(dev)
    assert f"Dashboard on http://127.0.0.1:{port}" in (tmp_path / "dev.log").read_text()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
