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
from urllib.parse import urlparse

from covid_platform.compat import is_valid_cron_string
from covid_platform.engine.dates import DateFormatError, pattern

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# How a file may write its regions (`region_names`): as in covid.regions' name, code (USPS, or an agency's
# alternative such as CDC's FSM) or fips column.
REGION_NAMINGS = ("name", "code", "fips")
# The canonical region every row of a dataset with `region_names` gets, beside what its file wrote.
REGION_COLUMNS = ("state_fips", "state_name")
# What `source_comparison` compares across sources (`measures`), and by how much they may differ: the
# spread over the largest value.
MEASURES = ("cases", "deaths")
COMPARISON_TOLERANCE = 0.05
# The parameters every table of the API takes beside its filters, which are named after its region columns.
API_PARAMETERS = ("columns", "format", "limit", "cursor", "from", "to", "as_of")
# Names the platform gives columns of its own, which a declared column would clash with. Beside every column
# of a dataset: staging's, the merge's (`engine/merge.py`: a change's kind and the row it replaces, its
# islands), the history's (`engine/history.py`: versions and their issue times) and the derived columns'
# placeholders (`engine/derived.py`). Its other columns have a space in their names, which no declared one
# can have.
RESERVED = (
    "file_id", "line", "kind", "previous_file", "bulk", "first", "island", "is_change", "issued_at", "is_new",
    "changed", "start", "version", "valid_from", "no_difference", "no_window",
)
# Beside the region columns only: the merge's dates per region and its windows' ranges, the history's
# backfill profile, and the API's parameters.
RESERVED_FOR_REGIONS = (
    "first_date", "last_date", "keys", "from_date", "seed_start", "end_date", "next_reported", "after", "nth",
    "starts", "lag", "next_lag", "final", "column_name", "value", *API_PARAMETERS,
)


class DatasetError(ValueError):
    """A declaration that cannot work; says which dataset and which field."""

    def __init__(self, dataset: str, field_name: str, problem: str):
        super().__init__(f"dataset {dataset!r}, field {field_name!r}: {problem}")


@dataclass(frozen=True)
class SocrataPull:
    """A scheduled pull of a Socrata CSV endpoint into the dataset's landing prefix. Its schedule is off
    unless `<DATASET>_URL` is set or COVID_PULLS=on (README, "Scheduled downloads")."""

    url: str
    """Default endpoint; `<DATASET>_URL` overrides it."""
    columns: tuple[str, ...]
    cron: str = "0 6 * * *"


