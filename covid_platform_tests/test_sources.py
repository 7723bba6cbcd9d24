"""covidtracking and jhu_daily_us against values computed independently (pandas) from real slices.

covidtracking: one quoted, 41-column, newest-first file per drop; `covid.testing_daily` with daily
differences and a 7-calendar-day positivity, and its two summaries. jhu_daily_us: one snapshot file per
day, the date taken from the file name; `covid.jhu_state_daily` with daily differences.
"""


import dagster as dg
import numpy as np
import pandas as pd
import pytest

from covid_platform_tests.helpers import TEST_DATA, covidtracking_slice, drop, ingest, run_replay, spring_row
from covid_platform_tests.oracles import (
    DAILY_COLUMNS,
    expected_state_summary,
    expected_testing_daily,
    read_covidtracking,
    with_differences,
)

JHU_DAILY = TEST_DATA / "jhu_daily_us"


def frame_of(query, statement: str, columns: list[str]) -> pd.DataFrame:
    """Rows of a SELECT as a frame: dates (columns named *date) as datetimes, other non-text columns as floats
    (NULL → NaN)."""
    frame = pd.DataFrame(query(statement), columns=columns)
    for column in columns:
        if column.endswith("date"):
            frame[column] = pd.to_datetime(frame[column])
        elif column not in ("state", "outcome"):
            frame[column] = pd.to_numeric(frame[column]).astype("float64")
    return frame


def assert_same(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    dates = [c for c in expected.columns if c.endswith("date")]
    numeric = [c for c in expected.columns if c not in ("state", "outcome", *dates)]
    expected = expected.astype({c: "float64" for c in numeric}).reset_index(drop=True)
    expected, actual = (f.astype({c: "datetime64[ns]" for c in dates}) for f in (expected, actual))
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False, check_exact=False, rtol=1e-9)


def ledger(query) -> list[tuple]:
    return query("SELECT key, status, reason FROM covid.ingested_files ORDER BY file_id")


# --- covidtracking ------------------------------------------------------------------------------------


def clean_testing_daily(query) -> pd.DataFrame:
    return frame_of(query, f"SELECT {', '.join(DAILY_COLUMNS)} FROM covid.testing_daily ORDER BY state, date",
                    DAILY_COLUMNS)


def test_covidtracking_daily_and_summaries(landing, resources, query):
    data = covidtracking_slice(spring_row)
    with dg.instance_for_test() as instance:
        key = drop(landing, "covidtracking/all-states-history.csv", data)
        result = ingest(landing, resources, key, instance)
    assert result.success
    frame = read_covidtracking(data)
    assert len(frame) == 6 * 62 + 4 + 15 + 20
    assert ledger(query) == [(key, "loaded", None)]

    expected = expected_testing_daily(frame)
    # The slice holds each case the nulls and zeros can make (else the comparison below would prove less).
    sums = expected.set_index("date").groupby("state")[["new_positive", "new_tests"]].rolling("7D").sum()
    assert (sums["new_positive"].isna() & (sums["new_tests"] > 0)).any(), "a window with no positive values"
    assert (sums["new_tests"] == 0).any(), "a window whose tests sum to 0"
    assert sums["new_tests"].isna().any(), "a window with no test values"
    negative = expected.groupby("state")["negative"]
    across = expected["negative"].notna() & negative.shift().isna() & negative.transform(lambda x: x.ffill().shift()).notna()
    assert across.any(), "a difference that reaches back past an empty value"
    assert_same(clean_testing_daily(query), expected)

    summary_columns = ["state", "date", "positive", "negative", "total_tests", "positivity", "positivity_date"]
    summary = frame_of(
        query, f"SELECT {', '.join(summary_columns)} FROM covid.testing_state_summary ORDER BY state",
        summary_columns,
    )
    expected_summary = expected_state_summary(frame)
    # PR's latest row has no negatives (none since May): its last reported value counts, and its positivity
    # is that of its last date with both; AL's only dates with both sum to 0, so it has none.
    last_rows = frame.sort_values("date").groupby("state").tail(1).set_index("state")
    assert np.isnan(last_rows.loc["PR", "negative"]) and last_rows["negative"].isna().sum() == 1
    pr = expected_summary.set_index("state").loc["PR"]
    assert pr["negative"] > 0 and pr["positivity_date"] < pr["date"]
    assert expected_summary.set_index("state")["positivity"].isna().to_dict() == {
        state: state == "AL" for state in expected_summary["state"]}
    assert_same(summary, expected_summary)

    totals = frame_of(query, "SELECT outcome, results, states FROM covid.testing_outcome_totals ORDER BY outcome",
                      ["outcome", "results", "states"])
    expected_totals = pd.DataFrame(  # over the states that reported each, with its latest value
        {"outcome": ["negative", "positive"],
         "results": [expected_summary["negative"].sum(), expected_summary["positive"].sum()],
         "states": [expected_summary["negative"].count(), expected_summary["positive"].count()]}
    )
    assert expected_totals["states"].tolist() == [len(expected_summary), len(expected_summary)]
    assert_same(totals, expected_totals)


