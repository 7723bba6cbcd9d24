"""The daily report (tracker issue 11): real slices loaded through the platform, the page's figures against
values computed independently with pandas from the same slices, its keys, what changed between reports,
the notice to readers (a real local webhook), and a report with nothing loaded yet."""

import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from dagster_aws.s3 import S3Resource

from covid_platform.assets.report import LOCK, daily_report
from covid_platform.report.changes import compare
from covid_platform.report.page import ABOVE_ALL, ALL_POSITIVE, _spans
from covid_platform.resources.landing import LandingZone
from covid_platform.resources.notifier import Notifier
from covid_platform.resources.warehouse import Warehouse
from covid_platform_tests.helpers import (
    COVIDTRACKING,
    REPO,
    covidtracking_slice,
    drop,
    ingest,
    nyt_states_slice,
    spring_row,
)
from covid_platform_tests.oracles import (
    expected_state_summary,
    expected_testing_daily,
    read_covidtracking,
    national_totals,
    read_nyt,
    reported_by_all,
    with_differences,
    with_rolling_7d,
)

REPORTS = "drops/_reports/"  # REPORTS_URL unset: <LANDING_URL>/_reports (LANDING_URL: s3://<bucket>/drops)
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "screenshots"


@pytest.fixture
def notices(webhook, monkeypatch):
    """The alert tests' local webhook server as the reports' destination; no alert destination, no SNS."""
    monkeypatch.setenv("REPORT_WEBHOOK_URL", os.environ["ALERT_WEBHOOK_URL"])
    for name in ("ALERT_WEBHOOK_URL", "ALERT_SNS_TOPIC_ARN", "REPORT_SNS_TOPIC_ARN", "REPORTS_URL",
                 "REPORTS_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    return webhook


# --- independent figures --------------------------------------------------------------------------------


def expected_states(states: pd.DataFrame) -> pd.DataFrame:
    frame = with_differences(states, {"cases": "new_cases", "deaths": "new_deaths"})
    return with_rolling_7d(frame, ["new_cases", "new_deaths"])


def expected_national(states: pd.DataFrame) -> pd.DataFrame:
    """The national totals (`oracles.national_totals`), then the same differences and averages as one region."""
    totals = national_totals(states)[["date", "cases", "deaths"]]
    totals["nation"] = "US"
    return expected_states(totals.rename(columns={"nation": "state"}))


def top_states(states: pd.DataFrame, n: int = 10) -> list[tuple[str, float]]:
    frame = expected_states(states)  # on the national series' latest date
    latest = frame[frame["date"] == reported_by_all(states)["date"].max()].dropna(subset=["new_cases_7d"])
    latest = latest.sort_values(["new_cases_7d", "state"], ascending=[False, True]).head(n)
    return list(zip(latest["state"], latest["new_cases_7d"]))


# --- reading the page -----------------------------------------------------------------------------------


def figure(page: str, name: str) -> str:
    (value,) = re.findall(rf'<div class="value" id="{name}">([^<]*)</div>', page)
    return value


def section(page: str, heading: str) -> str:
    start = page.index(heading)
    end = page.find("<h2>", start + 1)
    return page[start:end if end > 0 else None]


def rows(html_part: str) -> list[list[str]]:
    """The cells of every body row of the tables in `html_part`."""
    return [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in re.findall(r"<tr>(<td.*?)</tr>", html_part)]


def number(value: float) -> str:
    return f"{value:,.0f}"


def assert_self_contained(page: str, images: int) -> None:
    """Nothing fetched: no script, no stylesheet or font link, no URL in styles; every image (`images` of
    them) a data URI and every link relative (the report's own pages)."""
    assert not re.search(r"<script|<link|<iframe|<object|<embed|@import|url\(", page, re.I)
    sources = re.findall(r'\bsrc="([^"]*)"', page)
    assert len(sources) == images and all(s.startswith("data:image/svg+xml;base64,") for s in sources)
    links = re.findall(r'\bhref="([^"]*)"', page)
    assert links and all("://" not in link and not link.startswith("//") for link in links), links
    for source in sources:  # the charts themselves fetch nothing either
        svg = base64.b64decode(source.split(",", 1)[1]).decode()
        assert not re.search(r'(?:href|src)="(?!#)', svg) and "@import" not in svg and "url(http" not in svg


def s3_text(s3_client, bucket: str, key: str) -> str:
    return s3_client.get_object(Bucket=bucket, Key=REPORTS + key)["Body"].read().decode()


def report_keys(s3_client, bucket: str) -> dict[str, str]:
    """key → ETag of every object under the reports' prefix."""
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=REPORTS).get("Contents", [])
    return {item["Key"][len(REPORTS):]: item["ETag"] for item in listed}


