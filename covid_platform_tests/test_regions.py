"""One geography across sources, and declarations for other publishers' layouts (issue 16).

The README's example declarations are executed as written and loaded here, on files made in the test:
- a CDC-shaped "cases and deaths by state over time" file (`submission_date` written 01/22/2020, postal codes,
  signed daily values, New York City reported apart), whose state rows are NYT's real values (data/) — Florida's
  real revision of 2021-06-04 among them — and whose NYC rows are real-shaped, not real (NYT's NYC series is
  not shipped): made up below, plausible in size;
- a vaccination-shaped file of rates per hundred people (decimals): NYT's real cumulative cases of three states
  per hundred residents (Census 2019 estimates), standing in for vaccination rates, written with 2 decimals.
Each table is compared with pandas; `covid.regions` with the FIPS codes of the shipped NYT and JHU slices;
`source_comparison` with pandas on the shipped NYT, JHU and COVID Tracking slices of 2020-12-01 to 12-10.
"""

import dataclasses
import csv
import io
import re
from datetime import datetime
from decimal import Decimal

import dagster as dg
import pandas as pd
import pytest

from covid_platform.assets.comparison import CHECK
from covid_platform.assets.factory import build_dataset_assets
from covid_platform.assets.raw import ETAG_TAG, KEY_TAG, files_partitions
from covid_platform.datasets import COMPARISON_TOLERANCE, US_STATES, Dataset, DatasetError
from covid_platform.engine import regions
from covid_platform.engine.ledger import partition_key
from covid_platform_tests.helpers import REPO, TEST_DATA, county_rows, data_file, drop, ingest, nyt_states_slice
from covid_platform_tests.oracles import assert_tables_match, read_nyt

# FIPS codes as the Census Bureau publishes them, written here independently of covid.regions
CENSUS_FIPS = {"NY": "36", "WA": "53", "OR": "41", "FL": "12", "AS": "60", "MP": "69", "PR": "72"}
CENSUS_2019_POPULATION = {"New York": 19_453_561, "Washington": 7_614_893, "Oregon": 4_217_737}
NYC_FIPS = "3651000"


def readme_declarations() -> dict[str, str]:
    """The Python blocks of the README's "Adding a dataset" section, by the name each declares."""
    section = (REPO / "README.md").read_text().split("## Adding a dataset", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    return {name: block for block in blocks for name in re.findall(r"^(\w+) = Dataset\(", block, re.MULTILINE)}


def declared(name: str) -> Dataset:
    namespace = {"Dataset": Dataset}
    exec(readme_declarations()[name], namespace)  # noqa: S102 - the README is this repository's own text, run as written: a declaration the README shows must load
    return namespace[name]


def test_the_readme_examples_run_as_written():
    blocks = readme_declarations()
    assert {"HOSPITAL_ADMISSIONS", "CDC_CASES", "VACCINATION_RATES"} <= set(blocks)
    cdc, rates = declared("CDC_CASES"), declared("VACCINATION_RATES")
    assert cdc.date_format == "%m/%d/%Y" and cdc.signed == ("new_case", "new_death")
    assert rates.decimals == ("people_vaccinated_per_hundred",) and rates.region_columns == ("state_fips", "state_name")
    hospitals = declared("HOSPITAL_ADMISSIONS")
    assert hospitals.key == ("state", "date") and hospitals.rolling_columns == ("new_admissions_7d",)


def load(landing, resources, instance, dataset: Dataset, key: str, data: bytes):
    drop(landing, key, data)
    etag = landing.describe(key).etag
    partition = partition_key(key, etag)
    instance.add_dynamic_partitions(files_partitions(dataset).name, [partition])
    return dg.materialize(build_dataset_assets(dataset), partition_key=partition, instance=instance,
                          resources=resources, tags={KEY_TAG: key, ETAG_TAG: etag}, raise_on_error=False)


def nyt_frame(first: str, last: str, states=None) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(nyt_states_slice(first, last, states)), dtype={"fips": str})


