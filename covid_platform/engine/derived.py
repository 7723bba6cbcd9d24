"""The derived columns of a clean table (`new_x`, 7-day means and ratios) computed from its base rows.

One definition for every reader of the semantics: the merge recomputes a region's rows from its earliest
changed date with it, and the as-of functions (`engine/history.py`) recompute a past table with it.
"""

from psycopg2 import sql

from covid_platform.datasets import Dataset

# `rows`: the base columns and file_id, one row per key. The region partitions every window, so a filter on
# the region columns outside this SELECT is pushed down to `rows` (one state of an as-of table reads only
# that state's history).
DERIVED = """
SELECT *, {windowed}
FROM (
    SELECT *, {differences}
    FROM ({rows}) AS merged
    WINDOW by_region AS (PARTITION BY {region} ORDER BY date)
) AS with_differences
WINDOW last_7_rows AS (PARTITION BY {region} ORDER BY date ROWS BETWEEN 6 PRECEDING AND CURRENT ROW),
       last_7_days AS (PARTITION BY {region} ORDER BY date RANGE BETWEEN interval '6 days' PRECEDING AND CURRENT ROW),
       week_before AS (PARTITION BY {region} ORDER BY date
                       RANGE BETWEEN interval '7 days' PRECEDING AND interval '7 days' PRECEDING)
"""
# A 7-day ratio: Σ numerator / Σ denominator over the 7 calendar days ending on the row, where both counts
# are reported on the row and on the date 7 days before it: each sum is then that count's change over the
# same 7 days (a difference reaches back past empty counts, so the sums telescope), never one count's 6 days
# over the other's 7, nor a series' first days (whose differences are the counts to date). Null otherwise,
# and where the denominator's change is not positive or the numerator's is negative (revisions downward).
RATIO_7D = """CASE WHEN {n} IS NOT NULL AND {d} IS NOT NULL
    AND count(*) FILTER (WHERE {n} IS NOT NULL AND {d} IS NOT NULL) OVER week_before = 1
    AND sum({d}) OVER last_7_days > 0 AND sum({n}) OVER last_7_days >= 0
THEN (sum({n}) OVER last_7_days / sum({d}) OVER last_7_days)::double precision END AS {r}"""


# The 7-row mean of the difference of a whole count every row reports: the differences over the 7 rows
# telescope to the count's change over them (from the region's first row: the count itself), so the mean is
# computed beside the differences, in their window pass, not in a pass of its own over them (avg's own
# numeric division: the same value to the last digit; 15M county rows: one sort-free pass less). A merge's
# island starts 7 rows before its first row written, or at the region's first row.
TELESCOPED_7D = """({c} - coalesce(lag({c}, 7) OVER by_region, 0))::numeric
    / least(row_number() OVER by_region, 7) AS {a}"""


def derived_select(dataset: Dataset, rows: sql.Composable, by=None) -> sql.Composed:
    """`rows` with the derived columns added (and whatever else `rows` has: select the columns wanted); the
    windows partitioned by the region, or by the columns `by` (the merge's islands of a region)."""
    differences = [_difference(dataset, count, new) for count, new in dataset.new.items()]
    telescoped = {new: count for count, new in dataset.new.items()
                  if count not in dataset.nullable and count not in dataset.decimals}
    differences += [
        sql.SQL(TELESCOPED_7D).format(c=sql.Identifier(telescoped[n]), a=sql.Identifier(f"{n}_7d"))
        for n in dataset.rolling_7d if n in telescoped
    ]
    windowed = [
        sql.SQL("avg({n}) OVER last_7_rows AS {a}").format(n=sql.Identifier(n), a=sql.Identifier(f"{n}_7d"))
        for n in dataset.rolling_7d if n not in telescoped
    ]
    windowed += [
        sql.SQL(RATIO_7D).format(n=sql.Identifier(num), d=sql.Identifier(den), r=sql.Identifier(ratio))
        for ratio, (num, den) in dataset.ratios_7d.items()
    ]
    return sql.SQL(DERIVED).format(
        rows=rows,
        region=sql.SQL(", ").join(sql.Identifier(n) for n in (by or dataset.region)),
        differences=sql.SQL(", ").join(differences) if differences else sql.SQL("NULL AS no_difference"),
        windowed=sql.SQL(", ").join(windowed or [sql.SQL("NULL AS no_window")]),
    )


def has_windows(dataset: Dataset) -> bool:
    """Whether a row's derived values reach 7 rows back (else 1: the differences)."""
    return bool(dataset.rolling_7d or dataset.ratios_7d)


def _difference(dataset: Dataset, count: str, new: str) -> sql.Composed:
    """x minus x on the region's latest earlier date where x is not empty; x itself when there is none."""
    c, n = sql.Identifier(count), sql.Identifier(new)
    if count not in dataset.nullable:
        # Every row has x: the previous row's; on a region's first date (lag(date) is null), x itself.
        return sql.SQL("CASE WHEN lag(date) OVER by_region IS NULL THEN {c} ELSE {c} - lag({c}) OVER by_region END "
                       "AS {n}").format(c=c, n=n)
    # The latest non-empty x before the row, in the same sort as by_region (PostgreSQL has no IGNORE NULLS):
    # the largest (day number, x) pair over the rows before it, empty x left out; [2] is that x.
    return sql.SQL(
        "{c} - coalesce((max(CASE WHEN {c} IS NOT NULL THEN ARRAY[date - DATE '2000-01-01', {c}] END) OVER "
        "(by_region ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING))[2], 0) AS {n}"
    ).format(c=c, n=n)