def report_events(result):
    """The report's materializations in the run: (those that published a page, those that found the figures
    unchanged and published nothing)."""
    events = [e.materialization for e in result.get_asset_materialization_events()
              if e.asset_key == daily_report.key]
    published = [m for m in events if m.metadata["published"].value]
    return published, [m for m in events if not m.metadata["published"].value]


def screenshot(page: Path, name: str) -> Path | None:
    """The page as headless Chromium draws it, into the git-ignored screenshots/ (when Chromium exists)."""
    if not CHROMIUM.exists():
        return None
    SCREENSHOTS.mkdir(exist_ok=True)
    out = SCREENSHOTS / name
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={out}",
                    "--window-size=1200,2000", "--hide-scrollbars", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return out


# --- tests ----------------------------------------------------------------------------------------------


def test_a_load_publishes_a_self_contained_report_whose_figures_match(landing, resources, notices, s3_client,
                                                                       bucket):
    data = nyt_states_slice("2021-01-01", "2021-01-31")
    with dg.instance_for_test() as instance:
        key = drop(landing, "us_states/jan.csv", data)
        result = ingest(landing, resources, key, instance)
    assert result.success
    (materialization,), observed = report_events(result)
    assert observed == []

    assert set(report_keys(s3_client, bucket)) == {
        "daily/2021-01-31/index.html", "daily/2021-01-31/figures.json",
        "latest/index.html", "latest/figures.json",
    }
    page = s3_text(s3_client, bucket, "daily/2021-01-31/index.html")
    assert_self_contained(page, images=3)
    assert s3_client.head_object(Bucket=bucket, Key=f"{REPORTS}latest/index.html")["ContentType"].startswith(
        "text/html")

    states = read_nyt(data)
    national = expected_national(states).iloc[-1]
    assert national["date"] == pd.Timestamp("2021-01-31")
    for name, page_copy in (("daily", page), ("latest", s3_text(s3_client, bucket, "latest/index.html"))):
        assert figure(page_copy, "latest_date") == "2021-01-31", name
        assert figure(page_copy, "new_cases_7d") == number(national["new_cases_7d"]), name
        assert figure(page_copy, "new_deaths_7d") == number(national["new_deaths_7d"]), name
        assert figure(page_copy, "new_cases") == number(national["new_cases"]), name
        assert figure(page_copy, "cases") == number(national["cases"]), name
        assert figure(page_copy, "deaths") == number(national["deaths"]), name

    expected_top = top_states(states)
    shown = rows(section(page, "states with the most new cases"))
    assert [(cells[0], cells[1]) for cells in shown] == [(state, number(avg)) for state, avg in expected_top]
    assert "No testing data" in section(page, "Test positivity")
    assert "The first report" in section(page, "What changed")
    status = {cells[0]: cells for cells in rows(section(page, "Data status"))}
    assert status["us_states"][2:7] == ["1", "0", "0", number(len(states)), "0"]
    assert status["us_counties"][1:3] == ["never loaded", "0"]

    metadata = materialization.metadata
    assert metadata["latest_date"].value == "2021-01-31"
    assert metadata["new_cases_7d"].value == pytest.approx(national["new_cases_7d"])
    assert metadata["new_deaths_7d"].value == pytest.approx(national["new_deaths_7d"])
    assert metadata["page_key"].value == "daily/2021-01-31/index.html"
    assert metadata["report"].value == f"s3://{bucket}/{REPORTS}daily/2021-01-31/index.html"
    assert re.fullmatch(r"!\[[^]]+\]\(data:image/svg\+xml;base64,[A-Za-z0-9+/=]+\)", metadata["chart"].value)

    (notice,) = notices
    lines = notice["text"].split("\n")
    assert lines[0] == "*COVID-19 daily report: data to 2021-01-31*"
    assert f"new_cases_7d: {number(national['new_cases_7d'])}" in lines
    assert "changes: first report" in lines
    assert f"report: s3://{bucket}/{REPORTS}daily/2021-01-31/index.html" in lines