@dataclass(frozen=True)
class CsvDownload:
    """A scheduled download of a CSV (or .csv.gz) file its publisher updates in place at a URL, into the
    dataset's landing prefix; a version already landed is not landed again (conditional GET). Its schedule
    is off unless `<DATASET>_URL` is set or COVID_PULLS=on (README, "Scheduled downloads")."""

    url: str
    """Default URL; `<DATASET>_URL` overrides it."""
    cron: str = "0 7 * * *"


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
    signed: tuple[str, ...] = ()
    """Values that may be negative (a day's count revised down on a later day): whole numbers with an
    optional minus sign."""
    decimals: tuple[str, ...] = ()
    """Counts or values that are decimal numbers (rates per hundred people, shares), stored as `numeric`
    exactly as written ("1.25"); their differences are `numeric` too, their 7-day means double precision."""
    new: Mapping[str, str] = field(default_factory=dict)
    """count → column holding its daily difference: null where x is empty; otherwise x minus x on the
    region's latest earlier date where x is not empty (x itself when there is none); negative revisions
    kept."""
    rolling_7d: tuple[str, ...] = ()
    """Difference (or values) columns also averaged over the row and the 6 rows before it (as `<column>_7d`): the mean of
    the non-empty ones, null when all seven are empty."""
    ratios_7d: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """column → (numerator, denominator): difference columns summed over the 7 calendar days ending on the
    row's date, divided; null when the denominator's sum is 0 or null."""
    attributes: tuple[str, ...] = ()
    """Descriptive text columns that may be empty (e.g. fips)."""
    zero_pad: Mapping[str, int] = field(default_factory=dict)
    """attribute → its width in digits: a value of fewer digits and nothing else is stored with leading zeros
    to that width (a spreadsheet's re-save writes FIPS `01` as `1`); any other value is stored as written."""
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """column → other header names it has had (headers match case-insensitively)."""
    nullable: tuple[str, ...] = ()
    """Counts and values the publisher may leave empty: an empty field is "not reported", stored as null
    (never zero, never a bad row); a non-empty one must still be a non-negative whole number. Differences
    and 7-day values skip the empty ones (see `new`)."""
    date_format: str | None = None
    """The `strptime` format of the date column (e.g. "%m/%d/%Y"), from %Y %y %m %d %b and literal text;
    unset: YYYY-MM-DD (or a midnight timestamp, YYYY-MM-DDT00:00:00)."""
    region_names: Mapping[str, str] = field(default_factory=dict)
    """region column → how the files write it: "name" (full name), "code" (postal code, or an agency's
    alternative such as FSM) or "fips", as in `covid.regions`. Each row then gets its canonical region,
    `state_fips` and `state_name` (REGION_COLUMNS), beside what the file wrote; a value that names no region
    is a bad row, its reason naming the nearest known one. A county dataset declares its state column."""
    measures: Mapping[str, str] = field(default_factory=dict)
    """measure ("cases", "deaths") → the cumulative count holding it, compared with other sources' in
    `covid.source_comparison` (state-level datasets: one region column, declared in `region_names`)."""
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
    pull: SocrataPull | CsvDownload | None = None
    """For API sources and files published at a URL: what a scheduled asset pulls into the landing zone (the
    sensor then loads it)."""
    stream: str | None = None
    """MQTT topic filter (e.g. `covid/us_states/#`) whose messages `covid-platform stream` batches into CSV
    objects under `<name>/stream/`; each message a JSON object, or an array of them, with the file's columns."""

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
            if not NAME.match(name):
                fail("columns", f"{name!r} is not a usable column name")
            if name in RESERVED:
                fail("columns", f"{name!r} is a name the platform gives a column of its own: choose another "
                                f"(reserved: {', '.join(RESERVED)})")
        for name in self.region:
            if name in RESERVED_FOR_REGIONS:
                fail("region", f"{name!r} is a name the platform gives a column of its own beside the "
                               f"region's: choose another (reserved: {', '.join(RESERVED_FOR_REGIONS)})")
        for index in self.indexes:
            if not set(index) <= {*columns, *self.region, "date"}:
                fail("indexes", f"{index} names a column the table does not have")
        duplicated = {c for c in columns if columns.count(c) > 1}
        if duplicated:
            fail("columns", f"{sorted(duplicated)} declared twice")
        numbers = (*self.counts, *self.values)
        for field_name in ("nullable", "decimals"):
            for column in getattr(self, field_name):
                if column not in numbers:
                    fail(field_name, f"{column!r} is not one of the counts or values {numbers}")
        for column in self.signed:
            if column not in self.values:
                fail("signed", f"{column!r} is not one of the values {self.values} (cumulative counts are not signed)")
        if self.date_format is not None:
            if self.date_in_file_name or self.wide:
                fail("date_format", "only a dataset whose files have a date column")
            try:
                pattern(self.date_format)
            except DateFormatError as error:
                fail("date_format", f"{self.date_format!r}: {error}")
        for column, naming in self.region_names.items():
            if column not in self.region:
                fail("region_names", f"{column!r} is not a region column {self.region}")
            if naming not in REGION_NAMINGS:
                fail("region_names", f"{naming!r} is not one of {REGION_NAMINGS}")
        if len(self.region_names) > 1:
            fail("region_names", "one column names the state")
        if self.region_names and set(REGION_COLUMNS) & {*columns, *self.region}:
            fail("region_names", f"{REGION_COLUMNS} are added from covid.regions: the files' columns need other names")
        for measure, count in self.measures.items():
            if measure not in MEASURES:
                fail("measures", f"{measure!r} is not one of {MEASURES}")
            if count not in self.counts or count in self.decimals:
                fail("measures", f"{count!r} is not one of the whole-number counts {self.counts}")
        if self.measures and tuple(self.region_names) != self.region:
            fail("measures", "only a dataset of one row per state and date, its state column in region_names")
        for count in self.new:
            if count not in self.counts:
                fail("new", f"{count!r} is not one of the counts {self.counts}")
        for column in self.rolling_7d:
            if column not in (*self.new.values(), *self.values):
                fail("rolling_7d", f"{column!r} is not a difference or values column "
                                   f"({', '.join((*self.new.values(), *self.values))})")
        for column, pair in self.ratios_7d.items():
            if len(pair) != 2 or any(part not in self.new.values() for part in pair):
                fail("ratios_7d", f"{column!r} needs two difference columns from {list(self.new.values())}")
        for column, width in self.zero_pad.items():
            if column not in self.attributes:
                fail("zero_pad", f"{column!r} is not one of the attributes {self.attributes}")
            if not isinstance(width, int) or not 1 < width <= 20:
                fail("zero_pad", f"{column!r}: {width!r} is not a width of 2 to 20 digits")
        for column in self.aliases:
            if column not in self.source_columns:
                fail("aliases", f"{column!r} is not a column of the files ({', '.join(self.source_columns)})")
        if not 0 <= self.max_bad_row_share < 1:
            fail("max_bad_row_share", f"{self.max_bad_row_share} is not a share in [0, 1)")
        if isinstance(self.pull, SocrataPull):
            missing = [c for c in self.source_columns if c.lower() not in {p.lower() for p in self.pull.columns}]
            if missing:
                fail("pull", f"the pulled columns lack {missing}")
        if self.pull:
            url = urlparse(self.pull.url)
            if url.scheme not in ("http", "https") or not url.hostname:
                fail("pull", f"url {self.pull.url!r} is not an http(s) URL")
            if not is_valid_cron_string(self.pull.cron):
                fail("pull", f"cron {self.pull.cron!r} is not a five-field cron schedule")
            if self.date_in_file_name:
                # a pulled file is named by the pull (pull-<time>.csv), not by the date it holds
                fail("pull", "a date_in_file_name dataset takes its date from the file name")
        for summary in self.summaries:
            if not resources.files("covid_platform.sql").joinpath(f"{summary}.sql").is_file():
                fail("summaries", f"no SQL file covid_platform/sql/{summary}.sql")
        if self.stream is not None:
            problem = topic_filter_problem(self.stream)
            if problem:
                fail("stream", f"{self.stream!r} is not an MQTT topic filter: {problem}")
            if self.wide or self.date_in_file_name:
                fail("stream", "each message's rows carry their own date: not for wide or date_in_file_name")

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

    def summary(self, name: str) -> str:
        """`name`, checked to be one of this dataset's summaries (a reader naming a table that is not fails
        where the code loads, not on its first query)."""
        if name not in self.summaries:
            raise ValueError(f"{name!r} is not a summary of the dataset {self.name!r}")
        return name

    def may_be_empty(self, column: str) -> bool:
        """Whether a stored or derived column may hold null (not reported)."""
        if column in self.nullable or column in self.ratios_7d:
            return True
        source = {new: count for count, new in self.new.items()}
        column = column.removesuffix("_7d") if column in self.rolling_columns else column
        return source.get(column, column) in self.nullable

    def is_decimal(self, column: str) -> bool:
        """Whether a count, value or difference holds decimal numbers (stored as numeric)."""
        source = {new: count for count, new in self.new.items()}
        return source.get(column, column) in self.decimals

    @property
    def region_columns(self) -> tuple[str, ...]:
        """The canonical region's columns, added from covid.regions (none without `region_names`)."""
        return REGION_COLUMNS if self.region_names else ()

    @property
    def key(self) -> tuple[str, ...]:
        return (*self.region, "date")

    @property
    def rolling_columns(self) -> tuple[str, ...]:
        return tuple(f"{column}_7d" for column in self.rolling_7d)

    def header_names(self, column: str) -> tuple[str, ...]:
        """The names a file's header or a stream message may give the column, lower-case, in the order they
        are read: the declared name, then its aliases as declared."""
        return tuple(name.lower() for name in (column, *self.aliases.get(column, ())))

    @property
    def stream_folder(self) -> str:
        """Where the stream bridge writes its batches (ingested like any file of the dataset)."""
        return f"{self.name}/stream/"


