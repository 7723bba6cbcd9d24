"""Datasets are declared, not programmed: a declaration made only here gets working assets and gates, and a
declaration that cannot work fails at load time naming the dataset and the field."""

import io

import dagster as dg
import pandas as pd
import pytest

from covid_platform.assets.factory import build_dataset_assets
from covid_platform.assets.raw import ETAG_TAG, KEY_TAG, files_partitions
from covid_platform.datasets import Dataset, DatasetError
from covid_platform.engine.ledger import partition_key
from covid_platform_tests.helpers import csv_bytes, drop

HOSPITALS = Dataset(
    name="hospital_admissions",
    table="hospital_daily",
    region=("hospital",),
    attributes=("city",),
    counts=("admissions", "discharges"),
    aliases={"admissions": ("Admitted",)},
    new={"admissions": "new_admissions", "discharges": "new_discharges"},
    rolling_7d=("new_admissions",),
    freshness_hours=48,
)


def materialize(landing, resources, instance, key: str):
    etag = landing.describe(key).etag
    partition = partition_key(key, etag)
    instance.add_dynamic_partitions(files_partitions(HOSPITALS).name, [partition])
    return dg.materialize(
        build_dataset_assets(HOSPITALS), partition_key=partition, instance=instance, resources=resources,
        tags={KEY_TAG: key, ETAG_TAG: etag}, raise_on_error=False,
    )


def test_a_dataset_declared_only_in_a_test_loads(landing, resources, query):
    rows = [
        [f"2021-03-{day:02d}", name, city, 10 * day + i, 3 * day + (day % 4 == 0) * 5, "ignored"]
        for day in range(1, 15)
        for i, (name, city) in enumerate([("St. Mary", "Springfield"), ("General", "")])
    ]
    header = ["date", "hospital", "city", "Admitted", "discharges", "notes"]
    with dg.instance_for_test() as instance:
        result = materialize(landing, resources, instance, drop(landing, "hospital_admissions/march.csv",
                                                                csv_bytes(header, rows)))
    assert result.success
    frame = pd.read_csv(io.BytesIO(csv_bytes(header, rows)), parse_dates=["date"], keep_default_na=False)
    frame = frame.rename(columns={"Admitted": "admissions"})
    expected = expected_rows(frame)
    actual = pd.DataFrame(
        query("SELECT hospital, coalesce(city, ''), date, admissions, discharges, new_admissions, new_discharges, "
              "new_admissions_7d FROM covid.hospital_daily ORDER BY hospital, date"),
        columns=expected.columns,
    )
    actual["date"] = pd.to_datetime(actual["date"])
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False)
    # The declaration's freshness lag reaches the asset.
    (clean_spec,) = build_dataset_assets(HOSPITALS)[1].specs
    policy = clean_spec.freshness_policy
    assert policy.fail_window.to_timedelta().total_seconds() == 48 * 3600


def expected_rows(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.sort_values(["hospital", "date"]).reset_index(drop=True)
    for count in ("admissions", "discharges"):
        frame[f"new_{count}"] = frame.groupby("hospital")[count].diff().fillna(frame[count]).astype("int64")
    frame["new_admissions_7d"] = (
        frame.groupby("hospital")["new_admissions"].rolling(7, min_periods=1).mean().reset_index(drop=True)
    )
    return frame[["hospital", "city", "date", "admissions", "discharges", "new_admissions", "new_discharges",
                  "new_admissions_7d"]]


def test_the_declared_gates_guard_the_new_dataset(landing, resources, query):
    header = ["date", "hospital", "city", "admissions", "discharges"]
    rows = [["2021-03-01", "General", "", 5, 1], ["2021-03-02", "General", "", "five", 1]]
    with dg.instance_for_test() as instance:
        result = materialize(landing, resources, instance, drop(landing, "hospital_admissions/bad.csv",
                                                                csv_bytes(header, rows)))
    assert not result.success
    ((status, reason),) = query("SELECT status, reason FROM covid.ingested_files")
    assert status == "quarantined"
    assert reason.endswith("line 3, column 'admissions': expected a non-negative whole number, got 'five'"), reason
    assert query("SELECT to_regclass('covid.hospital_daily')") == [(None,)]  # nothing reached a clean table


BASE = dict(name="ok", table="ok_daily", region=("region",), counts=("x",), new={"x": "new_x"})


@pytest.mark.parametrize(
    "changes, field, problem",
    [
        ({"name": "Bad Name"}, "name", "lower-case letters"),
        ({"table": "ok;drop"}, "table", "not a valid table name"),
        ({"region": ()}, "region", "at least one column"),
        ({"new": {"y": "new_y"}}, "new", "'y' is not one of the counts"),
        ({"rolling_7d": ("new_z",)}, "rolling_7d", "'new_z' is not a difference or values column"),
        ({"ratios_7d": {"rate": ("new_x",)}}, "ratios_7d", "needs two difference columns"),
        ({"aliases": {"y": ("Y",)}}, "aliases", "'y' is not a column of the files"),
        ({"summaries": ("no_such_summary",)}, "summaries", "no SQL file covid_platform/sql/no_such_summary.sql"),
        ({"attributes": ("x",)}, "columns", "declared twice"),
        # the merge's own column for what a change is, the history's for when a version was issued; an API
        # parameter as a region column (the API's filters are named after them)
        ({"counts": ("x", "kind")}, "columns", "'kind' is a name the platform gives a column of its own"),
        ({"attributes": ("issued_at",)}, "columns", "'issued_at' is a name the platform gives"),
        ({"region": ("limit",)}, "region", "'limit' is a name the platform gives a column of its own beside"),
        ({"date_format": "%m/%d"}, "date_format", "exactly one year"),
        ({"date_format": "%d.%m.%Y %H"}, "date_format", "'%H' is not supported"),
        ({"date_format": "%Y%m%d", "date_in_file_name": "%Y%m%d"}, "date_format", "whose files have a date column"),
        ({"signed": ("x",)}, "signed", "cumulative counts are not signed"),
        ({"decimals": ("y",)}, "decimals", "'y' is not one of the counts or values"),
        ({"nullable": ("y",)}, "nullable", "'y' is not one of the counts or values"),
        ({"region_names": {"county": "name"}}, "region_names", "'county' is not a region column"),
        ({"region_names": {"region": "abbreviation"}}, "region_names", "is not one of ('name', 'code', 'fips')"),
        ({"region_names": {"region": "code"}, "attributes": ("state_fips",)}, "region_names", "other names"),
        ({"measures": {"cases": "x"}}, "measures", "one row per state and date"),
        ({"measures": {"tests": "x"}, "region_names": {"region": "code"}}, "measures", "'tests' is not one of"),
    ],
)
def test_a_declaration_that_cannot_work_names_dataset_and_field(changes, field, problem):
    with pytest.raises(DatasetError) as error:
        Dataset(**{**BASE, **changes})
    assert f"field {field!r}" in str(error.value)
    assert f"dataset {changes.get('name', 'ok')!r}" in str(error.value)
    assert problem in str(error.value)
