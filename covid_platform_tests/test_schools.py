"""cps_schools: the wide Chicago Public Schools file (a column per report date) unpivoted into
covid.school_cases, summarised in covid.school_summary; gTotal compared with the date columns."""

import csv
import io

import dagster as dg
import pandas as pd
import pytest

from covid_platform_tests.helpers import TEST_DATA, drop, ingest

CPS = TEST_DATA / "cps" / "allCpsCovidData_2021-03-28.csv"


def long_form(frame: pd.DataFrame) -> pd.DataFrame:
    dates = [c for c in frame.columns if c.isdigit() and len(c) == 8]
    long = frame.melt(id_vars=["CPS_School_ID", "School"], value_vars=dates, var_name="date", value_name="new_cases")
    long["date"] = pd.to_datetime(long["date"], format="%Y%m%d")
    long = long.rename(columns={"CPS_School_ID": "school_id", "School": "school"})
    long["school_id"] = long["school_id"].astype(str)
    return long.sort_values(["school_id", "date"]).reset_index(drop=True)


def summary(long: pd.DataFrame) -> pd.DataFrame:
    latest = long["date"].max()
    rows = []
    for school_id, group in long.groupby("school_id"):
        rows.append({
            "school_id": school_id,
            "school": group.sort_values("date")["school"].iloc[-1],
            # a school that reported none of the cells summed has no sum (not 0)
            "total_cases": group["new_cases"].sum(min_count=1),
            "cases_last_7d": group.loc[group["date"] > latest - pd.Timedelta(days=7), "new_cases"].sum(min_count=1),
            "cases_last_14d": group.loc[group["date"] > latest - pd.Timedelta(days=14), "new_cases"].sum(min_count=1),
        })
    return pd.DataFrame(rows)


def frame_of(query, statement: str, columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(query(statement), columns=columns)


def test_wide_file_is_unpivoted_and_summarised(landing, resources, query):
    source = pd.read_csv(CPS, dtype={"CPS_School_ID": str})
    with dg.instance_for_test() as instance:
        result = ingest(landing, resources, drop(landing, "cps_schools/2021-03-28.csv", CPS), instance)
    assert result.success
    expected = long_form(source)
    actual = frame_of(query, "SELECT school_id, school, date, new_cases FROM covid.school_cases "
                             "ORDER BY school_id, date", ["school_id", "school", "date", "new_cases"])
    actual["date"] = pd.to_datetime(actual["date"])
    pd.testing.assert_frame_equal(actual, expected[["school_id", "school", "date", "new_cases"]], check_dtype=False)

    columns = ["school_id", "school", "total_cases", "cases_last_7d", "cases_last_14d"]
    actual_summary = frame_of(query, f"SELECT {', '.join(columns)} FROM covid.school_summary ORDER BY school_id",
                              columns)
    pd.testing.assert_frame_equal(actual_summary, summary(expected)[columns], check_dtype=False)

    # The warning check reports exactly the schools whose gTotal is not the sum of their date columns.
    dates = [c for c in source.columns if c.isdigit()]
    disagree = source[source["gTotal"] != source[dates].sum(axis=1)]
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "wide_total_matches"]
    assert check.passed == disagree.empty
    assert check.metadata["rows_disagreeing"].value == len(disagree)


def test_a_school_that_reported_none_of_a_window_has_no_sum(landing, resources, query):
    """An empty cell is a date the school did not report: a window of empty cells has no sum, not 0, and
    such a school is listed after those with cases."""
    body = (b"CPS_School_ID,School,20210104,20210111,20210118,gTotal\n"
            b"100,Alpha,1,2,3,6\n200,Beta,4,,,4\n300,Gamma,,,,0\n")
    with dg.instance_for_test() as instance:
        assert ingest(landing, resources, drop(landing, "cps_schools/a.csv", body), instance).success
    source = pd.read_csv(io.BytesIO(body), dtype={"CPS_School_ID": str})
    columns = ["school_id", "school", "total_cases", "cases_last_7d", "cases_last_14d"]
    actual = frame_of(query, f"SELECT {', '.join(columns)} FROM covid.school_summary ORDER BY school_id", columns)
    pd.testing.assert_frame_equal(actual, summary(long_form(source))[columns], check_dtype=False)
    assert query("SELECT school_id, total_cases, cases_last_7d, cases_last_14d FROM covid.school_summary "
                 "WHERE school_id <> '100' ORDER BY school_id") == [("200", 4, None, None), ("300", None, None, None)]


