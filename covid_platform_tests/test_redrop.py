"""The daily full-history re-drop: a publisher's file repeats every earlier row with a new date and a few
revisions; the merge writes only the keys that changed and the rows whose derived values they reach.

Every expectation is computed with pandas from the files: the table as a load of the newest file alone would
give it, the keys whose values differ between the files, and the rows whose values (base or derived) differ
between the two tables.
"""

import csv
import io
import random

import dagster as dg
import pandas as pd
import psycopg2
import pytest

from covid_platform.engine import ledger
from covid_platform.engine.ledger import partition_key
from covid_platform.engine.merge import MANY_CHANGES
from covid_platform_tests.helpers import (
    COUNTIES,
    PR_DE,
    csv_bytes,
    data_file,
    drop,
    ingest,
    nyt_published,
    nyt_states_slice,
)
from covid_platform_tests.oracles import expected_testing_daily, read_covidtracking, with_differences, with_rolling_7d

KEY = ["state", "county", "date"]
COUNTY_COLUMNS = ["state", "county", "date", "cases", "deaths", "new_cases", "new_deaths", "new_cases_7d"]
NUMBERS = COUNTY_COLUMNS[3:]


def expected_counties(data: bytes) -> pd.DataFrame:
    frame = pd.read_csv(io.BytesIO(data), dtype={"fips": str})
    frame["date"] = pd.to_datetime(frame["date"]).astype("datetime64[ns]")
    frame = with_differences(frame, {"cases": "new_cases", "deaths": "new_deaths"}, region=("state", "county"))
    frame = with_rolling_7d(frame, ["new_cases"], region=("state", "county"))
    return frame[COUNTY_COLUMNS].astype({c: "float64" for c in NUMBERS}).set_index(KEY).sort_index()


def county_daily(query) -> pd.DataFrame:
    frame = pd.DataFrame(query(f"SELECT {', '.join(COUNTY_COLUMNS)} FROM covid.county_daily"), columns=COUNTY_COLUMNS)
    frame["date"] = pd.to_datetime(frame["date"]).astype("datetime64[ns]")
    return frame.astype({c: "float64" for c in NUMBERS}).set_index(KEY).sort_index()


def differing(before: pd.DataFrame, after: pd.DataFrame, columns) -> int:
    """Rows of `after` that are new or whose values in `columns` differ from `before`'s (NaN equals NaN)."""
    joined = after[columns].join(before[columns].add_suffix("_before"), how="left")
    new = joined.index.difference(before.index)
    old = joined.drop(new)
    changed = pd.Series(False, index=old.index)
    for column in columns:
        a, b = old[column], old[f"{column}_before"]
        changed |= ~((a - b).abs().le(1e-9 * b.abs().clip(lower=1)) | (a.isna() & b.isna()))
    return len(new) + int(changed.sum())


def next_day(data: bytes, share: float, seed: int, new_dates: int = 1) -> tuple[bytes, bytes]:
    """(day 1, day 2) from a county file: day 1 is every row but the last `new_dates` dates' and a few keys in
    the middle of a series; day 2 is every row, with `share` of the earlier values revised (up, down, emptied,
    filled)."""
    header, *rows = list(csv.reader(io.StringIO(data.decode())))
    last = sorted({row[0] for row in rows})[-new_dates]
    rng = random.Random(seed)
    held_back = set(rng.sample(range(len(rows)), 5))
    day1 = [row for i, row in enumerate(rows) if row[0] < last and i not in held_back]
    day2 = [list(row) for row in rows]
    for row in day2:
        if row[0] >= last or rng.random() > share:
            continue
        column = rng.choice([4, 5])
        if row[column] == "" or column == 5 and rng.random() < 0.2:
            row[column] = "" if row[column] else str(rng.randint(0, 50))  # filled, or emptied (deaths only)
        else:
            row[column] = str(max(0, int(row[column]) + rng.choice([-1, 1]) * rng.randint(1, 500)))
    return csv_bytes(header, day1), csv_bytes(header, day2)


def county_file() -> bytes:
    """Real county rows: Puerto Rico's municipios with deaths empty as NYT publishes them, and Delaware with a
    gap in Kent's deaths; then Connecticut, Rhode Island and Vermont."""
    published = nyt_published(data_file(PR_DE))
    others = data_file(COUNTIES).split(b"\n", 1)[1]
    return published + b"".join(line + b"\n" for line in others.split(b"\n") if line and b",Delaware," not in line)


def clean_metadata(result, table: str) -> dict:
    [materialization] = result.asset_materializations_for_node(table)
    return {name: value.value for name, value in materialization.metadata.items()}