# Dates removed from NY's and WA's rows: single days, a 3-day and a 4-day hole, and 8 days in a row (the
# window of the day after holds that day alone, and its differences span 9 days).
MISSING = {
    "NY": {"2020-04-05", "2020-04-10", "2020-04-11", "2020-04-12", "2020-04-20",
           *(f"2020-05-0{day}" for day in range(1, 9))},
    "WA": {"2020-04-08", "2020-04-15", "2020-04-16", "2020-04-17", "2020-04-18", "2020-04-25"},
}


def gapped_row(state: str, date: str) -> bool:
    return state in MISSING and "2020-04-01" <= date <= "2020-05-20" and date not in MISSING[state]


@pytest.mark.parametrize("files", [1, 2], ids=["one_file", "two_overlapping_files"])
def test_covidtracking_positivity_spans_calendar_days_across_gaps(landing, resources, query, files):
    data = covidtracking_slice(gapped_row)
    if files == 1:
        drops = {"covidtracking/gapped.csv": data}
    else:  # the second file's earliest rows need the first file's rows from before a gap
        def between(first: str, last: str) -> bytes:
            return covidtracking_slice(lambda state, date: gapped_row(state, date) and first <= date <= last)

        drops = {
            "covidtracking/early.csv": between("2020-04-01", "2020-04-28"),
            "covidtracking/late.csv": between("2020-04-24", "2020-05-20"),
        }
    with dg.instance_for_test() as instance:
        for key, body in drops.items():
            assert ingest(landing, resources, drop(landing, key, body), instance).success

    expected = expected_testing_daily(read_covidtracking(data))
    # A window of the 7 rows before would give other values on many dates: the gaps matter.
    by_rows = expected.groupby("state")[["new_positive", "new_tests"]].rolling(7, min_periods=1).sum()
    seven_rows = (by_rows["new_positive"] / by_rows["new_tests"]).reset_index(drop=True)
    assert (~np.isclose(seven_rows, expected["positivity_7d"], equal_nan=True)).sum() > 10
    assert_same(clean_testing_daily(query), expected)
    # After NY's 8 missing days, 05-09 has no report 7 days before (its differences span 9 days): no ratio.
    ny = expected[expected["state"] == "NY"].set_index("date")
    assert pd.isna(ny.loc[pd.Timestamp("2020-05-09"), "positivity_7d"])
    # 04-13's 7 days miss 04-10 to 04-12, but both ends are reported: the rows' differences sum to the 7 days'.
    week = ny.loc[pd.Timestamp("2020-04-07"):pd.Timestamp("2020-04-13")]
    assert len(week) == 4
    assert ny.loc[pd.Timestamp("2020-04-13"), "positivity_7d"] == pytest.approx(
        week["new_positive"].sum() / week["new_tests"].sum())


# --- jhu_daily_us -------------------------------------------------------------------------------------