# --- the regions -------------------------------------------------------------------------------------


def test_regions_agree_with_the_fips_codes_of_nyt_and_jhu(warehouse, query):
    with warehouse.connect():  # the first connection creates the schema and loads the regions
        pass
    by_name = {name: (fips, code, kind, part_of) for fips, code, name, kind, part_of in
               query("SELECT fips, code, name, kind, part_of FROM covid.regions")}
    nyt = nyt_frame("2020-06-01", "2021-02-28")[["state", "fips"]].drop_duplicates()
    assert len(nyt) == 55
    for state, fips in nyt.itertuples(index=False):
        assert by_name[state][0] == fips, state
    for day in range(1, 11):
        jhu = pd.read_csv(TEST_DATA / f"jhu_daily_us/12-{day:02d}-2020.csv")
        for state, fips in jhu[["Province_State", "FIPS"]].itertuples(index=False):
            assert int(by_name[state][0]) == int(fips), state  # JHU writes 1.0 for 01; its ships 88888, 99999
    assert len(by_name) == len(regions.rows()) == 62
    assert by_name["New York City"] == (NYC_FIPS, "NYC", "city", "NY")
    codes = query("SELECT key FROM covid.region_keys WHERE naming = 'code'")
    assert len(codes) == len(set(codes)) and {("FSM",), ("RMI",), ("NYC",)} <= set(codes)
    assert query("SELECT count(*) FROM covid.regions WHERE part_of IS NOT NULL "
                 "AND part_of NOT IN (SELECT code FROM covid.regions WHERE code IS NOT NULL)") == [(0,)]


def test_a_region_that_names_nothing_is_a_bad_row_naming_the_nearest(landing, resources, query):
    data = nyt_states_slice("2020-12-01", "2020-12-02").replace(b",New York,36,", b",Nwe York,36,", 1)
    with dg.instance_for_test() as instance:
        result = ingest(landing, resources, drop(landing, "us_states/typo.csv", data), instance)
    assert result.success
    ((line, reason),) = query("SELECT line, reason FROM covid.rejected_rows")
    assert reason == "column 'state': expected a region's full name as in covid.regions, got 'Nwe York' " \
                     "(nearest known: 'New York')"
    assert data.splitlines()[line - 1].split(b",")[1] == b"Nwe York"
    assert query("SELECT count(*) FROM covid.state_daily WHERE state_fips IS NULL OR state_name <> state") == [(0,)]
    assert query("SELECT count(*) FROM covid.state_daily") == [(len(data.splitlines()) - 2,)]


def test_a_fips_whose_leading_zeros_a_spreadsheet_dropped_is_stored_with_them(landing, resources, query):
    """Re-saved by a spreadsheet, Alabama's FIPS 01 is 1 and Hartford County's 09003 is 9003 (here on odd
    days only, so each region has both): stored as the publisher's files write them, one code per region, and
    the publisher's own file after it changes nothing. A code with other characters is kept as written."""
    originals = {"us_states": nyt_states_slice("2020-12-01", "2020-12-10", {"Alabama", "California", "New York"}),
                 "us_counties": county_rows("2020-04-01", "2020-04-10", {"Connecticut"})}

    def resaved(data: bytes) -> bytes:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        odd = frame["date"].str[-1].astype(int) % 2 == 1
        frame.loc[odd, "fips"] = frame.loc[odd, "fips"].str.lstrip("0")
        frame.loc[frame["state"] == "New York", "fips"] = "36x"  # not only digits
        return frame.to_csv(index=False).encode()

    with dg.instance_for_test() as instance:
        for dataset, data in originals.items():
            assert ingest(landing, resources, drop(landing, f"{dataset}/resaved.csv", resaved(data)), instance).success
    for dataset, table, region in (("us_states", "state_daily", "state"), ("us_counties", "county_daily", "county")):
        expected = pd.read_csv(io.BytesIO(originals[dataset]), dtype=str, keep_default_na=False)
        stripped = expected["fips"].str.startswith("0").sum()
        assert stripped >= 10, f"{dataset}: codes with a leading zero to lose"
        expected.loc[expected["state"] == "New York", "fips"] = "36x"
        expected = sorted(zip(expected[region], expected["date"], [fips or None for fips in expected["fips"]]))
        stored = query(f"SELECT {region}, date::text, fips FROM covid.{table}")
        assert sorted(stored, key=lambda row: (row[0], row[1])) == expected, dataset
    history = query("SELECT count(*) FROM covid.state_daily_history")
    with dg.instance_for_test() as instance:
        publisher = originals["us_states"].replace(b",New York,36,", b",New York,36x,")
        assert ingest(landing, resources, drop(landing, "us_states/published.csv", publisher), instance).success
    assert query("SELECT count(*) FROM covid.state_daily_history") == history, "no value changed"