@pytest.mark.parametrize("case", ["id_twice", "ids_empty"])
def test_a_wide_file_with_a_school_on_two_lines_is_gated_not_crashed(case, landing, resources, query):
    """A wide line holds a key per date cell: a school id on two lines (or empty on two) repeats every date of
    it. Each line is named once, with its first repeated key; the 2 lines of 100 are past the 1% a file may
    set aside, so the file is quarantined with that reason (not a crash of the raw step)."""
    lines = CPS.read_bytes().splitlines(keepends=True)
    addams = lines[2].split(b",")  # line 3, school 609772
    assert addams[3] == b"609772"
    if case == "id_twice":
        changed = addams[:7] + [b"5", b"6"] + addams[9:]  # the same id, its first two dates' cases otherwise
        body = b"".join(lines) + b",".join(changed)
        said = "key (school_id='609772', date='2020-03-07') appears on lines 3 and 102 with different values"
    else:
        for n in (2, 3):
            fields = lines[n].split(b",")
            lines[n] = b",".join(fields[:3] + [b""] + fields[4:])
        body = b"".join(lines)
        said = ("line 3, column 'school_id': expected a value (key columns cannot be empty), got an empty field "
                "(1 more like it); key (school_id=NULL, date='2020-03-07') appears on lines 3 and 4 with different values")
    with dg.instance_for_test() as instance:
        result = ingest(landing, resources, drop(landing, "cps_schools/twice.csv", body), instance)
    assert not result.success
    ((status, reason),) = query("SELECT status, reason FROM covid.ingested_files")
    assert status == "quarantined", reason
    assert said in reason, reason
    rows = len(body.splitlines()) - 1  # the header is no row
    assert reason.startswith(f"2 of {rows} rows "), reason


def test_a_later_file_replaces_the_dates_it_holds(landing, resources, query):
    source = pd.read_csv(CPS, dtype={"CPS_School_ID": str})
    later = source.copy()
    later["20210227"] = later["20210227"] + 1  # a revised last period
    later["20210228"] = 2  # and a new one
    later["School"] = later["School"].str.title()  # names spelled differently in the later version
    with dg.instance_for_test() as instance:
        for name, frame in (("a.csv", source), ("b.csv", later)):
            body = frame.to_csv(index=False).encode()
            assert ingest(landing, resources, drop(landing, f"cps_schools/{name}", body), instance).success
    expected = long_form(later)
    actual = frame_of(query, "SELECT school_id, school, date, new_cases FROM covid.school_cases "
                             "ORDER BY school_id, date", ["school_id", "school", "date", "new_cases"])
    actual["date"] = pd.to_datetime(actual["date"])
    pd.testing.assert_frame_equal(actual, expected[["school_id", "school", "date", "new_cases"]], check_dtype=False)
    (admin,) = query("SELECT school, cases_last_7d FROM covid.school_summary WHERE school_id = '999999'")
    assert admin[0] == "Administrative"


def test_a_wide_file_without_date_columns_is_quarantined(landing, resources, query):
    body = io.BytesIO()
    pd.read_csv(CPS, usecols=["School", "CPS_School_ID", "gTotal"]).to_csv(body, index=False)
    with dg.instance_for_test() as instance:
        result = ingest(landing, resources, drop(landing, "cps_schools/flat.csv", body.getvalue()), instance)
    assert not result.success
    ((status, reason),) = query("SELECT status, reason FROM covid.ingested_files")
    assert status == "quarantined"
    assert "date columns named like 20201231" in reason


# a date column's header written otherwise (its cases would be lost if the file loaded without it), or a
# date's column twice (one of the two would be lost): (column renamed, its new name, what the reason says)
RENAMED_DATE_COLUMNS = {
    "dashes": ("20210227", "2021-02-27", "expected a date column named like 20201231, found '2021-02-27'"),
    "no_such_day": ("20210227", "20210230", "expected a date column named like 20201231, found '20210230'"),
    "zero_left_out": ("20210207", "2021207", "expected a date column named like 20201231, found '2021207'"),
    "date_twice": ("20210220", "20210227", "column '20210227': expected one field named '20210227'"),
}


@pytest.mark.parametrize("name", RENAMED_DATE_COLUMNS)
def test_a_wide_file_with_a_date_column_it_cannot_read_is_quarantined(name, landing, resources, query):
    old, new, reason_has = RENAMED_DATE_COLUMNS[name]
    header, rest = CPS.read_bytes().split(b"\n", 1)
    names = next(csv.reader([header.decode()]))
    position = names.index(old) + 1  # the header is line 1, its first field field 1
    body = ",".join(new if n == old else n for n in names).encode() + b"\n" + rest
    with dg.instance_for_test() as instance:
        result = ingest(landing, resources, drop(landing, "cps_schools/renamed.csv", body), instance)
    assert not result.success
    ((status, reason),) = query("SELECT status, reason FROM covid.ingested_files")
    assert status == "quarantined"
    assert reason.startswith("line 1, ") and reason_has in reason, reason
    if name == "date_twice":
        assert f"field {position} '{new}' and field {names.index(new) + 1} '{new}'" in reason, reason
    else:
        assert f"field {position}: " in reason, reason
    assert query("SELECT to_regclass('covid.school_cases')") == [(None,)]  # the merge never ran