@pytest.mark.parametrize("new_dates", [1, MANY_CHANGES + 1], ids=["a new date", "a region recomputed whole"])
def test_a_full_history_redrop_writes_the_keys_that_changed_and_the_rows_they_reach(
    landing, resources, query, new_dates
):
    """With more than MANY_CHANGES changes in a county (new dates), the merge recomputes it from its first
    change, and still writes only the rows that differ."""
    day1, day2 = next_day(county_file(), share=0.02, seed=7, new_dates=new_dates)
    with dg.instance_for_test() as instance:
        assert ingest(landing, resources, drop(landing, "us_counties/us-counties.csv", day1), instance).success
        history_before = query("SELECT count(*) FROM covid.county_daily_history")[0][0]
        result = ingest(landing, resources, drop(landing, "us_counties/us-counties.csv", day2), instance)
        assert result.success
    before, after = expected_counties(day1), expected_counties(day2)
    pd.testing.assert_frame_equal(county_daily(query), after, check_exact=False, rtol=1e-9)

    metadata = clean_metadata(result, "county_daily")
    keys_changed = differing(before, after, ["cases", "deaths"])
    assert 0 < keys_changed < len(after) / (10 if new_dates == 1 else 1)
    assert metadata["keys_changed"] == keys_changed
    # written: the keys changed, and the rows whose derived values changed; nothing else
    assert metadata["rows_written"] == differing(before, after, NUMBERS)
    assert metadata["rows_written"] < 10 * keys_changed
    assert metadata["rows_in_files"] == len(after)
    assert metadata["keys_added"] + metadata["keys_revised"] == keys_changed
    assert metadata["keys_unchanged"] == len(after) - keys_changed
    # history gains one version per key changed; the file's rows are all the table's now
    assert query("SELECT count(*) FROM covid.county_daily_history")[0][0] - history_before == keys_changed
    assert query("SELECT rows_loaded FROM covid.ingested_files ORDER BY file_id DESC LIMIT 1")[0][0] == len(after)


def test_changes_before_long_runs_of_unreported_deaths_reach_past_them(landing, resources, query):
    """The merge reads 13 rows after each change: where deaths are unreported for longer, the next row that
    reports them, and the 6th row after it, are looked up beyond those 13."""
    header, *rows = list(csv.reader(io.StringIO(data_file(COUNTIES).decode())))
    rows = [row for row in rows if row[1:3] == ["Hartford", "Connecticut"]]
    assert len(rows) > 60
    for i in [*range(20, 40), *range(50, 59)]:  # deaths not reported: 20 rows, then 9
        rows[i][5] = ""
    revised = [list(row) for row in rows]
    revised[18][4] = str(int(rows[18][4]) + 100)  # cases before the 20 rows
    revised[19][5] = str(int(rows[19][5]) + 3)  # deaths before the 20: the next deaths 21 rows on
    revised[49][5] = str(int(rows[49][5]) + 2)  # before the 9: the next deaths 10 rows on, the 6th after 16
    day1, day2 = csv_bytes(header, rows), csv_bytes(header, revised)
    with dg.instance_for_test() as instance:
        for body in (day1, day2):
            assert ingest(landing, resources, drop(landing, "us_counties/hartford.csv", body), instance).success
    pd.testing.assert_frame_equal(county_daily(query), expected_counties(day2), check_exact=False, rtol=1e-9)
    assert query("SELECT keys_revised FROM covid.revisions ORDER BY file_id DESC LIMIT 1") == [(3,)]


def test_a_deaths_revision_before_a_long_gap_recomputes_the_7_day_mean_after_it(landing, resources, query):
    """state_daily averages new deaths over 7 rows: a revision before 10 rows of unreported deaths changes
    the new deaths of the row after them and the means of the 6 rows after that, beyond the 13 rows read."""
    header, *rows = list(csv.reader(io.StringIO(nyt_states_slice("2020-09-01", "2020-10-31", {"Ohio"}).decode())))
    for i in range(20, 30):
        rows[i][4] = ""
    revised = [list(row) for row in rows]
    revised[19][4] = str(int(rows[19][4]) + 40)
    columns = ["state", "date", "cases", "deaths", "new_cases", "new_deaths", "new_cases_7d", "new_deaths_7d"]
    with dg.instance_for_test() as instance:
        for body in (csv_bytes(header, rows), csv_bytes(header, revised)):
            assert ingest(landing, resources, drop(landing, "us_states/ohio.csv", body), instance).success
    expected = pd.read_csv(io.BytesIO(csv_bytes(header, revised)), parse_dates=["date"])
    expected = with_rolling_7d(with_differences(expected, {"cases": "new_cases", "deaths": "new_deaths"}),
                               ["new_cases", "new_deaths"])[columns]
    actual = pd.DataFrame(query(f"SELECT {', '.join(columns)} FROM covid.state_daily ORDER BY date"), columns=columns)
    actual["date"] = pd.to_datetime(actual["date"]).astype(expected["date"].dtype)
    pd.testing.assert_frame_equal(actual.astype({c: float for c in columns[2:]}),
                                  expected.astype({c: float for c in columns[2:]}), check_exact=False, rtol=1e-9)