def test_a_top_state_that_did_not_report_deaths_shows_its_latest_reported(landing, resources, notices, s3_client,
                                                                         bucket):
    """Deaths left empty on the latest date by a top state: the table shows its latest reported deaths and their
    date (as the nation counts them), not a dash."""
    data = nyt_states_slice("2021-01-01", "2021-01-31")
    (state, _), *_ = top_states(read_nyt(data))
    prefix = f"2021-01-31,{state},".encode()
    (line,) = [line for line in data.split(b"\r\n") if line.startswith(prefix)]
    data = data.replace(line, line.rsplit(b",", 1)[0] + b",")
    states = read_nyt(data)
    earlier = states[(states["state"] == state) & states["deaths"].notna()].sort_values("date").iloc[-1]
    assert earlier["date"] == pd.Timestamp("2021-01-30")
    with dg.instance_for_test() as instance:
        assert ingest(landing, resources, drop(landing, "us_states/jan.csv", data), instance).success
    page = s3_text(s3_client, bucket, "daily/2021-01-31/index.html")
    shown = {cells[0]: cells for cells in rows(section(page, "states with the most new cases"))}
    assert shown[state][5] == f"{number(earlier['deaths'])} (on 2021-01-30)"
    assert all(cells[5] != "–" for cells in shown.values())


def revised(data: bytes, date: str, state: str, extra_cases: int) -> bytes:
    """The slice with `extra_cases` more cumulative cases on one state's row of `date`."""
    prefix = f"{date},{state},".encode()
    (line,) = [line for line in data.split(b"\r\n") if line.startswith(prefix)]
    fields = line.split(b",")
    fields[3] = str(int(fields[3]) + extra_cases).encode()
    return data.replace(line, b",".join(fields))


def test_only_changed_figures_publish_and_the_report_says_what_changed(landing, resources, notices, s3_client,
                                                                       bucket):
    first = nyt_states_slice("2021-01-01", "2021-01-20")
    later = revised(nyt_states_slice("2021-01-15", "2021-01-25"), "2021-01-18", "Ohio", 1000)
    one_row = revised(nyt_states_slice("2021-01-22", "2021-01-22", {"Utah"}), "2021-01-22", "Utah", 500)
    with dg.instance_for_test() as instance:
        key = drop(landing, "us_states/a.csv", first)
        assert ingest(landing, resources, key, instance).success
        published = report_keys(s3_client, bucket)
        first_page = s3_text(s3_client, bucket, "daily/2021-01-20/index.html")

        # The same partition again (a backfill): the summaries are rebuilt, the figures are the same.
        again = ingest(landing, resources, key, instance)
        assert again.success
        materialized, (observation,) = report_events(again)
        assert materialized == []
        assert observation.metadata["published"].value is False
        assert "nothing published" in observation.metadata["reason"].value
        assert report_keys(s3_client, bucket) == published
        assert len(notices) == 1

        # New dates, and a revised count of a date the first report had.
        assert ingest(landing, resources, drop(landing, "us_states/b.csv", later), instance).success
        assert s3_text(s3_client, bucket, "daily/2021-01-20/index.html") == first_page  # an earlier day: kept
        page = s3_text(s3_client, bucket, "daily/2021-01-25/index.html")
        assert_self_contained(page, images=3)
        states = read_nyt(first).merge(read_nyt(later), on=["date", "state"], how="outer",
                                       suffixes=("_a", ""))
        for count in ("fips", "cases", "deaths"):  # the later file wins
            states[count] = states[count].fillna(states.pop(f"{count}_a"))
        national = expected_national(states).set_index("date")
        before = expected_national(read_nyt(first)).set_index("date")
        assert figure(page, "latest_date") == "2021-01-25"
        assert figure(page, "new_cases_7d") == number(national.loc["2021-01-25", "new_cases_7d"])

        changed = section(page, "What changed")
        assert 'href="../../daily/2021-01-20/index.html"' in changed
        assert "New dates: 2021-01-21 to 2021-01-25 (5 dates)." in changed
        assert rows(changed) == [
            [date, label, number(before.loc[date, column]), number(national.loc[date, column])]
            for date, label, column in (("2021-01-18", "cases to date", "cases"),
                                        ("2021-01-18", "new cases", "new_cases"),
                                        ("2021-01-19", "new cases", "new_cases"))
        ]
        assert national.loc["2021-01-18", "cases"] == before.loc["2021-01-18", "cases"] + 1000
        assert notices[-1]["text"].split("\n")[3] == ("changes: 5 new dates (2021-01-21 to 2021-01-25); "
                                                       "3 revised values on 2 dates the previous report had")

        # A revision without a new date: the same day's page is replaced, earlier days' are not. The page
        # still lists what changed since the report of 2021-01-20, and says what changed since the one it replaces.
        assert ingest(landing, resources, drop(landing, "us_states/c.csv", one_row), instance).success
        replaced = s3_text(s3_client, bucket, "daily/2021-01-25/index.html")
        assert replaced != page and s3_text(s3_client, bucket, "daily/2021-01-20/index.html") == first_page
        changed = section(replaced, "What changed")
        since_page = "3 revised values on 2 dates the previous report had"
        assert "This report replaces the report of 2021-01-25 built" in changed and since_page in changed
        assert 'href="../../daily/2021-01-20/index.html"' in changed
        assert "New dates: 2021-01-21 to 2021-01-25 (5 dates)." in changed
        assert rows(changed) == rows(section(page, "What changed"))  # 2021-01-22 is a new date of both
        assert s3_text(s3_client, bucket, "latest/index.html") == replaced.replace("../../", "../")
        assert notices[-1]["text"].split("\n")[3] == f"changes: {since_page}"
        assert set(report_keys(s3_client, bucket)) == {
            f"{folder}/{name}" for folder in ("daily/2021-01-20", "daily/2021-01-25", "latest")
            for name in ("index.html", "figures.json")
        }
    assert len(notices) == 3