def topic_filter_problem(value: str) -> str | None:
    """What makes `value` an invalid MQTT subscription filter (MQTT 5.0, 4.7), or None."""
    if not value or len(value.encode()) > 65535 or "\0" in value:
        return "it must be 1 to 65,535 bytes of UTF-8 without NUL"
    levels = value.split("/")
    for number, level in enumerate(levels, 1):
        if "#" in level and (level != "#" or number != len(levels)):
            return "'#' must be a whole level, the last one"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None


US_STATES = Dataset(
    name="us_states",
    table="state_daily",
    region=("state",),
    region_names={"state": "name"},
    attributes=("fips",),
    zero_pad={"fips": 2},
    counts=("cases", "deaths"),
    measures={"cases": "cases", "deaths": "deaths"},
    # NYT: "deaths" is left empty where a jurisdiction does not report them (its README, for Puerto Rico);
    # a state's row exists because it reports cases.
    nullable=("deaths",),
    new={"cases": "new_cases", "deaths": "new_deaths"},
    rolling_7d=("new_cases", "new_deaths"),
    summaries=("national_daily",),
    stream="covid/us_states/#",
    # NYT's file on its public repository (final since March 2023: a download is mostly "unchanged")
    pull=CsvDownload(url="https://raw.githubusercontent.com/nytimes/covid-19-data/master/us-states.csv"),
)

