"""An empty count is "not reported": loaded as null (never zero, never a bad row) where the dataset declares
it may be empty, and skipped by the derived values, which are checked against pandas.

NYT publishes no deaths for Puerto Rico's municipios (its README); the JHU county file in data/ writes them
as 0. `nyt_published` turns the real JHU rows into what NYT publishes: the municipios' deaths empty.
"""

import dataclasses
import io

import dagster as dg
import pandas as pd
import pytest

from covid_platform.assets.factory import build_dataset_assets
from covid_platform.assets.raw import ETAG_TAG, KEY_TAG, files_partitions
from covid_platform.datasets import US_COUNTIES, DatasetError
from covid_platform.engine.ledger import partition_key
from covid_platform_tests.helpers import PR_DE, data_file, drop, ingest, nyt_published, nyt_states_slice
from covid_platform_tests.oracles import with_differences, with_rolling_7d

COUNTY_COLUMNS = ["state", "county", "date", "cases", "deaths", "new_cases", "new_deaths", "new_cases_7d"]


def expected_county_daily(*files: bytes) -> pd.DataFrame:
    """The clean table computed with pandas: later files win each key, then the derived columns."""
    frame = pd.concat(
        pd.read_csv(io.BytesIO(data), parse_dates=["date"], dtype={"fips": str}) for data in files
    ).drop_duplicates(["state", "county", "date"], keep="last")
    frame = with_differences(frame, {"cases": "new_cases", "deaths": "new_deaths"}, region=("state", "county"))
    frame = with_rolling_7d(frame, ["new_cases"], region=("state", "county"))
    return frame[COUNTY_COLUMNS].astype({c: "float64" for c in COUNTY_COLUMNS[3:]})


def county_daily(query) -> pd.DataFrame:
    rows = query(
        'SELECT state, county, date, cases, deaths, new_cases, new_deaths, new_cases_7d FROM covid.county_daily '
        'ORDER BY state COLLATE "C", county COLLATE "C", date'
    )
    frame = pd.DataFrame(rows, columns=COUNTY_COLUMNS)
    frame["date"] = pd.to_datetime(frame["date"])
    return frame.astype({c: "float64" for c in COUNTY_COLUMNS[3:]})


def test_nyt_county_file_with_unreported_deaths_loads_as_published(landing, resources, query):
    data = nyt_published(data_file(PR_DE))
    with dg.instance_for_test() as instance:
        result = ingest(landing, resources, drop(landing, "us_counties/us-counties-recent.csv", data), instance)
    assert result.success
    assert query("SELECT status, rows, rows_loaded FROM covid.ingested_files") == [("loaded", 2520, 2520)]
    assert query("SELECT count(*) FROM covid.rejected_rows") == [(0,)]

    expected = expected_county_daily(data)
    empty = expected["deaths"].isna()
    assert empty.sum() == 79 * 30 + 10, "every municipio's deaths, and Kent's ten days"
    actual = county_daily(query)
    assert actual["deaths"].isna().equals(empty), "not reported stays null: never zero"
    pd.testing.assert_frame_equal(actual, expected, check_exact=False, rtol=1e-9, check_dtype=False)
    kent = expected[expected["county"] == "Kent"].set_index("date")
    assert kent.loc["2021-03-02", "new_deaths"] == kent.loc["2021-03-02", "deaths"] - kent.loc["2021-02-19", "deaths"]


def test_a_later_file_merges_across_unreported_days(landing, resources, query):
    """The second file starts inside Kent's gap's reach: its new_deaths need the value before the gap, which
    the merge must read although it lies more than 7 rows back."""
    first = nyt_published(data_file(PR_DE), keep=lambda date: date <= "2021-03-05")
    revised = nyt_published(data_file(PR_DE), keep=lambda date: date >= "2021-03-02")
    revised = revised.replace(b",Kent,Delaware,10001,", b",Kent,Delaware,10001,1", 1)  # one cumulative revised up
    with dg.instance_for_test() as instance:
        for name, data in (("first.csv", first), ("second.csv", revised)):
            assert ingest(landing, resources, drop(landing, f"us_counties/{name}", data), instance).success
    pd.testing.assert_frame_equal(county_daily(query), expected_county_daily(first, revised), check_exact=False,
                                  rtol=1e-9, check_dtype=False)


