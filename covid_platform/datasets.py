"""The datasets the platform ingests, declared in one place.

A dataset is a landing prefix (`<LANDING_URL>/<name>/…csv`), the columns its files carry (with the other
names they have had), the columns that identify a row, its cumulative counts and what is derived from
them, the clean table its rows are merged into, and the summary tables built from that table. Assets,
checks, jobs and the sensor's routing are all built from these declarations; adding a dataset of a
known shape is a new entry here (plus a summary SQL file if it has summaries) and a test.
"""

import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Mapping

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class DatasetError(ValueError):
    """A declaration that cannot work; says which dataset and which field."""

    def __init__(self, dataset: str, field_name: str, problem: str):
        super().__init__(f"dataset {dataset!r}, field {field_name!r}: {problem}")


@dataclass(frozen=True)
class Dataset:
    name: str
    """Landing prefix, and the suffix of the dataset's raw asset (`raw_<name>`)."""
    table: str
    """Clean table in the `covid` schema: one row per region and date."""
    region: tuple[str, ...]
    """Columns naming the region; with `date` they are the row key and may not be empty."""
    counts: tuple[str, ...]
    """Cumulative counts, non-negative integers ("12" or "12.0")."""
    new: Mapping[str, str] = field(default_factory=dict)
    """count → column holding its daily difference: x minus x on the region's previous date (x on its first
    date; null when x or the previous value is null; negative revisions kept)."""
    rolling_7d: tuple[str, ...] = ()
    """Difference columns also averaged over the row and the 6 rows before it (as `<column>_7d`)."""
    ratios_7d: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """column → (numerator, denominator): difference columns summed over the 7 calendar days ending on the
    row's date, divided; null when the denominator's sum is 0 or null."""
    attributes: tuple[str, ...] = ()
    """Descriptive text columns that may be empty (e.g. fips)."""
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """column → other header names it has had (headers match case-insensitively)."""
    nullable_counts: bool = False
    """Counts may be empty (stored as null) instead of failing the counts gate."""
    date_in_file_name: str | None = None
    """For one-file-per-day sources: the `strptime` format of the file name (without .csv); no date column."""
    summaries: tuple[str, ...] = ()
    """Summary tables rebuilt after each load, each by `covid_platform/sql/<name>.sql`."""
    freshness_hours: float = 26
    """Maximum age of the last successful load before the dataset's tables count as stale."""

    def __post_init__(self):
        def fail(field_name: str, problem: str):
            raise DatasetError(self.name, field_name, problem)

        if not NAME.match(self.name):
            fail("name", "must be lower-case letters, digits and _ (it is an S3 prefix and an asset name)")
        for field_name in ("table", *(f"summaries[{i}]" for i in range(len(self.summaries)))):
            value = self.table if field_name == "table" else self.summaries[int(field_name[10:-1])]
            if not NAME.match(value):
                fail(field_name, f"{value!r} is not a valid table name")
        if not self.region:
            fail("region", "at least one column names the region")
        if not self.counts:
            fail("counts", "at least one count is needed")
        columns = self.source_columns + tuple(self.new.values()) + self.rolling_columns + tuple(self.ratios_7d)
        for name in columns:
            if not NAME.match(name) or name in ("file_id", "line"):
                fail("columns", f"{name!r} is not a usable column name")
        duplicated = {c for c in columns if columns.count(c) > 1}
        if duplicated:
            fail("columns", f"{sorted(duplicated)} declared twice")
        for count in self.new:
            if count not in self.counts:
                fail("new", f"{count!r} is not one of the counts {self.counts}")
        for column in self.rolling_7d:
            if column not in self.new.values():
                fail("rolling_7d", f"{column!r} is not a difference column ({', '.join(self.new.values())})")
        for column, pair in self.ratios_7d.items():
            if len(pair) != 2 or any(part not in self.new.values() for part in pair):
                fail("ratios_7d", f"{column!r} needs two difference columns from {list(self.new.values())}")
        for column in self.aliases:
            if column not in self.source_columns:
                fail("aliases", f"{column!r} is not a column of the files ({', '.join(self.source_columns)})")
        for summary in self.summaries:
            if not resources.files("covid_platform.sql").joinpath(f"{summary}.sql").is_file():
                fail("summaries", f"no SQL file covid_platform/sql/{summary}.sql")

    @property
    def source_columns(self) -> tuple[str, ...]:
        """Every column a file must carry (under its name or an alias)."""
        date = () if self.date_in_file_name else ("date",)
        return (*date, *self.region, *self.attributes, *self.counts)

    @property
    def key(self) -> tuple[str, ...]:
        return (*self.region, "date")

    @property
    def rolling_columns(self) -> tuple[str, ...]:
        return tuple(f"{column}_7d" for column in self.rolling_7d)

    def header_names(self, column: str) -> tuple[str, ...]:
        return tuple(name.lower() for name in (column, *self.aliases.get(column, ())))


US_STATES = Dataset(
    name="us_states",
    table="state_daily",
    region=("state",),
    attributes=("fips",),
    counts=("cases", "deaths"),
    new={"cases": "new_cases", "deaths": "new_deaths"},
    rolling_7d=("new_cases", "new_deaths"),
    summaries=("national_daily",),
)

US_COUNTIES = Dataset(
    name="us_counties",
    table="county_daily",
    region=("state", "county"),
    attributes=("fips",),
    counts=("cases", "deaths"),
    new={"cases": "new_cases", "deaths": "new_deaths"},
)

COVIDTRACKING = Dataset(
    name="covidtracking",
    table="testing_daily",
    region=("state",),
    counts=("positive", "negative", "total_tests"),
    aliases={"total_tests": ("totalTestResults",)},
    nullable_counts=True,
    new={"positive": "new_positive", "negative": "new_negative", "total_tests": "new_tests"},
    ratios_7d={"positivity_7d": ("new_positive", "new_tests")},
    summaries=("testing_state_summary", "testing_outcome_totals"),
)

JHU_DAILY_US = Dataset(
    name="jhu_daily_us",
    table="jhu_state_daily",
    region=("state",),
    counts=("confirmed", "deaths", "total_test_results"),
    aliases={"state": ("Province_State",), "total_test_results": ("People_Tested",)},
    nullable_counts=True,
    new={"confirmed": "new_confirmed", "deaths": "new_deaths"},
    date_in_file_name="%m-%d-%Y",
)

DATASETS: dict[str, Dataset] = {d.name: d for d in (US_STATES, US_COUNTIES, COVIDTRACKING, JHU_DAILY_US)}
