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
class SocrataPull:
    """A scheduled pull of a Socrata CSV endpoint into the dataset's landing prefix."""

    url: str
    """Default endpoint; `<DATASET>_URL` overrides it."""
    columns: tuple[str, ...]
    cron: str = "0 6 * * *"


@dataclass(frozen=True)
class Dataset:
    name: str
    """Landing prefix, and the suffix of the dataset's raw asset (`raw_<name>`)."""
    table: str
    """Clean table in the `covid` schema: one row per region and date."""
    region: tuple[str, ...]
    """Columns naming the region; with `date` they are the row key and may not be empty."""
    counts: tuple[str, ...] = ()
    """Cumulative counts, non-negative integers ("12" or "12.0")."""
    values: tuple[str, ...] = ()
    """Other non-negative integers (per-period counts), stored as reported."""
    new: Mapping[str, str] = field(default_factory=dict)
    """count → column holding its daily difference: null where x is empty; otherwise x minus x on the
    region's latest earlier date where x is not empty (x itself when there is none); negative revisions
    kept."""
    rolling_7d: tuple[str, ...] = ()
    """Difference columns also averaged over the row and the 6 rows before it (as `<column>_7d`): the mean of
    the non-empty ones, null when all seven are empty."""
    ratios_7d: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """column → (numerator, denominator): difference columns summed over the 7 calendar days ending on the
    row's date, divided; null when the denominator's sum is 0 or null."""
    attributes: tuple[str, ...] = ()
    """Descriptive text columns that may be empty (e.g. fips)."""
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """column → other header names it has had (headers match case-insensitively)."""
    nullable: tuple[str, ...] = ()
    """Counts and values the publisher may leave empty: an empty field is "not reported", stored as null
    (never zero, never a bad row); a non-empty one must still be a non-negative whole number. Differences
    and 7-day values skip the empty ones (see `new`)."""
    date_in_file_name: str | None = None
    """For one-file-per-day sources: the `strptime` format of the file name (without .csv); no date column."""
    wide: str | None = None
    """For wide files (one column per date): the `strptime` format of those columns' names; their cells are
    the dataset's single `values` column, one row per (region, date column)."""
    wide_total: str | None = None
    """For wide files: a column holding each row's total of the date columns, compared in a warning check."""
    summaries: tuple[str, ...] = ()
    """Summary tables rebuilt after each load, each by `covid_platform/sql/<name>.sql`."""
    freshness_hours: float = 26
    """Maximum age of the last successful load before the dataset's tables count as stale."""
    partition_by_year: bool = False
    """Partition the clean table by year of `date` (PostgreSQL declarative partitioning), for tables of tens
    of millions of rows; a year's partition is created when its first row arrives."""
    indexes: tuple[tuple[str, ...], ...] = ()
    """Secondary indexes of the clean table (each a column list), for the queries readers run."""
    max_bad_row_share: float = 0.01
    """Rows with bad values are set aside in `covid.rejected_rows` and the rest loads, unless they are more
    than this share of the file: then the whole file is quarantined."""
    pull: SocrataPull | None = None
    """For API sources: what a scheduled asset pulls into the landing zone (the sensor then loads it)."""

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
        if not (self.counts or self.values):
            fail("counts", "at least one count or value column is needed")
        if self.wide and len(self.values) != 1:
            fail("values", "a wide dataset stores its date columns' cells in exactly one values column")
        if self.wide_total and not self.wide:
            fail("wide_total", "only a wide dataset has date columns to total")
        columns = self.stored_columns + tuple(self.new.values()) + self.rolling_columns + tuple(self.ratios_7d)
        for name in columns:
            if not NAME.match(name) or name in ("file_id", "line"):
                fail("columns", f"{name!r} is not a usable column name")
        for index in self.indexes:
            if not set(index) <= {*columns, *self.region, "date"}:
                fail("indexes", f"{index} names a column the table does not have")
        duplicated = {c for c in columns if columns.count(c) > 1}
        if duplicated:
            fail("columns", f"{sorted(duplicated)} declared twice")
        for column in self.nullable:
            if column not in (*self.counts, *self.values):
                fail("nullable", f"{column!r} is not one of the counts or values {(*self.counts, *self.values)}")
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
        if not 0 <= self.max_bad_row_share < 1:
            fail("max_bad_row_share", f"{self.max_bad_row_share} is not a share in [0, 1)")
        if self.pull:
            missing = [c for c in self.source_columns if c.lower() not in {p.lower() for p in self.pull.columns}]
            if missing:
                fail("pull", f"the pulled columns lack {missing}")
        for summary in self.summaries:
            if not resources.files("covid_platform.sql").joinpath(f"{summary}.sql").is_file():
                fail("summaries", f"no SQL file covid_platform/sql/{summary}.sql")

    @property
    def stored_columns(self) -> tuple[str, ...]:
        """The columns taken from the files, in the clean table's order."""
        return (*self.region, *self.attributes, "date", *self.counts, *self.values)

    @property
    def source_columns(self) -> tuple[str, ...]:
        """The columns a file must carry by name (or alias); a date from the file name or from wide
        columns' names, and a wide file's values, are not among them."""
        from_elsewhere = {"date"} if self.date_in_file_name or self.wide else set()
        if self.wide:
            from_elsewhere |= set(self.values)
        return tuple(c for c in self.stored_columns if c not in from_elsewhere)

    def may_be_empty(self, column: str) -> bool:
        """Whether a stored or derived column may hold null (not reported)."""
        if column in self.nullable or column in self.ratios_7d:
            return True
        source = {new: count for count, new in self.new.items()}
        return source.get(column.removesuffix("_7d")) in self.nullable

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
    # NYT: "deaths" is left empty where a jurisdiction does not report them (its README, for Puerto Rico);
    # a state's row exists because it reports cases.
    nullable=("deaths",),
    new={"cases": "new_cases", "deaths": "new_deaths"},
    rolling_7d=("new_cases", "new_deaths"),
    summaries=("national_daily",),
)