def test_zero_pad_is_declared_for_an_attribute_with_a_width():
    for zero_pad, says in (({"cases": 2}, "'cases' is not one of the attributes"), ({"fips": 1}, "not a width")):
        with pytest.raises(DatasetError, match=f"dataset 'us_states', field 'zero_pad': .*{says}"):
            dataclasses.replace(US_STATES, zero_pad=zero_pad)


# --- CDC's layout: postal codes, MM/DD/YYYY, signed daily values, NYC apart -----------------------------

CDC_HEADER = ["submission_date", "state", "tot_cases", "conf_cases", "prob_cases", "new_case", "pnew_case",
              "tot_death", "conf_death", "prob_death", "new_death", "pnew_death", "created_at", "consent_cases",
              "consent_deaths"]
CDC_STATES = {"New York": "NY", "Washington": "WA", "Oregon": "OR", "Florida": "FL"}
UNREPORTED = ("OR", "2020-12-05")  # a day whose new deaths the file leaves empty (not reported)


def cdc_rows() -> list[dict]:
    """CDC-shaped rows: NYT's real state values (their daily differences as new_case and new_death) for
    2020-11-28 to 12-10, Florida's 2021-06-01 to 06-07 (the revision of 06-04: new_case −40,527), and New
    York City's rows, made up (real-shaped: NYC was near 330,000 cases and 24,000 deaths then)."""
    frame = pd.concat([nyt_frame("2020-11-27", "2020-12-10", set(CDC_STATES) - {"Florida"}),
                       nyt_frame("2021-05-31", "2021-06-07", {"Florida"})])
    frame = frame.sort_values(["state", "date"])
    frame["new_case"] = frame.groupby("state")["cases"].diff()
    frame["new_death"] = frame.groupby("state")["deaths"].diff()
    frame = frame.dropna(subset=["new_case"])  # the day before each series: only its difference was needed
    rows = [{"date": d, "state": CDC_STATES[s], "tot_cases": c, "tot_death": t, "new_case": int(n),
             "new_death": int(m)} for d, s, c, t, n, m in
            frame[["date", "state", "cases", "deaths", "new_case", "new_death"]].itertuples(index=False)]
    cases, deaths = 330_000, 24_300
    for day in pd.date_range("2020-11-28", "2020-12-10"):
        new_case, new_death = 2_000 + 37 * day.day, 10 + day.day % 7 - (day.day == 6) * 14  # one revision down
        cases, deaths = cases + new_case, deaths + new_death
        rows.append({"date": day.strftime("%Y-%m-%d"), "state": "NYC", "tot_cases": cases, "tot_death": deaths,
                     "new_case": new_case, "new_death": new_death})
    for row in rows:
        if (row["state"], row["date"]) == UNREPORTED:
            row["new_death"] = None
    return rows


def cdc_file(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CDC_HEADER)
    for row in reversed(rows):  # CDC's files are not in date order
        day = datetime.strptime(row["date"], "%Y-%m-%d").strftime("%m/%d/%Y")
        writer.writerow([day, row["state"], row["tot_cases"], "", "", row["new_case"], "", row["tot_death"], "", "",
                         "" if row["new_death"] is None else row["new_death"], "", "03/26/2021 04:16:55 PM",
                         "Agree", "Agree"])
    return out.getvalue().encode()