def test_a_file_of_earlier_dates_brings_new_dates_not_revisions():
    """A file that starts earlier than the data (a backfill): its dates are new dates; the former first date's
    new cases, its count to date before, is now the difference from the day before, not a revision. A revised
    count of that date still is one, with the new counts it moves."""
    def figures(data: bytes) -> dict:
        national = expected_national(read_nyt(data))
        national["date"] = national["date"].dt.strftime("%Y-%m-%d")
        return {"national": national.to_dict("records"), "testing": []}

    later = figures(nyt_states_slice("2021-01-10", "2021-01-20"))
    backfilled = nyt_states_slice("2021-01-01", "2021-01-20")
    snapshot = {"day": "2021-01-20", "figures": later}
    changes = compare(snapshot, figures(backfilled))
    assert changes.new_dates == [f"2021-01-0{day}" for day in range(1, 10)] and changes.revisions == []
    changes = compare(snapshot, figures(revised(backfilled, "2021-01-10", "Ohio", 1000)))
    assert [(r.date, r.column, r.after - r.before) for r in changes.revisions] == [
        ("2021-01-10", "cases", 1000), ("2021-01-11", "new_cases", -1000)]


def test_new_dates_are_said_as_runs_of_days():
    """A full history's 1,158 new dates are one run, not 1,158 dates listed; gaps start new runs; past 10 runs
    the rest are counted."""
    days = pd.date_range("2020-01-21", "2023-03-23").strftime("%Y-%m-%d").tolist()
    assert _spans(days) == f"2020-01-21 to 2023-03-23 ({len(days):,} dates)"
    assert _spans(["2021-01-01", "2021-01-02", "2021-01-05"]) == "2021-01-01 to 2021-01-02, 2021-01-05 (3 dates)"
    every_other = days[:40:2]
    assert _spans(every_other) == ", ".join(every_other[:10]) + f" and 10 more runs ({len(every_other)} dates)"