def test_a_testing_redrop_recomputes_the_7_day_ratios_the_revisions_reach(landing, resources, query):
    """COVID Tracking: counts that may be empty and a 7-day ratio over calendar days."""
    data = (
        b"date,state,positive,negative,totalTestResults\n"
        + b"".join(line + b"\n" for line in _covidtracking_rows() if line)
    )
    day1, day2 = next_day_testing(data, seed=3)
    with dg.instance_for_test() as instance:
        for body in (day1, day2):
            result = ingest(landing, resources, drop(landing, "covidtracking/all-states-history.csv", body), instance)
            assert result.success
    columns = ["state", "date", "positive", "negative", "total_tests", "new_positive", "new_negative", "new_tests",
               "positivity_7d"]
    expected = tracking_table(day2)
    actual = pd.DataFrame(query(f"SELECT {', '.join(columns)} FROM covid.testing_daily"), columns=columns)
    actual["date"] = pd.to_datetime(actual["date"]).astype("datetime64[ns]")
    actual = actual.astype({c: "float64" for c in columns[2:]}).set_index(["state", "date"]).sort_index()
    pd.testing.assert_frame_equal(actual, expected, check_exact=False, rtol=1e-9)
    before = tracking_table(day1)
    metadata = clean_metadata(result, "testing_daily")
    assert metadata["keys_changed"] == differing(before, expected, ["positive", "negative", "total_tests"])
    assert metadata["rows_written"] == differing(before, expected, columns[2:])


def tracking_table(data: bytes) -> pd.DataFrame:
    frame = expected_testing_daily(read_covidtracking(data))
    frame["date"] = frame["date"].astype("datetime64[ns]")
    return frame.set_index(["state", "date"]).sort_index().astype("float64")


def _covidtracking_rows() -> list[bytes]:
    """date,state,positive,negative,totalTestResults of the real COVID Tracking file in data/ (six states)."""
    frame = read_covidtracking(data_file("covidtracking/all-states-history_2020-12-10.csv"))
    frame = frame[frame["state"].isin({"CA", "NY", "PR", "WA", "MP", "OR"})]
    out = io.StringIO()
    frame.assign(date=frame["date"].dt.strftime("%Y-%m-%d"))[
        ["date", "state", "positive", "negative", "total_tests"]
    ].to_csv(out, header=False, index=False, float_format="%.0f")
    return out.getvalue().encode().split(b"\n")


def next_day_testing(data: bytes, seed: int) -> tuple[bytes, bytes]:
    header, *rows = list(csv.reader(io.StringIO(data.decode())))
    last = max(row[0] for row in rows)
    rng = random.Random(seed)
    day1 = [row for row in rows if row[0] != last]
    day2 = [list(row) for row in rows]
    for row in day2:
        if row[0] != last and rng.random() < 0.03:
            column = rng.choice([2, 3, 4])
            row[column] = "" if row[column] and rng.random() < 0.3 else str(int(float(row[column] or 0)) + rng.randint(1, 900))
    return csv_bytes(header, day1), csv_bytes(header, day2)


def test_an_older_file_merged_after_a_newer_full_history_does_not_win_what_the_newer_one_repeated(
    landing, resources, query, database_url
):
    """File M is registered before file N but merges after it (a late run). N repeats the rows of the first
    file (unchanged: not rewritten, their file_id stays the first file's) and revises a few; M changes some
    of the same keys and adds a county N does not have. In ledger order N wins every key it reported."""
    first, newer = next_day(county_file(), share=0.02, seed=11)
    header, *lines = first.decode().splitlines()
    older_rows = [line.split(",") for line in lines[::40]]
    for row in older_rows:
        row[4] = str(int(row[4]) + 1_000_000)
    older_rows.append(["2021-03-10", "Nowhere", "Delaware", "", "5", "1"])
    older = ("\r\n".join([header, *(",".join(row) for row in older_rows)]) + "\r\n").encode()
    with dg.instance_for_test() as instance:
        assert ingest(landing, resources, drop(landing, "us_counties/first.csv", first), instance).success
        # M registered (its run started, then held up) before N arrives
        drop(landing, "us_counties/older.csv", older)
        etag = landing.describe("us_counties/older.csv").etag
        conn = psycopg2.connect(database_url)
        ledger.register(conn, "us_counties/older.csv", etag, partition_key("us_counties/older.csv", etag),
                        "us_counties", "held-up-run")
        conn.close()
        assert ingest(landing, resources, drop(landing, "us_counties/newer.csv", newer), instance).success
        assert ingest(landing, resources, "us_counties/older.csv", instance, etag=etag).success
    expected = pd.concat(
        pd.read_csv(io.BytesIO(data), dtype={"fips": str}) for data in (first, older, newer)
    ).drop_duplicates(KEY, keep="last")
    buffer = io.StringIO()
    expected.to_csv(buffer, index=False)
    pd.testing.assert_frame_equal(county_daily(query), expected_counties(buffer.getvalue().encode()),
                                  check_exact=False, rtol=1e-9)