@pytest.mark.parametrize("text_path", [False, True], ids=["typed", "text"])
def test_a_region_written_in_another_case_is_the_region_as_covid_regions_writes_it(text_path, landing, resources,
                                                                                 query):
    """'TEXAS' names Texas (names are matched whatever their case), so it is stored as 'Texas': one key, not
    a second state beside Texas counted twice in the national totals. A later file writing 'Texas' revises it."""
    first = read_nyt(nyt_states_slice("2021-01-01", "2021-01-10", {"Texas", "Ohio"}))
    later = read_nyt(nyt_states_slice("2021-01-08", "2021-01-12", {"Texas", "Ohio"}))
    later["cases"] += 7  # every value revised: which file won is visible
    written = first.assign(state=first["state"].str.upper(), date=first["date"].dt.strftime("%Y-%m-%d"))
    if text_path:  # a date COPY cannot type: the file is read as text
        written.loc[0, "date"] = " " + written.loc[0, "date"]
    with dg.instance_for_test() as instance:
        for key, frame in (("us_states/capitals.csv", written), ("us_states/later.csv", later)):
            body = frame.to_csv(index=False, date_format="%Y-%m-%d").encode()
            assert ingest(landing, resources, drop(landing, key, body), instance).success
    expected = pd.concat([first[first["date"] < "2021-01-08"], later], ignore_index=True)
    assert_tables_match(query, expected)
    assert query("SELECT DISTINCT state, state_name FROM covid.state_daily ORDER BY 1") == [
        ("Ohio", "Ohio"), ("Texas", "Texas")]


def test_a_cdc_file_loads_with_its_dates_signs_and_nyc_apart(landing, resources, query):
    cdc = declared("CDC_CASES")
    rows = cdc_rows()
    assert min(r["new_case"] for r in rows) == -40_527  # Florida's revision, kept with its sign
    with dg.instance_for_test() as instance:
        result = load(landing, resources, instance, cdc, "cdc_cases/cases_by_state.csv", cdc_file(rows))
    assert result.success
    assert query("SELECT status, rows, rows_loaded FROM covid.ingested_files") == [("loaded", len(rows), len(rows))]
    # its dates read in their declared format as COPY reads the rows, straight into typed columns
    assert query("SELECT columns->>'copied' FROM covid.ingested_files") == [("typed",)]

    expected = pd.DataFrame(rows)
    fips = {**CENSUS_FIPS, "NYC": NYC_FIPS}
    names = {**{code: name for name, code in CDC_STATES.items()}, "NYC": "New York City"}
    expected["state_fips"] = expected["state"].map(fips)
    expected["state_name"] = expected["state"].map(names)
    expected["date"] = pd.to_datetime(expected["date"])
    expected = expected.sort_values(["state", "date"]).reset_index(drop=True)
    expected["new_case_7d"] = expected.groupby("state")["new_case"].transform(lambda x: x.rolling(7, min_periods=1).mean())
    columns = ["state", "state_fips", "state_name", "date", "tot_cases", "tot_death", "new_case", "new_death",
               "new_case_7d"]
    actual = pd.DataFrame(query(
        f"SELECT {', '.join(columns)} FROM covid.cdc_state_daily ORDER BY state COLLATE \"C\", date"), columns=columns)
    actual["date"] = pd.to_datetime(actual["date"])
    numbers = columns[4:]
    pd.testing.assert_frame_equal(actual.astype({c: "float64" for c in numbers}),
                                  expected[columns].astype({c: "float64" for c in numbers}), check_dtype=False)
    # New York City stays apart, marked as part of New York; New York State is what the file said of it
    assert query("SELECT r.kind, r.part_of FROM covid.cdc_state_daily AS t JOIN covid.regions AS r "
                 "ON r.fips = t.state_fips WHERE t.state = 'NYC' GROUP BY 1, 2") == [("city", "NY")]
    ny = {(d, c) for d, s, c in zip(expected["date"], expected["state"], expected["tot_cases"]) if s == "NY"}
    assert {(pd.Timestamp(d), c) for d, c in query(
        "SELECT date, tot_cases FROM covid.cdc_state_daily WHERE state_fips = '36'")} == ny