def test_testing_figures_withdrawn_on_the_latest_date_are_a_revision():
    """New York's positives and Washington's negatives emptied on the file's latest date: New York's 7-day
    positivity is now of the day before, Washington's positivity to date of an earlier date. Both are testing
    figures revised (the states whose figures are unchanged are not named)."""
    def figures(frame: pd.DataFrame) -> dict:
        daily = expected_testing_daily(frame).dropna(subset=["positivity_7d"])
        latest = daily.sort_values("date").groupby("state").tail(1)
        to_date = expected_state_summary(frame).set_index("state")["positivity"]
        return {"national": [], "testing": [
            {"state": state, "date": date.strftime("%Y-%m-%d"), "positivity_7d": value,
             "positivity_to_date": None if pd.isna(to_date.get(state)) else to_date[state]}
            for state, date, value in zip(latest["state"], latest["date"], latest["positivity_7d"])]}

    frame = read_covidtracking(COVIDTRACKING.read_bytes())
    frame = frame[frame["state"].isin(["AK", "NY", "OR", "WA"])].reset_index(drop=True)
    last = frame["date"] == frame["date"].max()
    withdrawn = frame.copy()
    withdrawn.loc[last & (withdrawn["state"] == "NY"), "positive"] = float("nan")
    withdrawn.loc[last & (withdrawn["state"] == "WA"), "negative"] = float("nan")
    before, after = figures(frame), figures(withdrawn)
    assert before["testing"] != after["testing"]
    changes = compare({"day": "2020-12-10", "figures": before}, after)
    assert (changes.testing_newer, changes.testing_revised) == ([], ["NY", "WA"])
    assert "testing figures of 2 states updated" in changes.summary()


def test_nothing_loaded_yet_reports_no_data_to_a_folder(resources, notices, tmp_path, monkeypatch):
    monkeypatch.setenv("REPORTS_URL", (tmp_path / "reports").as_uri())
    with dg.instance_for_test() as instance:
        result = dg.materialize([daily_report], instance=instance, resources=resources)
        (materialization,), _ = report_events(result)
        day = materialization.metadata["latest_date"].value  # no data: the build's date
        page = (tmp_path / "reports" / "daily" / day / "index.html").read_text()
        assert_self_contained(page, images=0)
        assert (tmp_path / "reports" / "latest" / "index.html").exists()
        assert "No data yet: <code>covid.national_daily</code>" in section(page, "National: latest date")
        assert "No data yet: <code>covid.state_daily</code>" in section(page, "states with the most")
        assert "No testing data" in section(page, "Test positivity")
        assert "No data yet: no file has been loaded" in section(page, "Data status")
        assert "chart" not in materialization.metadata and "new_cases_7d" not in materialization.metadata
        assert (notices[0]["text"].split("\n")[-1]
                == f"report: {(tmp_path / 'reports' / 'daily' / day / 'index.html').as_uri()}")

        again = dg.materialize([daily_report], instance=instance, resources=resources)
        assert report_events(again)[0] == [] and len(notices) == 1