JHU_COLUMNS = ["state", "date", "confirmed", "deaths", "total_test_results", "new_confirmed", "new_deaths"]


def read_jhu(day: str) -> pd.DataFrame:
    """One day's real file (MM-DD-2020) as the table's columns, the date taken from the file name."""
    frame = pd.read_csv(JHU_DAILY / f"{day}.csv")
    frame = frame.rename(columns={"Province_State": "state", "Confirmed": "confirmed", "Deaths": "deaths",
                                  "Total_Test_Results": "total_test_results"})
    frame["date"] = pd.to_datetime(day, format="%m-%d-%Y")
    return frame[["state", "date", "confirmed", "deaths", "total_test_results"]]


def expected_jhu(days: list[str]) -> pd.DataFrame:
    frame = pd.concat([read_jhu(day) for day in days], ignore_index=True)
    return with_differences(frame, {"confirmed": "new_confirmed", "deaths": "new_deaths"})[JHU_COLUMNS]


def jhu_state_daily(query) -> pd.DataFrame:
    return frame_of(query, f"SELECT {', '.join(JHU_COLUMNS)} FROM covid.jhu_state_daily ORDER BY state, date",
                    JHU_COLUMNS)


def test_jhu_daily_files_loaded_one_by_one_out_of_order(landing, resources, query):
    days = ["12-03-2020", "12-01-2020", "12-02-2020", "12-06-2020", "12-04-2020", "12-07-2020",
            "12-05-2020"]
    with dg.instance_for_test() as instance:
        for day in days:
            key = drop(landing, f"jhu_daily_us/{day}.csv", JHU_DAILY / f"{day}.csv")
            assert ingest(landing, resources, key, instance).success, day
    assert [(key, status) for key, status, _ in ledger(query)] == [
        (f"jhu_daily_us/{day}.csv", "loaded") for day in days
    ]
    expected = expected_jhu(sorted(days))
    assert len(expected) == 7 * 58
    assert expected["total_test_results"].isna().any(), "cruise ships report no tests"
    assert_same(jhu_state_daily(query), expected)
    # "2722016.0" in the file is the whole number 2722016.
    assert query("SELECT total_test_results FROM covid.jhu_state_daily WHERE state = 'Alabama' "
                 "AND date = '2020-12-01'") == [(2722016,)]


def test_jhu_a_days_snapshot_posted_again_as_the_next_days_is_that_days_rows(landing, resources, query):
    """The same bytes under another day's name are that day's rows (the date is the file name's): loaded, not
    a duplicate of the first, at a drop and at a replay; under the same day's name again, a duplicate."""
    first = JHU_DAILY / "12-01-2020.csv"
    with dg.instance_for_test() as instance:
        for key in ("jhu_daily_us/12-01-2020.csv", "jhu_daily_us/12-02-2020.csv", "jhu_daily_us/again/12-02-2020.csv"):
            assert ingest(landing, resources, drop(landing, key, first), instance).success
        statuses = [status for _, status, _ in ledger(query)]
        assert statuses == ["loaded", "loaded", "duplicate"]
        expected = pd.concat([read_jhu("12-01-2020"), read_jhu("12-01-2020").assign(date=pd.Timestamp("2020-12-02"))])
        expected = with_differences(expected, {"confirmed": "new_confirmed", "deaths": "new_deaths"})[JHU_COLUMNS]
        assert_same(jhu_state_daily(query), expected)
        assert run_replay(resources, instance, "jhu_daily_us").success
    assert [status for _, status, _ in ledger(query)] == statuses
    assert_same(jhu_state_daily(query), expected)


def test_jhu_older_header_names_load_the_same_values(landing, resources, query):
    original = (JHU_DAILY / "12-10-2020.csv").read_bytes()
    header, rest = original.split(b"\n", 1)
    names = header.decode().split(",")
    renamed = {"Total_Test_Results": "People_Tested", "Case_Fatality_Ratio": "Mortality_Rate"}
    assert set(renamed) <= set(names)
    drifted = ",".join(renamed.get(name, name) for name in names).encode() + b"\n" + rest
    with dg.instance_for_test() as instance:
        for key, body in (("jhu_daily_us/12-09-2020.csv", JHU_DAILY / "12-09-2020.csv"),
                          ("jhu_daily_us/12-10-2020.csv", drifted)):
            assert ingest(landing, resources, drop(landing, key, body), instance).success
    # Expected from the original files: the renamed headers change nothing.
    assert_same(jhu_state_daily(query), expected_jhu(["12-09-2020", "12-10-2020"]))