def test_a_day_first_format_is_read_day_first_whatever_the_servers_date_style(landing, resources, query):
    # the same file with its dates written day first: 13/12/2020 is no date to a month-first DateStyle
    day_first = dataclasses.replace(declared("CDC_CASES"), date_format="%d/%m/%Y")
    rows = cdc_rows()
    data = cdc_file(rows).decode()
    for row in rows:
        day = datetime.strptime(row["date"], "%Y-%m-%d")
        data = data.replace(f"\n{day:%m/%d/%Y},", f"\n{day:%d/%m/%Y},")
    data = data.replace("\n01/12/2020,WA,", "\n2020-12-01,WA,", 1)  # one bad row: the detailed gates read them all
    with dg.instance_for_test() as instance:
        load(landing, resources, instance, day_first, "cdc_cases/day-first.csv", data.encode())
    ((status, reason),) = query("SELECT status, reason FROM covid.ingested_files")
    assert status == "quarantined"  # one row of 59: more than 1% of the file
    assert "line " in reason and "expected a date written like 22/01/2020 (%d/%m/%Y), got '2020-12-01'" in reason, reason


@pytest.mark.parametrize("same_values", [True, False], ids=["repeat", "conflict"])
def test_a_declared_date_with_spaces_around_it_is_the_same_key(same_values, landing, resources, query):
    # the file's first row again at its end, its date with spaces around it (the gates trim it)
    rows = cdc_rows()
    lines = cdc_file(rows).decode().splitlines(keepends=True)
    again = lines[1].split(",")
    again[0] = f" {again[0]} "
    if not same_values:
        again[2] = str(int(again[2]) + 1)  # tot_cases
    data = "".join(lines) + ",".join(again)
    with dg.instance_for_test() as instance:
        # the file is small: its two conflicting rows are more than the default 1%
        cdc = dataclasses.replace(declared("CDC_CASES"), max_bad_row_share=0.05)
        assert load(landing, resources, instance, cdc, "cdc_cases/spaces.csv", data.encode()).success
    rejected = query("SELECT line, reason FROM covid.rejected_rows ORDER BY line")
    if same_values:  # loaded once
        assert rejected == []
        assert query("SELECT rows, rows_loaded FROM covid.ingested_files") == [(len(rows) + 1, len(rows))]
    else:  # neither can be trusted
        assert [line for line, _ in rejected] == [2, len(lines) + 1]
        assert f"appears on lines 2 and {len(lines) + 1} with different values" in rejected[0][1], rejected
        assert query("SELECT rows, rows_loaded FROM covid.ingested_files") == [(len(rows) + 1, len(rows) - 1)]


def test_a_cdc_date_in_another_format_is_a_bad_row_naming_the_format(landing, resources, query):
    rows = cdc_rows()
    data = cdc_file(rows).replace(b"\n12/01/2020,WA,", b"\n2020-12-01,WA,", 1)
    with dg.instance_for_test() as instance:
        result = load(landing, resources, instance, declared("CDC_CASES"), "cdc_cases/iso.csv", data)
    assert not result.success  # one row of 59: more than 1% of the file
    ((reason,),) = query("SELECT reason FROM covid.ingested_files")
    assert "column 'date': expected a date written like 01/22/2020 (%m/%d/%Y), got '2020-12-01'" in reason, reason


# --- rates per hundred people (decimals) --------------------------------------------------------------


