"""Oracles: what the platform's tables should hold, computed independently with pandas from the files' bytes;
and the tables read back as frames to compare with them."""

import io

import pandas as pd

STATE_COLUMNS = ["state", "fips", "date", "cases", "deaths", "new_cases", "new_deaths", "new_cases_7d", "new_deaths_7d"]
NATIONAL_COLUMNS = ["date", "cases", "deaths", "new_cases", "new_deaths", "new_cases_7d", "new_deaths_7d",
                    "states"]
COUNTY_COLUMNS = ["state", "county", "fips", "date", "cases", "deaths", "new_cases", "new_deaths", "new_cases_7d"]
DAILY_COLUMNS = ["state", "date", "positive", "negative", "total_tests",
                 "new_positive", "new_negative", "new_tests", "positivity_7d"]


# --- derived columns --------------------------------------------------------------------------------------


def with_differences(frame: pd.DataFrame, counts: dict[str, str], region=("state",)) -> pd.DataFrame:
    """new_x = x − the region's latest earlier non-empty x (x itself when there is none); NaN where x is."""
    frame = frame.sort_values([*region, "date"]).reset_index(drop=True)
    for count, new in counts.items():
        previous = frame.groupby(list(region))[count].transform(lambda x: x.ffill().shift())
        frame[new] = frame[count] - previous.fillna(0)
    return frame


def with_rolling_7d(frame: pd.DataFrame, columns, region=("state",)) -> pd.DataFrame:
    """x_7d = mean of the non-empty x over the row and the 6 rows before it of its region (frame sorted by
    region and date); NaN when all seven are empty."""
    for column in columns:
        frame[f"{column}_7d"] = frame.groupby(list(region))[column].transform(
            lambda x: x.rolling(7, min_periods=1).mean())
    return frame


def expected_daily(frame: pd.DataFrame, region: list[str], rolling: bool) -> pd.DataFrame:
    """new_x = x − previous x of the region (x on its first date); new_x_7d = mean over the row and 6 before."""
    frame = frame.sort_values([*region, "date"]).reset_index(drop=True)
    for count in ("cases", "deaths"):
        frame[f"new_{count}"] = frame.groupby(region)[count].diff().fillna(frame[count]).astype("int64")
        if rolling:
            frame[f"new_{count}_7d"] = (
                frame.groupby(region)[f"new_{count}"].rolling(7, min_periods=1).mean().reset_index(drop=True)
            )
    return frame


def reported_by_all(states: pd.DataFrame) -> pd.DataFrame:
    """The states' rows of the dates every state still reporting has reported: up to the earliest latest date
    of the states whose latest date is within 14 days of their median latest date (the lower middle one)."""
    latest = pd.to_datetime(states.groupby("state")["date"].max()).sort_values()
    median = latest.iloc[(len(latest) - 1) // 2]
    cutoff = latest[latest >= median - pd.Timedelta(days=14)].min()
    return states[pd.to_datetime(states["date"]) <= cutoff]


def national_totals(states: pd.DataFrame) -> pd.DataFrame:
    """date, cases, deaths and states (rows) of each date every state still reporting has reported: each
    count summed over the states with the latest value each reported on or before the date (an empty count,
    a skipped date or a state that stopped keeps its last value; NaN where no state has reported it yet)."""
    kept = reported_by_all(states)
    dates = sorted(kept["date"].unique())
    totals = kept.groupby("date", as_index=False).agg(states=("state", "count"))
    for count in ("cases", "deaths"):
        # a date × state grid of the states' values, carried forward down each state's column
        carried = states.pivot(index="date", columns="state", values=count).sort_index().ffill()
        totals[count] = carried.loc[dates].sum(axis=1, min_count=1).to_numpy()
    return totals[["date", "cases", "deaths", "states"]]


def expected_national(states: pd.DataFrame) -> pd.DataFrame:
    totals = national_totals(states)
    totals["nation"] = "US"
    return expected_daily(totals, ["nation"], rolling=True).drop(columns="nation")


def expected_counties(frame: pd.DataFrame) -> pd.DataFrame:
    expected = expected_daily(frame, ["state", "county"], rolling=True)[COUNTY_COLUMNS]
    expected["fips"] = expected["fips"].replace("", None)
    return expected


def expected_testing_daily(frame: pd.DataFrame) -> pd.DataFrame:
    """positivity_7d = the change in positive results over the change in test results from the date 7 days
    before to the date, where the state reported both on both dates; NaN otherwise, and where the tests'
    change is not above 0 or the positives' is below 0. (The platform sums the daily differences over the 7
    days: the same where both ends are reported.)"""
    frame = with_differences(
        frame, {"positive": "new_positive", "negative": "new_negative", "total_tests": "new_tests"}
    )
    both = frame[frame["positive"].notna() & frame["total_tests"].notna()]
    week_before = both.assign(date=pd.to_datetime(both["date"]) + pd.Timedelta(days=7))[
        ["state", "date", "positive", "total_tests"]]
    ends = frame.assign(date=pd.to_datetime(frame["date"])).merge(
        week_before, on=["state", "date"], how="left", suffixes=("", "_before"))
    positives = ends["positive"] - ends["positive_before"]
    tests = ends["total_tests"] - ends["total_tests_before"]
    frame["positivity_7d"] = (positives / tests).where((tests > 0) & (positives >= 0)).to_numpy()
    return frame[DAILY_COLUMNS]


# --- files read as frames ---------------------------------------------------------------------------------


def expected_state_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per state: its latest date, each count's latest non-empty value (groupby's last() skips NaN), and the
    positivity of the latest date reporting both outcomes with a sum above 0."""
    ordered = frame.sort_values(["state", "date"])
    latest = ordered.groupby("state")[["date", "positive", "negative", "total_tests"]].last()
    both = ordered[ordered["positive"] + ordered["negative"] > 0].groupby("state").tail(1).set_index("state")
    latest["positivity"] = both["positive"] / (both["positive"] + both["negative"])
    latest["positivity_date"] = both["date"]
    return latest.reset_index()


def read_nyt(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), dtype={"fips": str}, parse_dates=["date"])


def read_counties(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), dtype={"fips": str}, parse_dates=["date"], keep_default_na=False)


def read_covidtracking(data: bytes) -> pd.DataFrame:
    frame = pd.read_csv(io.BytesIO(data), parse_dates=["date"])
    return frame.rename(columns={"totalTestResults": "total_tests"})[
        ["state", "date", "positive", "negative", "total_tests"]
    ]


# --- tables read back, and compared -----------------------------------------------------------------------


def table(query, statement: str, columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(query(statement), columns=columns)
    frame["date"] = pd.to_datetime(frame["date"])
    return frame


def county_table(query) -> pd.DataFrame:
    return table(query, f"SELECT {', '.join(COUNTY_COLUMNS)} FROM covid.county_daily ORDER BY state, county, date",
                 COUNTY_COLUMNS)


def assert_tables_match(query, states: pd.DataFrame) -> None:
    actual = table(query, f"SELECT {', '.join(STATE_COLUMNS)} FROM covid.state_daily ORDER BY state, date",
                   STATE_COLUMNS)
    expected = expected_daily(states, ["state"], rolling=True)[STATE_COLUMNS]
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False)
    national = table(query, f"SELECT {', '.join(NATIONAL_COLUMNS)} FROM covid.national_daily ORDER BY date",
                     NATIONAL_COLUMNS)
    pd.testing.assert_frame_equal(national, expected_national(states)[NATIONAL_COLUMNS], check_dtype=False)
