"""What changed since the previous report: the figures it was built from (the JSON snapshot kept beside
it) against these. New dates are dates the previous report did not have; a revised value is a count of a
date both have that differs (a later file replaced it), but not a new count of the date after a new date (a
file with earlier dates: it is now the difference from that date, not comparable with before). The 7-day
averages are not listed: they follow from the counts, and one revised count moves seven of them."""

from dataclasses import dataclass, field

REVISABLE = ("cases", "deaths", "new_cases", "new_deaths")
NEW_COUNTS = ("new_cases", "new_deaths")


@dataclass(frozen=True)
class Revision:
    date: str
    column: str
    before: float | None
    after: float | None


@dataclass(frozen=True)
class Changes:
    previous_day: str | None
    """The previous report's date; None when there was none (this is the first report)."""
    previous_built_at: str | None = None
    new_dates: list[str] = field(default_factory=list)
    removed_dates: list[str] = field(default_factory=list)
    revisions: list[Revision] = field(default_factory=list)
    testing_latest: tuple[str | None, str | None] = (None, None)
    """The latest testing date before and now."""
    testing_newer: list[str] = field(default_factory=list)
    """States whose latest 7-day positivity is of a later date than before."""
    testing_revised: list[str] = field(default_factory=list)
    """States whose figures changed otherwise: the 7-day positivity of the same date, the positivity to date,
    a latest date moved back (its value withdrawn), or no positivity now."""

    @property
    def first(self) -> bool:
        return self.previous_day is None

    def summary(self) -> str:
        """One line, for the notification and the metadata."""
        if self.first:
            return "first report"
        parts = []
        if self.new_dates:
            first, last = self.new_dates[0], self.new_dates[-1]
            span = first if first == last else f"{first} to {last}"
            parts.append(f"{_count(self.new_dates, 'new date')} ({span})")
        if self.revisions:
            parts.append(f"{_count(self.revisions, 'revised value')} on "
                         f"{_count({r.date for r in self.revisions}, 'date')} the previous report had")
        if self.removed_dates:
            parts.append(f"{_count(self.removed_dates, 'date')} no longer in the data")
        if self.testing_newer or self.testing_revised:
            states = {*self.testing_newer, *self.testing_revised}
            parts.append(f"testing figures of {_count(states, 'state')} updated")
        return "; ".join(parts) or "no change in the national series or testing (other figures changed)"


def _count(items, noun: str) -> str:
    return f"{len(items):,} {noun}{'' if len(items) == 1 else 's'}"


def compare(previous: dict | None, current: dict) -> Changes:
    """`previous`: the previous report's snapshot ({"day", "built_at", "figures"}), or None; `current`: the
    figures about to be published (Figures.shown())."""
    if previous is None:
        return Changes(previous_day=None)
    before = {row["date"]: row for row in previous["figures"]["national"]}
    after = {row["date"]: row for row in current["national"]}
    dates = sorted(after)
    # the dates after a new date (a file with earlier dates): their new counts are differences from it now, not
    # comparable with before (the series' first date's was its count to date); a revised count there is listed
    new_before = {date for earlier, date in zip(dates, dates[1:]) if earlier not in before}
    revisions = [
        Revision(date, column, before[date][column], after[date][column])
        for date in sorted(before.keys() & after.keys())
        for column in REVISABLE
        if before[date][column] != after[date][column]
        and not (column in NEW_COUNTS and date in new_before)
    ]
    testing_before = {row["state"]: row for row in previous["figures"]["testing"]}
    testing_after = {row["state"]: row for row in current["testing"]}
    return Changes(
        previous_day=previous["day"],
        previous_built_at=previous.get("built_at"),
        new_dates=sorted(after.keys() - before.keys()),
        removed_dates=sorted(before.keys() - after.keys()),
        revisions=revisions,
        testing_latest=(max(testing_before.values(), key=lambda r: r["date"], default={}).get("date"),
                        max(testing_after.values(), key=lambda r: r["date"], default={}).get("date")),
        testing_newer=sorted(state for state, row in testing_after.items()
                             if state not in testing_before or row["date"] > testing_before[state]["date"]),
        testing_revised=sorted(
            state for state, row in testing_before.items()
            if state not in testing_after or (testing_after[state]["date"] <= row["date"] and any(
                testing_after[state].get(figure) != row.get(figure)
                for figure in ("date", "positivity_7d", "positivity_to_date")))),
    )