def rates_file() -> tuple[bytes, pd.DataFrame]:
    frame = nyt_frame("2021-01-01", "2021-02-28", set(CENSUS_2019_POPULATION))
    frame["rate"] = [f"{Decimal(c) * 100 / CENSUS_2019_POPULATION[s]:.2f}" for s, c in zip(frame["state"], frame["cases"])]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["date", "location", "total_vaccinations", "people_vaccinated_per_hundred"])
    writer.writerows([d, s, "", r] for d, s, r in frame[["date", "state", "rate"]].itertuples(index=False))
    return out.getvalue().encode(), frame


def test_rates_per_hundred_load_exactly_as_decimals(landing, resources, query):
    data, frame = rates_file()
    with dg.instance_for_test() as instance:
        result = load(landing, resources, instance, declared("VACCINATION_RATES"), "vaccination_rates/r.csv", data)
    assert result.success
    # numeric's own input would also read '1e5' and 'NaN': decimals are read as text, then cast as the gates say
    assert query("SELECT columns->>'copied' FROM covid.ingested_files") == [("text",)]
    frame = frame.sort_values(["state", "date"]).reset_index(drop=True)
    rate = frame["rate"].map(Decimal)
    frame["new"] = rate - rate.groupby(frame["state"]).shift().fillna(Decimal(0))
    frame["new_7d"] = frame.groupby("state")["new"].transform(lambda x: x.astype(float).rolling(7, min_periods=1).mean())
    actual = query("SELECT location, date::text, people_vaccinated_per_hundred::text, new_per_hundred, "
                   "new_per_hundred_7d, state_fips FROM covid.vaccination_rates_daily "
                   "ORDER BY location COLLATE \"C\", date")
    assert [r[:4] for r in actual] == list(zip(frame["state"], frame["date"], frame["rate"], frame["new"]))
    assert [r[4] for r in actual] == pytest.approx(list(frame["new_7d"]), rel=1e-12)
    assert {r[5] for r in actual} == {"36", "53", "41"}
    assert query("SELECT data_type FROM information_schema.columns WHERE table_name = 'vaccination_rates_daily' "
                 "AND column_name IN ('people_vaccinated_per_hundred', 'new_per_hundred') ") == [("numeric",)] * 2


def test_an_empty_decimal_that_may_be_empty_is_not_reported(landing, resources, query):
    rates = dataclasses.replace(declared("VACCINATION_RATES"), nullable=("people_vaccinated_per_hundred",))
    data, frame = rates_file()
    lines = data.decode().split("\n")
    lines[5] = lines[5].rsplit(",", 1)[0] + ","  # an unquoted empty field: NULL to COPY, never NaN or 0
    with dg.instance_for_test() as instance:
        assert load(landing, resources, instance, rates, "vaccination_rates/r.csv", "\n".join(lines).encode()).success
    date, state = lines[5].split(",")[:2]
    assert query("SELECT people_vaccinated_per_hundred FROM covid.vaccination_rates_daily "
                 "WHERE location = %s AND date = %s", (state, date)) == [(None,)]
    assert query("SELECT count(*) FROM covid.vaccination_rates_daily WHERE people_vaccinated_per_hundred = 'NaN'") == [(0,)]
    assert query("SELECT count(*) FROM covid.vaccination_rates_daily") == [(len(frame),)]


# --- sources side by side -------------------------------------------------------------------------------

CT_DECEMBER = "covidtracking/all-states-history_2020-12-10_december.csv"


