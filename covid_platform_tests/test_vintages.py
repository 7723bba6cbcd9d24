"""Vintages (tracker issue 12): every version of every value, tables as of a time, revisions, backfill.

Two real vintages: two months of the NYT states file, then the same months with 1% of the cumulative values
revised and a new date, dropped a few seconds apart (their issue times are the objects' last-modified
times, read back from the landing zone). Every expectation is computed independently with pandas from the
two files' bytes.
"""

import io
import os
import random
import time
from datetime import datetime, timedelta, timezone

import dagster as dg
import pandas as pd
import pytest
from dagster_aws.s3 import S3Resource

from covid_platform.datasets import DATASETS
from covid_platform.engine import intake
from covid_platform.resources import warehouse as warehouse_module
from covid_platform.resources.landing import LandingZone
from covid_platform_tests.helpers import drop, ingest, negative_cases, nyt_states_slice, run_replay
from covid_platform_tests.oracles import national_totals, with_differences, with_rolling_7d

STATES = ("Ohio", "Utah", "Texas", "Vermont", "New York", "Puerto Rico", "Guam", "Florida")
KEY = ["state", "date"]
COUNTS = {"cases": "new_cases", "deaths": "new_deaths"}
DERIVED = ["new_cases", "new_deaths", "new_cases_7d", "new_deaths_7d"]
COLUMNS = ["state", "fips", "date", "cases", "deaths", *DERIVED]


def first_vintage() -> bytes:
    return nyt_states_slice("2020-11-01", "2020-12-31", set(STATES))


def revised(data: bytes, share: float = 0.01, seed: int = 12) -> tuple[bytes, pd.DataFrame]:
    """The file with `share` of its cumulative values raised (a publisher's revision) and the next date added;
    and the (state, date, column, old, new) of each revision."""
    frame = pd.read_csv(io.BytesIO(data), dtype={"fips": str})
    rng = random.Random(seed)
    cells = [(row, column) for row in range(len(frame)) for column in ("cases", "deaths")]
    changes = []
    for row, column in rng.sample(cells, max(1, round(share * len(cells)))):
        old = frame.at[row, column]
        frame.at[row, column] = old + rng.randint(1, 500)
        changes.append((frame.at[row, "state"], frame.at[row, "date"], column, old, frame.at[row, column]))
    new_date = pd.read_csv(io.BytesIO(nyt_states_slice("2021-01-01", "2021-01-01", set(STATES))), dtype={"fips": str})
    frame = pd.concat([frame, new_date], ignore_index=True)
    out = io.StringIO()
    frame.to_csv(out, index=False)
    return out.getvalue().encode(), pd.DataFrame(changes, columns=["state", "date", "column", "old", "new"])


def derived(data: bytes) -> pd.DataFrame:
    """The clean table a file alone gives, computed with pandas."""
    frame = pd.read_csv(io.BytesIO(data), dtype={"fips": str}).astype({"cases": "float", "deaths": "float"})
    frame["date"] = pd.to_datetime(frame["date"]).dt.date
    frame = with_rolling_7d(with_differences(frame, COUNTS), ["new_cases", "new_deaths"])
    return frame[COLUMNS].sort_values(KEY).reset_index(drop=True)


def national(states: pd.DataFrame) -> pd.DataFrame:
    totals = national_totals(states)[["date", "cases", "deaths"]].sort_values("date")
    for count, new in COUNTS.items():
        totals[new] = totals[count] - totals[count].ffill().shift().fillna(0)
        totals[f"{new}_7d"] = totals[new].rolling(7, min_periods=1).mean()
    return totals[["date", "cases", "deaths", *DERIVED]].reset_index(drop=True)


