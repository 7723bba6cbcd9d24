"""One geography across sources: `covid.regions`, loaded from the packaged regions.csv, and the SQL that
gives each staged row its canonical region (state_fips, state_name) by the way its dataset's files write it."""

import csv
import difflib
import io
import re
from importlib import resources

from psycopg2 import sql

from covid_platform.datasets import Dataset

REGIONS_CSV = ("reference", "regions.csv")
# A value written differently from covid.regions' spelling (case, leading zeros, JHU's "1.0") still matches:
# these normalise a file's value as the view covid.region_keys normalises the table's (sql/schema.sql).
KEYS = {
    "name": "lower({})",
    "code": "upper({})",
    "fips": r"ltrim(regexp_replace({}, '\.0*$', ''), '0')",
}
DESCRIBED = {"name": "a region's full name", "code": "a region's postal code", "fips": "a region's FIPS code"}
MAX_SUGGESTED = 1000  # distinct unknown values given a nearest name (a file of nothing but typos is quarantined anyway)


def rows() -> list[dict]:
    """The packaged regions, one dict per row of regions.csv (other_codes: a list)."""
    text = resources.files("covid_platform").joinpath(*REGIONS_CSV).read_text()
    return [
        {**row, "code": row["code"] or None, "part_of": row["part_of"] or None,
         "other_codes": [c for c in row["other_codes"].split(";") if c]}
        for row in csv.DictReader(io.StringIO(text))
    ]


def load(cur) -> None:
    """Make covid.regions hold exactly the packaged regions (on start, after schema.sql; idempotent)."""
    regions = rows()
    cur.executemany(
        """
        INSERT INTO covid.regions (fips, code, name, kind, part_of, other_codes)
        VALUES (%(fips)s, %(code)s, %(name)s, %(kind)s, %(part_of)s, %(other_codes)s)
        ON CONFLICT (fips) DO UPDATE SET code = EXCLUDED.code, name = EXCLUDED.name, kind = EXCLUDED.kind,
            part_of = EXCLUDED.part_of, other_codes = EXCLUDED.other_codes
        WHERE (regions.code, regions.name, regions.kind, regions.part_of, regions.other_codes)
              IS DISTINCT FROM (EXCLUDED.code, EXCLUDED.name, EXCLUDED.kind, EXCLUDED.part_of, EXCLUDED.other_codes)
        """,
        regions,
    )
    cur.execute("DELETE FROM covid.regions WHERE NOT fips = ANY(%s)", ([r["fips"] for r in regions],))


def _named(dataset: Dataset) -> tuple[str, str]:
    ((column, naming),) = dataset.region_names.items()
    return column, naming


def key(dataset: Dataset, value: sql.Composable) -> sql.Composable:
    """The file's region value normalised as covid.region_keys.key."""
    return sql.SQL(KEYS[_named(dataset)[1]]).format(value)


def key_text(dataset: Dataset, value: str) -> str:
    """`key` in Python, for a value not in PostgreSQL yet (a stream message's, `stream.messages.key_of`)."""
    naming = _named(dataset)[1]
    if naming == "name":
        return value.lower()
    if naming == "code":
        return value.upper()
    return re.sub(r"\.0*$", "", value).lstrip("0")


def canonical_value(dataset: Dataset, source: str, mapped: str) -> sql.Composable:
    """The region column's value of a row of `source` as covid.regions writes it, where `mapped` (an alias of
    `canonical_join`'s columns) names a region: 'Texas' for 'TEXAS', 'NY' for 'ny', '06' for '6'. The key a
    clean table stores: one region, one spelling whatever the case a file wrote it in (an agency's other code,
    CDC's FSM for USPS's FM, stays a code of its own, as the gates compare them)."""
    column, naming = _named(dataset)
    value = sql.Identifier(source, column)
    spelled = {"name": sql.Identifier(mapped, "state_name"), "code": sql.SQL("upper({})").format(value),
               "fips": sql.Identifier(mapped, "state_fips")}[naming]
    return sql.SQL("CASE WHEN {} IS NULL THEN {} ELSE {} END").format(
        sql.Identifier(mapped, "state_fips"), value, spelled)


def canonical_join(dataset: Dataset, source: str) -> sql.Composable:
    """A LEFT JOIN giving each row of `source` (an alias) the columns state_fips and state_name (null for a
    value that names no region; the gates set such rows aside first). Its other columns are named so that no
    dataset column can clash with them."""
    column, naming = _named(dataset)
    return sql.SQL(
        " LEFT JOIN (SELECT naming AS _naming, key AS _key, fips AS state_fips, name AS state_name "
        "FROM covid.region_keys) AS _region ON _region._naming = {naming} AND _region._key = {key}"
    ).format(naming=sql.Literal(naming), key=key(dataset, sql.Identifier(source, column)))


def unknown(dataset: Dataset, source: str) -> sql.Composable:
    """True for a row of `source` (an alias) whose region value names no region: one of `find_unknown`'s."""
    return sql.SQL("{} IN (SELECT value FROM region_unknown)").format(sql.Identifier(source, _named(dataset)[0]))


def expected(dataset: Dataset) -> str:
    return f"{DESCRIBED[_named(dataset)[1]]} as in covid.regions"


def find_unknown(cur, dataset: Dataset, source_rows: sql.Composable) -> None:
    """Fill the temp table `region_unknown(value, nearest)` (dropped at commit) with each distinct non-empty
    value of the file that names no region, and (for the first MAX_SUGGESTED) the closest known spelling
    (difflib), for the bad row's reason. Each distinct value is looked up once, not each row's."""
    column, naming = _named(dataset)
    cur.execute(sql.SQL(
        # MATERIALIZED: the lookup is not pushed down to every row
        "CREATE TEMP TABLE region_unknown ON COMMIT DROP AS WITH d AS MATERIALIZED "
        "(SELECT DISTINCT {c} AS value FROM ({rows}) AS s) SELECT value, NULL::text AS nearest FROM d "
        "WHERE value <> '' AND NOT EXISTS (SELECT FROM covid.region_keys AS k WHERE k.naming = {naming} AND k.key = {key}); "
        "ALTER TABLE region_unknown ADD PRIMARY KEY (value); ANALYZE region_unknown"
    ).format(c=sql.Identifier("s", column), rows=source_rows, naming=sql.Literal(naming),
             key=key(dataset, sql.Identifier("d", "value"))))
    cur.execute(sql.SQL("SELECT value FROM region_unknown LIMIT {}").format(sql.Literal(MAX_SUGGESTED)))
    values = [value for (value,) in cur.fetchall()]
    if not values:
        return
    known = {r[naming]: r[naming] for r in rows() if r[naming]}
    if naming == "code":
        known.update({c: c for r in rows() for c in r["other_codes"]})
    folded = {k.lower(): v for k, v in known.items()}
    nearest = []
    for value in values:
        match = difflib.get_close_matches(value.lower(), folded, n=1, cutoff=0.5)
        nearest.append((folded[match[0]] if match else None, value))
    cur.executemany("UPDATE region_unknown SET nearest = %s WHERE value = %s", nearest)


def nearest_note(dataset: Dataset, source: str) -> sql.Composable:
    """Text appended to an unknown value's reason: ` (nearest known: 'New York')`, or nothing."""
    value = sql.Identifier(source, _named(dataset)[0])
    return sql.SQL(
        "coalesce(' (nearest known: ' || quote_literal((SELECT nearest FROM region_unknown WHERE value = {})) || ')', '')"
    ).format(value)