def expected_comparison() -> pd.DataFrame:
    """source_comparison computed with pandas from the slices' own FIPS columns (and Census codes)."""
    nyt = nyt_frame("2020-12-01", "2020-12-10").rename(columns={"fips": "state_fips", "state": "state_name"})
    nyt = nyt.rename(columns={"cases": "cases_us_states", "deaths": "deaths_us_states"})
    jhu = []
    for day in range(1, 11):
        frame = pd.read_csv(TEST_DATA / f"jhu_daily_us/12-{day:02d}-2020.csv")
        frame["date"] = f"2020-12-{day:02d}"
        frame["state_fips"] = frame["FIPS"].astype(int).astype(str).str.zfill(2)
        jhu.append(frame.rename(columns={"Province_State": "state_name", "Confirmed": "cases_jhu_daily_us",
                                         "Deaths": "deaths_jhu_daily_us"}))
    jhu = pd.concat(jhu)
    ct = pd.read_csv(io.BytesIO(data_file(CT_DECEMBER)))
    ct["state_fips"] = ct["state"].map(CENSUS_FIPS)
    ct = ct.rename(columns={"positive": "cases_covidtracking"})
    keys = ["state_fips", "date"]
    frame = (nyt[[*keys, "state_name", "cases_us_states", "deaths_us_states"]]
             .merge(jhu[[*keys, "state_name", "cases_jhu_daily_us", "deaths_jhu_daily_us"]], on=keys, how="outer",
                    suffixes=("", "_jhu"))
             .merge(ct[[*keys, "cases_covidtracking"]], on=keys, how="outer"))
    frame["state_name"] = frame["state_name"].fillna(frame.pop("state_name_jhu"))
    for measure, sources in (("cases", ["us_states", "covidtracking", "jhu_daily_us"]),
                             ("deaths", ["us_states", "jhu_daily_us"])):
        values = frame[[f"{measure}_{s}" for s in sources]]
        frame[f"{measure}_sources"] = values.notna().sum(axis=1)
        frame[f"{measure}_low"], frame[f"{measure}_high"] = values.min(axis=1), values.max(axis=1)
        spread = ((frame[f"{measure}_high"] - frame[f"{measure}_low"]) / frame[f"{measure}_high"]).fillna(0)
        frame[f"{measure}_spread"] = spread.where(frame[f"{measure}_sources"] >= 2)
        frame[f"{measure}_disagree"] = frame[f"{measure}_spread"] > COMPARISON_TOLERANCE
    return frame.sort_values(keys).reset_index(drop=True)


def test_source_comparison_matches_pandas_on_the_shipped_slices(landing, resources, query):
    with dg.instance_for_test() as instance:
        for key, data in [("us_states/december.csv", nyt_states_slice("2020-12-01", "2020-12-10")),
                          *((f"jhu_daily_us/12-{d:02d}-2020.csv", data_file(f"jhu_daily_us/12-{d:02d}-2020.csv"))
                            for d in range(1, 11)),
                          ("covidtracking/december.csv", data_file(CT_DECEMBER))]:
            result = ingest(landing, resources, drop(landing, key, data), instance)
            assert result.success, key
    expected = expected_comparison()
    columns = list(expected.columns)
    actual = pd.DataFrame(query(f"SELECT {', '.join(columns)} FROM covid.source_comparison "
                                "ORDER BY state_fips COLLATE \"C\", date"), columns=columns)
    actual["date"] = actual["date"].astype(str)
    numeric = [c for c in columns if c not in ("state_fips", "state_name", "date") and not c.endswith("_disagree")]
    pd.testing.assert_frame_equal(actual.astype({c: "float64" for c in numeric}),
                                  expected.astype({c: "float64" for c in numeric}), check_dtype=False)
    assert expected["cases_disagree"].any()  # the sources do disagree somewhere: the flag is exercised

    # the check: the disagreements in the rows of the latest file (the COVID Tracking one)
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == CHECK]
    latest = query("SELECT max(file_id) FROM covid.ingested_files")[0][0]
    touched = query("SELECT count(*) FILTER (WHERE cases_disagree) + count(*) FILTER (WHERE deaths_disagree) "
                    "FROM covid.source_comparison WHERE last_file_id = %s", (latest,))[0][0]
    ct_keys = expected.dropna(subset=["cases_covidtracking"])
    assert touched == ct_keys["cases_disagree"].sum() + ct_keys["deaths_disagree"].sum() > 0
    assert evaluation.metadata["disagreements"].value == touched and not evaluation.passed