def test_test_positivity_and_the_screenshot(landing, resources, notices, tmp_path, monkeypatch):
    """Every section filled: two months of states, a second load with new dates, a revision and a row set
    aside, and the COVID Tracking Project's spring 2020; the page drawn by Chromium for a person to read."""
    monkeypatch.setenv("REPORTS_URL", str(tmp_path / "reports"))  # a plain folder
    states = nyt_states_slice("2020-12-01", "2021-01-25")
    later = revised(nyt_states_slice("2021-01-20", "2021-01-31"), "2021-01-21", "Texas", 2500)
    later += b"2021-01-31,Utah County,49,-1,0\r\n"  # a bad row (a negative count): set aside
    testing = covidtracking_slice(spring_row)
    with dg.instance_for_test() as instance:
        for key, data in (("us_states/dec.csv", states), ("covidtracking/spring.csv", testing),
                          ("us_states/late-jan.csv", later)):
            assert ingest(landing, resources, drop(landing, key, data), instance).success, key
    page_path = tmp_path / "reports" / "latest" / "index.html"
    page = page_path.read_text()
    assert_self_contained(page, images=3)

    expected = expected_testing_daily(read_covidtracking(testing)).dropna(subset=["positivity_7d"])
    latest = expected.sort_values("date").groupby("state").tail(1)
    latest = latest.sort_values(["positivity_7d", "state"], ascending=[False, True]).head(10)
    shown = rows(section(page, "Test positivity"))
    assert [[re.sub(r".* \((\w+)\)$", r"\1", cells[0]), *cells[1:3]] for cells in shown] == [  # "Name (code)"
        [state, date.strftime("%Y-%m-%d"), f"{value:.1%}"]
        for state, date, value in zip(latest["state"], latest["date"], latest["positivity_7d"])
    ]
    # the caveat where every test of the 7 days is a positive (Puerto Rico's negatives stopped on 05-06)
    caveats = {state: cells[4] for state, cells in zip(latest["state"], shown)}
    assert caveats == {state: ALL_POSITIVE if value == 1 else ABOVE_ALL if value > 1 else ""
                       for state, value in zip(latest["state"], latest["positivity_7d"])}
    assert caveats["PR"] == ALL_POSITIVE and list(caveats.values()).count("") >= 5
    # to date: of each state's latest date reporting both outcomes (Puerto Rico's of 05-05)
    to_date = expected_state_summary(read_covidtracking(testing)).set_index("state")["positivity"]
    assert {state: cells[3] for state, cells in zip(latest["state"], shown)} == {
        state: "–" if pd.isna(to_date[state]) else f"{to_date[state]:.1%}" for state in latest["state"]}
    status = {cells[0]: cells for cells in rows(section(page, "Data status"))}
    assert status["us_states"][2] == "2" and status["us_states"][6] == "1"
    assert status["covidtracking"][2] == "1"
    assert "New dates: 2021-01-26 to 2021-01-31 (6 dates)." in section(page, "What changed")
    # The figures the notice names are those of the page.
    assert f"new_cases_7d: {figure(page, 'new_cases_7d')}" in notices[-1]["text"].split("\n")

    shot = screenshot(page_path, "report.png")
    if shot is None:
        pytest.skip(f"{CHROMIUM} not installed: no screenshot of the report")
    assert shot.stat().st_size > 50_000


def _build_in_worker(database_url: str, folder: str) -> tuple[int, int]:
    """One run of the report alone, in a process of its own (as each run is); (materialized, observed)."""
    resources = {"warehouse": Warehouse(database_url=database_url), "notifier": Notifier(),
                 "landing": LandingZone(url=folder, s3=S3Resource())}
    with dg.instance_for_test() as instance:
        materialized, observed = report_events(dg.materialize([daily_report], instance=instance,
                                                              resources=resources))
    return len(materialized), len(observed)


def test_builds_at_once_publish_the_same_figures_once(database_url, query, notices, tmp_path, monkeypatch):
    """Runs of several files end at once: their report steps take turns (here both wait for the lock until
    released at once), and the second sees what the first published."""
    monkeypatch.setenv("REPORTS_URL", str(tmp_path / "reports"))
    query("SELECT pg_advisory_lock(hashtext(%s))", (LOCK,))
    # builds waiting for the report's lock (not for another, such as the schema's migration lock)
    waiting = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
               " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
               f" AND objid::bigint = (hashtext('{LOCK}')::bigint & 4294967295)")
    # Each build in a process of its own, as each run is; one that fails shows its output.
    worker = ("import json, sys; from covid_platform_tests.test_report import _build_in_worker; "
              "print(json.dumps(_build_in_worker(*sys.argv[1:])))")
    runs = [subprocess.Popen([sys.executable, "-c", worker, database_url, str(tmp_path / "landing")], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    try:
        deadline = time.monotonic() + 120
        while query(waiting) != [(2,)]:
            ended = [run.communicate()[0][-3000:] for run in runs if run.poll() is not None]
            assert not ended, f"a build ended without waiting for the lock: {ended}"
            assert time.monotonic() < deadline, "no build waited"
            time.sleep(0.2)
        query("SELECT pg_advisory_unlock(hashtext(%s))", (LOCK,))
        outputs = [run.communicate(timeout=300)[0] for run in runs]
    finally:
        for run in runs:
            run.kill()
    assert [run.returncode for run in runs] == [0, 0], outputs
    outcomes = sorted(tuple(json.loads(output.strip().splitlines()[-1])) for output in outputs)
    assert outcomes == [(0, 1), (1, 0)]
    assert len(notices) == 1