def test_national_totals_carry_a_states_last_reported_value(landing, resources, query):
    """Puerto Rico reports no deaths at all and Ohio none on 2021-01-10: that day counts Ohio's deaths of the
    day before (not reported is not zero: the nation's deaths do not fall), Puerto Rico adds nothing, and the
    national differences skip nothing but empty totals."""
    header, *rows = nyt_states_slice("2021-01-01", "2021-01-20").decode().splitlines()
    blanked = [header] + [
        ",".join(f[:4] + [""]) if f[1] == "Puerto Rico" or (f[1] == "Ohio" and f[0] == "2021-01-10") else line
        for line in rows
        for f in [line.split(",")]
    ]
    data = "\r\n".join(blanked + [""]).encode()
    with dg.instance_for_test() as instance:
        assert ingest(landing, resources, drop(landing, "us_states/blanks.csv", data), instance).success

    states = pd.read_csv(io.BytesIO(data), parse_dates=["date"]).sort_values(["state", "date"])
    states["deaths"] = states.groupby("state")["deaths"].ffill()  # every state has a row on every date here
    national = states.groupby("date")[["cases", "deaths"]].sum(min_count=1).reset_index().assign(region="US")
    national = with_differences(national, {"cases": "new_cases", "deaths": "new_deaths"}, region=("region",))
    national = with_rolling_7d(national, ["new_cases", "new_deaths"], region=("region",))
    columns = ["date", "cases", "deaths", "new_cases", "new_deaths", "new_cases_7d", "new_deaths_7d"]
    actual = pd.DataFrame(query(f"SELECT {', '.join(columns)} FROM covid.national_daily ORDER BY date"),
                          columns=columns)
    actual["date"] = pd.to_datetime(actual["date"])
    pd.testing.assert_frame_equal(actual.astype({c: float for c in columns[1:]}),
                                  national[columns].astype({c: float for c in columns[1:]}), check_exact=False,
                                  check_dtype=False)
    assert query("SELECT count(*) FROM covid.state_daily WHERE deaths IS NULL") == [(21,)]
    others = states[~states["state"].isin(["Ohio", "Puerto Rico"])].set_index(["date", "state"])["deaths"]
    day_before = others.xs(pd.Timestamp("2021-01-09")).sum()
    assert query("SELECT new_deaths FROM covid.national_daily WHERE date = '2021-01-10'") == [
        (others.xs(pd.Timestamp("2021-01-10")).sum() - day_before,)]


def test_a_value_that_is_not_a_count_is_still_bad(landing, resources, query):
    lines = nyt_published(data_file(PR_DE)).split(b"\r\n")
    bad = lines.index(next(line for line in lines if b",Kent,Delaware," in line and not line.endswith(b",")))
    lines[bad] = lines[bad].rsplit(b",", 1)[0] + b",n/a"
    data = b"\r\n".join(lines)
    with dg.instance_for_test() as instance:
        assert ingest(landing, resources, drop(landing, "us_counties/na.csv", data), instance).success
    assert query("SELECT line, reason FROM covid.rejected_rows") == [
        (bad + 1, "column 'deaths': expected a non-negative whole number or an empty field, got 'n/a'")
    ]


def test_a_file_quarantined_under_an_older_rule_loads_from_the_archive(landing, resources, query):
    """Before empty deaths were declared, this file was quarantined. Once the declaration allows them,
    materializing its raw partition again (as from the UI: no tags) loads it from the archive, although
    the landing key has been deleted since."""
    strict = dataclasses.replace(US_COUNTIES, name="counties_recent", table="counties_recent", nullable=(),
                                 pull=None, stream=None)  # nothing fetched from the internet
    relaxed = dataclasses.replace(strict, nullable=("deaths",))
    key = drop(landing, "counties_recent/us-counties-recent.csv", nyt_published(data_file(PR_DE)))
    etag = landing.describe(key).etag
    partition = partition_key(key, etag)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(files_partitions(strict).name, [partition])
        first = dg.materialize(build_dataset_assets(strict), partition_key=partition, instance=instance,
                               resources=resources, tags={KEY_TAG: key, ETAG_TAG: etag}, raise_on_error=False)
        assert not first.success
        ((status, reason),) = query("SELECT status, reason FROM covid.ingested_files")
        assert status == "quarantined" and "column 'deaths': expected a non-negative whole number" in reason

        landing.client().delete_object(Bucket=landing.bucket, Key=landing.prefix + key)
        again = dg.materialize(build_dataset_assets(relaxed), partition_key=partition, instance=instance,
                               resources=resources, raise_on_error=False)
    assert again.success
    assert query("SELECT status, reason, rows_loaded FROM covid.ingested_files") == [("loaded", None, 2520)]
    assert query("SELECT count(*), count(deaths) FROM covid.counties_recent") == [(2520, 2520 - 79 * 30 - 10)]


def test_only_counts_may_be_declared_empty():
    with pytest.raises(DatasetError, match="dataset 'us_counties', field 'nullable': 'fips' is not one of"):
        dataclasses.replace(US_COUNTIES, nullable=("fips",))