def test_jhu_2022_layout_with_a_date_column_takes_the_date_from_the_file_name(landing, resources, query):
    """JHU's files of 2022 end with `Date` (the day before the file name's date), `People_Tested` and
    `Mortality_Rate` (both empty): the date is still the file name's, so the series has no seam between
    layouts."""
    lines = (JHU_DAILY / "12-10-2020.csv").read_text().splitlines()
    layout_2022 = "\n".join([lines[0] + ",Date,People_Tested,Mortality_Rate",
                              *(line + ",2020-12-09,," for line in lines[1:])]).encode() + b"\n"
    with dg.instance_for_test() as instance:
        for key, body in (("jhu_daily_us/12-09-2020.csv", JHU_DAILY / "12-09-2020.csv"),
                          ("jhu_daily_us/12-10-2020.csv", layout_2022)):
            assert ingest(landing, resources, drop(landing, key, body), instance).success
    assert_same(jhu_state_daily(query), expected_jhu(["12-09-2020", "12-10-2020"]))


def test_jhu_april_file_sets_its_recovered_row_aside_and_loads_the_states(landing, resources, query):
    # JHU's files of April to August 2020 carry a national "Recovered" row among the ~58 states: one row of 59
    # (1.7%). It names no region: set aside with its reason, the day's states loaded (not the file quarantined).
    day = "04-12-2020"
    with dg.instance_for_test() as instance:
        key = drop(landing, f"jhu_daily_us/{day}.csv", JHU_DAILY / f"{day}.csv")
        assert ingest(landing, resources, key, instance).success
    assert ledger(query) == [(key, "loaded", None)]
    ((line, reason),) = query("SELECT line, reason FROM covid.rejected_rows")
    raw = pd.read_csv(JHU_DAILY / f"{day}.csv")
    assert line == raw.index[raw["Province_State"] == "Recovered"][0] + 2  # the header is line 1
    assert "'Recovered'" in reason and "state" in reason, reason
    # this file's header names the tests People_Tested (later files: Total_Test_Results)
    frame = raw[raw["Province_State"] != "Recovered"].rename(columns={"People_Tested": "Total_Test_Results"})
    expected = with_differences(
        frame.rename(columns={"Province_State": "state", "Confirmed": "confirmed", "Deaths": "deaths",
                              "Total_Test_Results": "total_test_results"})
        .assign(date=pd.to_datetime(day, format="%m-%d-%Y"))[["state", "date", "confirmed", "deaths", "total_test_results"]],
        {"confirmed": "new_confirmed", "deaths": "new_deaths"})[JHU_COLUMNS]
    assert len(expected) == 58
    assert_same(jhu_state_daily(query), expected)


@pytest.mark.parametrize("name, said", [
    ("latest", "does not hold the date this dataset expects (like 12-31-2020)"),  # and a name it would accept
    ("02-30-2021", "is written like 12-31-2020 but names no day (day is out of range for month)"),
])
def test_jhu_file_name_without_a_date_is_quarantined(name, said, landing, resources, query):
    key = drop(landing, f"jhu_daily_us/{name}.csv", JHU_DAILY / "12-10-2020.csv")
    with dg.instance_for_test() as instance:
        result = ingest(landing, resources, key, instance)
    assert not result.success
    ((ledger_key, status, reason),) = ledger(query)
    assert (ledger_key, status) == (key, "quarantined")
    assert f"file name {name!r} {said}" in reason, reason
    assert query("SELECT to_regclass('covid.jhu_state_daily')") == [(None,)]  # the merge never ran
