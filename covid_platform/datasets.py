"""The datasets the platform ingests, declared in one place.

A dataset is a landing prefix (`<LANDING_URL>/<name>/…csv`), the columns a file must carry, the columns
that identify a row, the cumulative counts, and the clean table its rows are merged into.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Dataset:
    name: str
    """Landing prefix, and the prefix of the dataset's asset names."""
    table: str
    """Clean table in the `covid` schema: one row per region and date."""
    region: tuple[str, ...]
    """Columns naming the region; with `date` they are the row key."""
    attributes: tuple[str, ...]
    """Descriptive columns that may be empty (e.g. fips)."""
    counts: tuple[str, ...]
    """Cumulative counts: the clean table gets `new_<count>` for each (and `new_<count>_7d` if `rolling_7d`)."""
    rolling_7d: bool
    freshness_hours: float = 26
    """Maximum age of the last successful load before the dataset's tables count as stale."""

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column a file must carry, in the order the staging SQL uses them."""
        return ("date", *self.region, *self.attributes, *self.counts)

    @property
    def key(self) -> tuple[str, ...]:
        return (*self.region, "date")


US_STATES = Dataset(
    name="us_states",
    table="state_daily",
    region=("state",),
    attributes=("fips",),
    counts=("cases", "deaths"),
    rolling_7d=True,
)

US_COUNTIES = Dataset(
    name="us_counties",
    table="county_daily",
    region=("state", "county"),
    attributes=("fips",),
    counts=("cases", "deaths"),
    rolling_7d=False,
)

DATASETS: dict[str, Dataset] = {d.name: d for d in (US_STATES, US_COUNTIES)}