US_COUNTIES = Dataset(
    name="us_counties",
    table="county_daily",
    partition_by_year=True,
    region=("state", "county"),
    # the county's state (its FIPS is the first two digits of the county's, where the county has one)
    region_names={"state": "name"},
    attributes=("fips",),
    zero_pad={"fips": 5},
    counts=("cases", "deaths"),
    # NYT publishes no deaths for Puerto Rico's municipios, on purpose (its README): 2.4% of the rows of
    # us-counties-recent.csv have an empty "deaths".
    nullable=("deaths",),
    new={"cases": "new_cases", "deaths": "new_deaths"},
    rolling_7d=("new_cases",),
    # The dashboards' top counties of the latest date: the last entries of this index.
    indexes=(("date", "new_cases_7d"),),
    stream="covid/us_counties/#",
    # the last 30 days only (the full history, us-counties.csv, is 1.9M rows): revisions arrive within them
    pull=CsvDownload(url="https://raw.githubusercontent.com/nytimes/covid-19-data/master/us-counties-recent.csv"),
)

COVIDTRACKING = Dataset(
    name="covidtracking",
    table="testing_daily",
    region=("state",),
    region_names={"state": "code"},
    counts=("positive", "negative", "total_tests"),
    # positive cases (confirmed, as the project counted them); its files' `death` column is not loaded yet
    measures={"cases": "positive"},
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
    # full names, and JHU's two cruise ships (covid.regions holds them, with JHU's FIPS 88888 and 99999)
    region_names={"state": "name"},
    counts=("confirmed", "deaths", "total_test_results"),
    measures={"cases": "confirmed", "deaths": "deaths"},
    aliases={"state": ("Province_State",), "total_test_results": ("People_Tested",)},
    # Tests are not reported for the cruise ships and some territories (62 empty cells in December 2020);
    # Confirmed and Deaths are always there.
    nullable=("total_test_results",),
    new={"confirmed": "new_confirmed", "deaths": "new_deaths"},
    # The date is the file name's in every layout: the 2022 files' `Date` column (the day before) is not read.
    date_in_file_name="%m-%d-%Y",
    # A file is a day's ~58 states: one bad row is 1.7%. JHU's files of April to August 2020 hold a national
    # "Recovered" row, which names no region: set aside, the day's states loaded.
    max_bad_row_share=0.05,
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
    # The wide file is the CPS-COVID project's export of the district's case sheet (a row per case, in
    # Google Sheets), the copy data/cps comes from; the sheet itself is not in this layout.
    pull=CsvDownload(url="https://s3.amazonaws.com/cpscovid.com/data/allCpsCovidData.csv"),
)

PCR_TESTING = Dataset(
    name="pcr_testing",
    table="pcr_testing_daily",
    region=("state", "overall_outcome"),
    # The files' state_name and state_fips are covid.regions' name and FIPS of the code in `state`: they are
    # now taken from there (same columns, same values), so a code that names no region is a bad row.
    region_names={"state": "code"},
    attributes=("fema_region",),
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

SUFFIXES = (".csv", ".csv.gz")


def top_folder(key: str) -> str:
    """A landing key's first path segment: the dataset it is dropped under ('' at the zone's root)."""
    return key.split("/", 1)[0] if "/" in key else ""


def route(key: str) -> Dataset | None:
    """The dataset that takes a landing key (`<dataset>/<name>.csv` or `.csv.gz`), or None."""
    return None if unrouted_reason(key) else DATASETS[top_folder(key)]


def unrouted_reason(key: str) -> str | None:
    """Why no dataset takes this key, or None when one does."""
    folder = top_folder(key)
    if folder not in DATASETS:
        where = f"under {folder!r}/" if folder else "at the root of the landing zone"
        return f"no dataset is named by the key's first folder ({where}); drop files under one of: {', '.join(DATASETS)}"
    if not key.lower().endswith(SUFFIXES):
        return f"not a .csv or .csv.gz file; {folder!r} takes only those"
    return None