US_COUNTIES = Dataset(
    name="us_counties",
    table="county_daily",
    partition_by_year=True,
    region=("state", "county"),
    attributes=("fips",),
    counts=("cases", "deaths"),
    # NYT publishes no deaths for Puerto Rico's municipios, on purpose (its README): 2.4% of the rows of
    # us-counties-recent.csv have an empty "deaths".
    nullable=("deaths",),
    new={"cases": "new_cases", "deaths": "new_deaths"},
    rolling_7d=("new_cases",),
    # The dashboards' top counties of the latest date: the last entries of this index.
    indexes=(("date", "new_cases_7d"),),
)

COVIDTRACKING = Dataset(
    name="covidtracking",
    table="testing_daily",
    region=("state",),
    counts=("positive", "negative", "total_tests"),
    aliases={"total_tests": ("totalTestResults",)},
    # Each state reported what it could: the 2020-12-10 file leaves positive empty on 152 rows, negative on
    # 310 and totalTestResults on 60.
    nullable=("positive", "negative", "total_tests"),
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
    # Tests are not reported for the cruise ships and some territories (62 empty cells in December 2020);
    # Confirmed and Deaths are always there.
    nullable=("total_test_results",),
    new={"confirmed": "new_confirmed", "deaths": "new_deaths"},
    date_in_file_name="%m-%d-%Y",
)

CPS_SCHOOLS = Dataset(
    name="cps_schools",
    table="school_cases",
    region=("school_id",),
    attributes=("school",),
    aliases={"school_id": ("CPS_School_ID",)},
    values=("new_cases",),
    # An empty cell is a date the school did not report (a school added after the file's first dates).
    nullable=("new_cases",),
    wide="%Y%m%d",
    wide_total="gTotal",
    summaries=("school_summary",),
)

PCR_TESTING = Dataset(
    name="pcr_testing",
    table="pcr_testing_daily",
    region=("state", "overall_outcome"),
    attributes=("state_name", "state_fips", "fema_region"),
    counts=("total_results_reported",),
    values=("new_results_reported",),
    summaries=("pcr_outcome_totals", "pcr_state_results", "pcr_smoothed", "pcr_state_totals"),
    pull=SocrataPull(
        url="https://healthdata.gov/resource/j8mb-icvb.csv",
        columns=("state", "state_name", "state_fips", "fema_region", "overall_outcome", "date",
                 "new_results_reported", "total_results_reported"),
    ),
)

DATASETS: dict[str, Dataset] = {
    d.name: d for d in (US_STATES, US_COUNTIES, COVIDTRACKING, JHU_DAILY_US, CPS_SCHOOLS, PCR_TESTING)
}