def table(query, statement: str, params, columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(query(statement, params), columns=columns)
    numbers = [c for c in columns if c not in ("state", "fips", "date")]
    # text as `derived` reads it from a file: an empty fips is missing (NaN), not None
    return frame.astype({**{c: "float" for c in numbers}, **({"fips": "str"} if "fips" in columns else {})})


def assert_same(actual: pd.DataFrame, expected: pd.DataFrame):
    pd.testing.assert_frame_equal(actual.reset_index(drop=True), expected.reset_index(drop=True),
                                  check_dtype=False, rtol=1e-9)


@pytest.fixture
def vintages(landing, resources, query):
    """Both vintages loaded through the platform, the second dropped two seconds after the first."""
    first = first_vintage()
    second, changes = revised(first)
    issued = []
    with dg.instance_for_test() as instance:
        for name, data in (("us_states/2021-01-01.csv", first), ("us_states/2021-01-02.csv", second)):
            key = drop(landing, name, data)
            issued.append(landing.describe(key).last_modified)
            assert ingest(landing, resources, key, instance).success
            time.sleep(2)  # S3's last-modified times count whole seconds
    return first, second, changes, issued


def test_the_bytes_of_a_file_not_merged_yet_load_again_and_keep_its_values(landing, resources, query):
    """A file gated and staged, its merge still to come (another run's clean step), then its bytes dropped
    again: the second is no duplicate (its coverage would keep the first's merge from every key it repeats);
    both load, and the table holds their values."""
    first = first_vintage()
    second, _ = revised(first)
    with dg.instance_for_test() as instance:
        assert ingest(landing, resources, drop(landing, "us_states/a.csv", first), instance).success
        assert ingest(landing, resources, drop(landing, "us_states/b.csv", second), instance, raw_only=True).success
        assert ingest(landing, resources, drop(landing, "us_states/b-again.csv", second), instance).success
    assert query("SELECT key, status FROM covid.ingested_files ORDER BY file_id") == [
        ("us_states/a.csv", "loaded"), ("us_states/b.csv", "loaded"), ("us_states/b-again.csv", "loaded")]
    current = table(query, f"SELECT {', '.join(COLUMNS)} FROM covid.state_daily ORDER BY state, date", None, COLUMNS)
    assert_same(current, derived(second))


def test_a_duplicate_issued_before_the_file_it_repeats_is_seen_from_its_issue(landing, resources, query):
    """A vintage loaded, a revised one issued later, then the revised bytes again as issued in between (a past
    vintage placed at its publisher's date): that duplicate's versions are seen from its issue time, after a
    replay too."""
    first = first_vintage()
    second, _ = revised(first)
    day = datetime(2021, 1, 1, tzinfo=timezone.utc)
    with dg.instance_for_test() as instance:
        for name, data, issued in (("a.csv", first, day), ("b.csv", second, day + timedelta(days=9)),
                                   ("b-vintage.csv", second, day + timedelta(days=4))):
            landing.put(f"us_states/{name}", io.BytesIO(data), issued_at=issued)
            assert ingest(landing, resources, f"us_states/{name}", instance).success
        assert [status for (status,) in query("SELECT status FROM covid.ingested_files ORDER BY file_id")] == [
            "loaded", "loaded", "duplicate"]
        for replayed in (False, True):
            if replayed:
                assert run_replay(resources, instance).success
            assert_same(as_of(query, "state_daily_as_of", day + timedelta(days=5), COLUMNS), derived(second))
            assert_same(as_of(query, "state_daily_as_of", day + timedelta(days=3), COLUMNS), derived(first))


def test_a_vintage_issued_before_its_own_dates_is_refused(landing, resources, query):
    """An issue time mistyped before the file's last days (their versions would be seen before the days they
    report): those days are bad dates, here more than the 1% a file may have, and nothing loads."""
    data = nyt_states_slice("2021-01-01", "2021-01-05", {"Ohio", "Texas", "Vermont"})
    landing.put("us_states/early.csv", io.BytesIO(data), issued_at=datetime(2021, 1, 3, 12, tzinfo=timezone.utc))
    with dg.instance_for_test() as instance:
        assert not ingest(landing, resources, "us_states/early.csv", instance).success
    ((status, reason),) = query("SELECT status, reason FROM covid.ingested_files")
    assert status == "quarantined"
    assert reason.startswith("3 of 15 rows (20.0%) have bad values")
    assert "column 'date': expected a date up to 2021-01-04, the day after the file's issue time, got '2021-01-05'" \
        in reason
    assert query("SELECT to_regclass('covid.state_daily')") == [(None,)]  # never merged


def as_of(query, function: str, when, columns: list[str], order: str = "state, date") -> pd.DataFrame:
    return table(query, f"SELECT {', '.join(columns)} FROM covid.{function}(%s) ORDER BY {order}", (when,), columns)


def test_as_of_between_and_after_the_vintages(vintages, query):
    first, second, _, issued = vintages
    ledger = query("SELECT issued_at FROM covid.ingested_files ORDER BY file_id")
    assert [row[0] for row in ledger] == issued  # the objects' last-modified times, kept in the ledger
    between = issued[0] + (issued[1] - issued[0]) / 2

    assert as_of(query, "state_daily_as_of", issued[0] - timedelta(seconds=1), COLUMNS).empty
    assert_same(as_of(query, "state_daily_as_of", between, COLUMNS), derived(first))
    after = as_of(query, "state_daily_as_of", issued[1] + timedelta(days=1), COLUMNS)
    assert_same(after, derived(second))
    current = table(query, f"SELECT {', '.join(COLUMNS)} FROM covid.state_daily ORDER BY state, date", None, COLUMNS)
    assert_same(after, current)

    columns = ["date", "cases", "deaths", *DERIVED]
    assert_same(as_of(query, "national_daily_as_of", between, columns, "date"), national(derived(first)))
    assert_same(as_of(query, "national_daily_as_of", issued[1], columns, "date"),
                table(query, f"SELECT {', '.join(columns)} FROM covid.national_daily ORDER BY date", None, columns))


def test_history_holds_only_what_changed_and_revisions_count_it(vintages, query):
    first, second, changes, _ = vintages
    before = pd.read_csv(io.BytesIO(first)).set_index(KEY)
    after = pd.read_csv(io.BytesIO(second)).set_index(KEY)
    common = after.index.intersection(before.index)
    differs = (after.loc[common, ["cases", "deaths"]] != before.loc[common, ["cases", "deaths"]]).any(axis=1)
    added = len(after.index.difference(before.index))
    assert query("SELECT count(*) FROM covid.state_daily_history")[0][0] == len(before) + added + differs.sum()

    rows = query("SELECT file_id, table_name, keys_added, keys_revised, keys_unchanged, largest "
                 "FROM covid.revisions ORDER BY file_id")
    assert [row[1:5] for row in rows] == [
        ("state_daily", len(before), 0, 0),
        ("state_daily", added, differs.sum(), len(common) - differs.sum()),
    ]
    changes["change"] = (changes["new"] - changes["old"]).abs()
    top = changes.sort_values(["change", "state", "date", "column"], ascending=[False, True, True, True]).head(10)
    largest = rows[1][5]
    assert [(r["region"]["state"], r["date"], r["column"], r["old"], r["new"]) for r in largest] == [
        (state, date, column, old, new) for state, date, column, old, new, _ in top.itertuples(index=False)]


def test_a_value_withdrawn_ranks_by_its_size_among_the_largest_revisions(landing, resources, query):
    """A revision that empties a cell (a value withdrawn: not reported now) ranks by the value it withdrew, not
    after every numeric one."""
    first = first_vintage()
    second, changes = revised(first)
    frame = pd.read_csv(io.BytesIO(second), dtype={"fips": str})
    row = frame.loc[frame["date"] <= "2020-12-31", "deaths"].idxmax()  # of a key the first file had
    withdrawn = (frame.at[row, "state"], frame.at[row, "date"], "deaths", int(frame.at[row, "deaths"]), None)
    frame["deaths"] = frame["deaths"].astype("Int64")
    frame.at[row, "deaths"] = pd.NA
    with dg.instance_for_test() as instance:
        for name, data in (("us_states/a.csv", first), ("us_states/b.csv", frame.to_csv(index=False).encode())):
            assert ingest(landing, resources, drop(landing, name, data), instance).success
    changes = changes[~((changes["state"] == withdrawn[0]) & (changes["date"] == withdrawn[1])
                        & (changes["column"] == "deaths"))]
    assert withdrawn[3] > (changes["new"] - changes["old"]).abs().max()  # the largest change of all
    (largest,) = query("SELECT largest FROM covid.revisions ORDER BY file_id DESC LIMIT 1")[0]
    assert (largest[0]["region"]["state"], largest[0]["date"], largest[0]["column"], largest[0]["old"],
            largest[0]["new"]) == withdrawn


def test_the_clean_step_reports_revision_counts(landing, resources):
    first = first_vintage()
    second, changes = revised(first)
    with dg.instance_for_test() as instance:
        for name, data in (("us_states/a.csv", first), ("us_states/b.csv", second)):
            result = ingest(landing, resources, drop(landing, name, data), instance)
        metadata = next(e.materialization.metadata for e in result.get_asset_materialization_events()
                        if e.asset_key.to_user_string() == "state_daily")
    assert metadata["keys_revised"].value == changes.groupby(["state", "date"]).ngroups
    assert metadata["keys_added"].value == len(pd.read_csv(io.BytesIO(second))) - len(pd.read_csv(io.BytesIO(first)))
    assert metadata["keys_unchanged"].value == len(pd.read_csv(io.BytesIO(first))) - metadata["keys_revised"].value
    assert "| region | date | column | old | new |" in metadata["largest_revisions"].value


def test_backfill_profile_on_two_vintages_a_day_apart(vintages, query):
    """Issued on 2021-01-01 and 2021-01-02 (noon UTC): a value dated d is k = 2021-01-01 − d days old in the
    first vintage, one more in the second; the share at its final value by k, counted by hand."""
    first, second, _, _ = vintages
    issued = {"2021-01-01T12:00:00Z": 0, "2021-01-02T12:00:00Z": 1}
    files = [row[0] for row in query("SELECT file_id FROM covid.ingested_files ORDER BY file_id")]
    for (when, _), file_id in zip(issued.items(), files):
        query("UPDATE covid.state_daily_history SET issued_at = %s WHERE file_id = %s RETURNING 1", (when, file_id))

    one = pd.read_csv(io.BytesIO(first)).melt(id_vars=KEY, value_vars=["cases", "deaths"], var_name="column_name")
    two = pd.read_csv(io.BytesIO(second)).melt(id_vars=KEY, value_vars=["cases", "deaths"], var_name="column_name")
    both = two.merge(one, on=[*KEY, "column_name"], how="left", suffixes=("", "_first"))
    age = (pd.Timestamp("2021-01-01") - pd.to_datetime(both["date"])).dt.days
    both["lag_first"] = age.where(both["value_first"].notna())
    both["lag_second"] = age + 1
    expected = []
    for k in range(61):
        for column, values in both.groupby("column_name"):
            reported = ((values["lag_first"] <= k) | (values["lag_second"] <= k)).sum()
            final = (values["lag_second"] <= k) | (
                (values["lag_first"] <= k) & (values["value_first"] == values["value"]))
            expected.append((k, column, reported, final.sum(), final.sum() / reported if reported else None))
    expected = pd.DataFrame(expected, columns=["k", "column_name", "reported", "at_final", "share"])
    actual = pd.DataFrame(query("SELECT * FROM covid.state_daily_backfill_profile()"), columns=expected.columns)
    assert_same(actual.sort_values(["column_name", "k"]), expected.sort_values(["column_name", "k"]))
    assert actual["share"].dropna().between(0, 1).all()


def test_backfill_profile_where_the_later_file_was_issued_first(vintages, query):
    """The second file in the ledger issued a day before the first: as of any time it is the value where both
    were issued (the latest file issued by then), so the first file's values that it revised are never seen.
    Checked against the profile's definition applied to the history's versions one k at a time."""
    files = [row[0] for row in query("SELECT file_id FROM covid.ingested_files ORDER BY file_id")]
    for when, file_id in zip(("2021-01-02T12:00:00Z", "2021-01-01T12:00:00Z"), files):
        query("UPDATE covid.state_daily_history SET issued_at = %s WHERE file_id = %s RETURNING 1", (when, file_id))
    # empty values (not reported): the first file's on some dates (some keys' only version, some their first),
    # the second file's in two states (some keys' final version)
    assert query("UPDATE covid.state_daily_history SET deaths = NULL WHERE file_id = %s AND date "
                 "BETWEEN '2020-11-10' AND '2020-12-20' RETURNING 1", (files[0],))
    assert query("UPDATE covid.state_daily_history SET deaths = NULL WHERE file_id = %s AND state IN "
                 "(SELECT DISTINCT state FROM covid.state_daily_history WHERE file_id = %s ORDER BY state LIMIT 2) "
                 "RETURNING 1", (files[1], files[1]))
    history = pd.DataFrame(query("SELECT state, date, file_id, issued_at, cases, deaths "
                                 "FROM covid.state_daily_history"),
                           columns=["state", "date", "file_id", "issued_at", "cases", "deaths"])
    versions = history.melt(id_vars=["state", "date", "file_id", "issued_at"], value_vars=["cases", "deaths"],
                            var_name="column_name")
    issued_day = pd.to_datetime(versions["issued_at"], utc=True).dt.tz_localize(None).dt.normalize()
    versions["lag"] = (issued_day - pd.to_datetime(versions["date"])).dt.days.clip(lower=0)
    values = ["state", "date", "column_name"]
    final = versions.loc[versions.groupby(values)["file_id"].idxmax()].set_index(values)["value"]
    expected = []
    for k in range(61):
        issued = versions[versions["lag"] <= k]
        # the latest version issued by then; an empty one is not reported
        seen = issued.loc[issued.groupby(values)["file_id"].idxmax()].set_index(values)["value"].dropna()
        at_final = (seen == final.loc[seen.index]).groupby("column_name").sum()
        for column in ("cases", "deaths"):
            reported = int((seen.index.get_level_values("column_name") == column).sum())
            done = int(at_final.get(column, 0))
            expected.append((k, column, reported, done, done / reported if reported else None))
    expected = pd.DataFrame(expected, columns=["k", "column_name", "reported", "at_final", "share"])
    actual = pd.DataFrame(query("SELECT * FROM covid.state_daily_backfill_profile()"), columns=expected.columns)
    assert_same(actual.sort_values(["column_name", "k"]), expected.sort_values(["column_name", "k"]))
    assert actual["share"].dropna().between(0, 1).all()


def test_replay_rebuilds_history_and_revisions(vintages, resources, query):
    history = "SELECT * FROM covid.state_daily_history ORDER BY state, date, file_id"
    revisions = "SELECT * FROM covid.revisions ORDER BY file_id, table_name"
    before = query(history), query(revisions)
    issued = query("SELECT max(issued_at) FROM covid.ingested_files")[0][0]
    as_of_before = query("SELECT * FROM covid.state_daily_as_of(%s) ORDER BY state, date", (issued,))
    assert run_replay(resources, dg.DagsterInstance.ephemeral()).success
    assert (query(history), query(revisions)) == before
    assert query("SELECT * FROM covid.state_daily_as_of(%s) ORDER BY state, date", (issued,)) == as_of_before
    assert query("SELECT to_regproc('covid.state_daily_replay_as_of')") == [(None,)]


def test_a_table_loaded_before_vintages_seeds_its_history(landing, resources, query):
    """A database from before this change: the clean table without history, a ledger without issue times.
    The next merge keeps the table's values as their first versions."""
    data = nyt_states_slice("2020-12-01", "2020-12-10", {"Ohio"})
    with dg.instance_for_test() as instance:
        assert ingest(landing, resources, drop(landing, "us_states/old.csv", data), instance).success
        with resources["warehouse"].connect() as conn, conn, conn.cursor() as cur:
            cur.execute("DROP TABLE covid.state_daily_history; ALTER TABLE covid.ingested_files DROP COLUMN issued_at;"
                        " DROP TABLE covid.migrated")
        warehouse_module._migrated.discard(resources["warehouse"].database_url)  # as in a new process
        later = nyt_states_slice("2020-12-11", "2020-12-11", {"Ohio"})
        assert ingest(landing, resources, drop(landing, "us_states/new.csv", later), instance).success
    received = query("SELECT received_at FROM covid.ingested_files ORDER BY file_id")[0][0]
    rows = query("SELECT file_id, issued_at, count(*) FROM covid.state_daily_history GROUP BY 1, 2 ORDER BY 1")
    assert [(r[1] == received, r[2]) for r in rows] == [(True, 10), (False, 1)]


def _latest(*files: bytes) -> bytes:
    """The files applied in this order, a later file's row winning its key: the file of those rows."""
    frames = [pd.read_csv(io.BytesIO(data), dtype={"fips": str}) for data in files]
    # a negative count is a bad row: set aside, it wins no key
    rows = pd.concat(frame[frame["cases"] >= 0] for frame in frames).drop_duplicates(KEY, keep="last")
    return rows.to_csv(index=False).encode()


@pytest.mark.parametrize("newer_days", ["all", "even", "same bytes"])
def test_an_older_file_loaded_after_a_newer_one_that_repeated_its_values(landing, resources, query, newer_days):
    """A file quarantined; then a newer file repeating the values before it, on every day and one more (its
    coverage keeps them), on every other day (a region reported in part: its rows are rewritten) or in the
    same bytes (a duplicate, which reported what the file before it did); then the quarantined file loaded
    under a more lenient rule (a person running its partition again). It is older in the ledger: the tables as
    of every time, now included, are those of the three files in ledger order."""
    states = {"Ohio", "Utah"}
    base = nyt_states_slice("2020-12-01", "2020-12-10", states)
    frame = pd.read_csv(io.BytesIO(base), dtype={"fips": str})
    # 2 bad rows of 20: quarantined under today's rule (1%)
    late = negative_cases(frame.assign(cases=frame["cases"] + 1000).to_csv(index=False, lineterminator="\r\n")
                          .encode(), [3, 9])
    newer = nyt_states_slice("2020-12-01", "2020-12-11", states)
    if newer_days == "same bytes":
        newer = base
    elif newer_days == "even":
        newer = _latest(nyt_states_slice("2020-12-02", "2020-12-02", states), *(
            nyt_states_slice(day, day, states) for day in ("2020-12-04", "2020-12-06", "2020-12-08", "2020-12-10")))
    rule = DATASETS["us_states"].max_bad_row_share
    issued = []
    with dg.instance_for_test() as instance:
        for name, data in (("base.csv", base), ("late.csv", late), ("newer.csv", newer)):
            key = drop(landing, f"us_states/{name}", data)
            issued.append(landing.describe(key).last_modified)
            ingest(landing, resources, key, instance)
            time.sleep(2)  # S3's last-modified times count whole seconds
        newer_status = "duplicate" if newer_days == "same bytes" else "loaded"
        assert query("SELECT status FROM covid.ingested_files ORDER BY file_id") == [
            ("loaded",), ("quarantined",), (newer_status,)]
        object.__setattr__(DATASETS["us_states"], "max_bad_row_share", 0.5)  # frozen; the assets hold it
        try:
            assert ingest(landing, resources, "us_states/late.csv", instance).success
        finally:
            object.__setattr__(DATASETS["us_states"], "max_bad_row_share", rule)
    assert query("SELECT status FROM covid.ingested_files ORDER BY file_id") == [
        ("loaded",), ("loaded",), (newer_status,)]

    current = table(query, f"SELECT {', '.join(COLUMNS)} FROM covid.state_daily ORDER BY state, date", None, COLUMNS)
    assert_same(current, derived(_latest(base, late, newer)))
    assert_same(as_of(query, "state_daily_as_of", issued[0] + (issued[1] - issued[0]) / 2, COLUMNS), derived(base))
    assert_same(as_of(query, "state_daily_as_of", issued[1] + (issued[2] - issued[1]) / 2, COLUMNS),
                derived(_latest(base, late)))
    assert_same(as_of(query, "state_daily_as_of", issued[2] + timedelta(days=1), COLUMNS), current)
    # the newer file's repeats are versions after the late file's, from the newer file's issue time
    restated = query("SELECT DISTINCT issued_at FROM covid.state_daily_history WHERE file_id = 3")
    assert restated == [(issued[2],)]


def _with(data: bytes, change) -> bytes:
    """The file's rows changed by `change`: in place, or the frame it returns."""
    frame = pd.read_csv(io.BytesIO(data), dtype={"fips": str})
    changed = change(frame)
    return (frame if changed is None else changed).to_csv(index=False).encode()


def _raise_ohio(days: list[str], by: int):
    def change(frame: pd.DataFrame) -> None:
        frame.loc[frame["date"].isin(days) & (frame["state"] == "Ohio"), "cases"] += by
    return change


@pytest.mark.parametrize("variant", ["revised", "revised to the late values", "no fips", "narrow repeat first"])
def test_an_older_file_loaded_after_a_repeat_of_the_values_before_it_and_a_later_revision(
    landing, resources, query, variant
):
    """A file quarantined; a newer file repeating the values before it (its coverage keeps them); a later file
    revising some of them (to other values, or to the quarantined file's); then the quarantined file loaded
    under a more lenient rule. The tables as of every time are those of the files in ledger order: between
    the repeat and the revision, the repeat's. Also with an empty first value column (fips), and with a
    repeat of a few days first, the full repeat after it and a later full one (the earliest coverage of each
    date is the one that counts)."""
    def nyt(last: str) -> bytes:
        data = nyt_states_slice("2020-12-01", last, {"Ohio", "Utah"})
        return _with(data, lambda frame: frame.__setitem__("fips", None)) if variant == "no fips" else data

    base = nyt("2020-12-10")
    frame = pd.read_csv(io.BytesIO(base), dtype={"fips": str})
    late = negative_cases(frame.assign(cases=frame["cases"] + 1000).to_csv(index=False, lineterminator="\r\n")
                          .encode(), [3, 9])
    newer = nyt("2020-12-11")  # every day of the base file again, and one more
    revised_days = ["2020-12-04", "2020-12-09"]
    files = [("base.csv", base), ("late.csv", late), ("newer.csv", newer)]
    if variant == "revised to the late values":
        files.append(("revised.csv", _with(newer, _raise_ohio(revised_days, 1000))))
    elif variant == "narrow repeat first":
        recent = _with(base, lambda frame: frame[frame["date"].isin(["2020-12-04", "2020-12-05"])])
        files[2:] = [("recent.csv", recent), ("newer.csv", newer), ("newest.csv", _with(newer, _raise_ohio(["2020-12-10"], 7)))]
    else:
        files.append(("revised.csv", _with(newer, _raise_ohio(revised_days, 7))))
    issued = [datetime(2021, 1, day, 12, tzinfo=timezone.utc) for day in range(1, len(files) + 1)]
    rule = DATASETS["us_states"].max_bad_row_share
    with dg.instance_for_test() as instance:
        for (name, data), when in zip(files, issued):
            landing.put(f"us_states/{name}", io.BytesIO(data), issued_at=when)
            ingest(landing, resources, f"us_states/{name}", instance)
        object.__setattr__(DATASETS["us_states"], "max_bad_row_share", 0.5)  # frozen; the assets hold it
        try:
            assert ingest(landing, resources, "us_states/late.csv", instance).success
        finally:
            object.__setattr__(DATASETS["us_states"], "max_bad_row_share", rule)
    assert query("SELECT status FROM covid.ingested_files ORDER BY file_id") == [("loaded",)] * len(files)

    current = table(query, f"SELECT {', '.join(COLUMNS)} FROM covid.state_daily ORDER BY state, date", None, COLUMNS)
    assert_same(current, derived(_latest(*(data for _, data in files))))
    for n, when in enumerate(issued, start=1):
        assert_same(as_of(query, "state_daily_as_of", when + timedelta(hours=1), COLUMNS),
                    derived(_latest(*(data for _, data in files[:n]))))


def test_past_vintages_carry_their_publishers_issue_time(landing, resources, query, s3_client, bucket):
    """Two vintages landed today with the times their publisher issued them (`issued-at` metadata): the tables
    as of those past times are theirs. Metadata that is no time is not taken: the object's last-modified
    time is its issue time, and the run's log says why."""
    first = first_vintage()
    second, _ = revised(first)
    issued = [datetime(2021, 1, 1, 12, tzinfo=timezone.utc), datetime(2021, 1, 2, 12, tzinfo=timezone.utc)]
    with dg.instance_for_test() as instance:
        for name, data, when in (("2021-01-01.csv", first, issued[0]), ("2021-01-02.csv", second, issued[1])):
            landing.put(f"us_states/{name}", io.BytesIO(data), issued_at=when)
            assert ingest(landing, resources, f"us_states/{name}", instance).success
        s3_client.put_object(Bucket=bucket, Key="drops/us_states/undated.csv",
                             Metadata={"issued-at": "yesterday"},
                             Body=nyt_states_slice("2021-01-02", "2021-01-02", {"Ohio"}))
        undated = ingest(landing, resources, "us_states/undated.csv", instance)
        assert undated.success
        logged = [entry.user_message for entry in instance.all_logs(undated.run_id)]
    assert [row[0] for row in query("SELECT issued_at FROM covid.ingested_files ORDER BY file_id")] == [
        *issued, landing.describe("us_states/undated.csv").last_modified]
    assert any("issued-at='yesterday' is not an ISO 8601 time" in message for message in logged)
    assert as_of(query, "state_daily_as_of", issued[0] - timedelta(hours=1), COLUMNS).empty
    assert_same(as_of(query, "state_daily_as_of", issued[0] + timedelta(hours=1), COLUMNS), derived(first))
    assert_same(as_of(query, "state_daily_as_of", issued[1] + timedelta(hours=1), COLUMNS), derived(second))


def test_a_folder_file_modified_in_the_future_is_issued_now(tmp_path):
    """A folder zone's issue time is the file's modification time; one to come (a clock ahead, `touch -d`)
    would hide its rows from every vintage until then: it is issued when the platform first sees it."""
    (tmp_path / "us_states").mkdir()
    path = tmp_path / "us_states" / "ahead.csv"
    path.write_bytes(nyt_states_slice("2021-01-01", "2021-01-02", {"Ohio"}))
    ahead = datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp()
    os.utime(path, (ahead, ahead))
    zone = LandingZone(url=tmp_path.as_uri(), s3=S3Resource())
    before = datetime.now(timezone.utc)
    issued = intake.issued_at(zone, "us_states/ahead.csv", zone.describe("us_states/ahead.csv").etag)
    assert before <= issued <= datetime.now(timezone.utc)
