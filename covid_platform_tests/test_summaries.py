"""The clean and summary tables against values computed independently (pandas) from real NYT/JHU slices."""

import dagster as dg
import pandas as pd
import pytest

from covid_platform_tests.helpers import county_rows, drop, ingest, nyt_states_slice
from covid_platform_tests.oracles import (
    assert_tables_match,
    county_table,
    expected_counties,
    expected_daily,
    read_counties,
    read_nyt,
    table,
)


def test_one_file_fills_state_and_national_tables(landing, resources, query):
    data = nyt_states_slice("2020-11-01", "2020-12-31")
    with dg.instance_for_test() as instance:
        result = ingest(landing, resources, drop(landing, "us_states/nov-dec.csv", data), instance)
    assert result.success
    states = read_nyt(data)
    assert len(states) > 3000  # every state and territory, 61 days
    assert_tables_match(query, states)
    assert query("SELECT status, rows, rows_loaded FROM covid.ingested_files") == [("loaded", len(states), len(states))]


def test_later_file_replaces_values_and_recomputes_what_depends_on_them(landing, resources, query):
    first = read_nyt(nyt_states_slice("2020-11-01", "2020-12-10"))
    second = read_nyt(nyt_states_slice("2020-12-05", "2020-12-31"))
    # The second file revises the overlap: Texas's counts from 2020-12-05 on grow by 1,000 cases.
    revised = (second["state"] == "Texas") & (second["date"] <= "2020-12-10")
    second.loc[revised, "cases"] += 1000
    with dg.instance_for_test() as instance:
        for name, frame in (("first.csv", first), ("second.csv", second)):
            body = frame.assign(date=frame["date"].dt.strftime("%Y-%m-%d")).to_csv(index=False).encode()
            assert ingest(landing, resources, drop(landing, f"us_states/{name}", body), instance).success

    merged = pd.concat([first[first["date"] < "2020-12-05"], second], ignore_index=True)
    assert_tables_match(query, merged)
    # The day after the overlap: new_cases falls by the revision's 1,000 in Texas.
    (texas,) = query("SELECT new_cases, cases FROM covid.state_daily WHERE state = 'Texas' AND date = '2020-12-11'")
    (before,) = query("SELECT cases FROM covid.state_daily WHERE state = 'Texas' AND date = '2020-12-10'")
    assert texas[0] == texas[1] - before[0]


def test_files_arriving_out_of_order_give_the_same_tables(landing, resources, query):
    late = nyt_states_slice("2021-01-01", "2021-01-31", {"Ohio", "Utah"})
    early = nyt_states_slice("2020-12-01", "2020-12-31", {"Ohio", "Utah"})
    with dg.instance_for_test() as instance:
        for name, body in (("jan.csv", late), ("dec.csv", early)):
            assert ingest(landing, resources, drop(landing, f"us_states/{name}", body), instance).success
    assert_tables_match(query, pd.concat([read_nyt(early), read_nyt(late)], ignore_index=True))


def test_a_date_one_state_reported_ahead_of_the_others_waits_for_them(landing, resources, query):
    # as a stream sends one state's days before the other states' files: the national total of such a day
    # would be that state's alone, its new cases minus the rest of the nation's
    three = {"Ohio", "Texas", "Vermont"}
    files = [("all.csv", nyt_states_slice("2021-01-01", "2021-01-10", three)),
             ("vermont.csv", nyt_states_slice("2021-01-11", "2021-01-13", {"Vermont"})),
             ("others.csv", nyt_states_slice("2021-01-11", "2021-01-11", {"Ohio", "Texas"})),
             # Ohio and Texas silent for 14 days: still awaited
             ("vermont-late.csv", nyt_states_slice("2021-01-14", "2021-01-25", {"Vermont"})),
             # for 15, or any longer (a date mistyped a month ahead): one state of three is not the nation
             ("vermont-later.csv", nyt_states_slice("2021-01-26", "2021-01-26", {"Vermont"})),
             # two of three are: Texas, 15 days behind them, is taken as stopped, and counts with its last values
             ("ohio.csv", nyt_states_slice("2021-01-12", "2021-01-26", {"Ohio"}))]
    loaded = []
    latest = []
    with dg.instance_for_test() as instance:
        for name, body in files:
            assert ingest(landing, resources, drop(landing, f"us_states/{name}", body), instance).success
            loaded.append(read_nyt(body))
            assert_tables_match(query, pd.concat(loaded, ignore_index=True))
            latest.append(query("SELECT max(date)::text, count(*) FILTER (WHERE states < 3) FROM covid.national_daily")[0])
    assert latest == [("2021-01-10", 0), ("2021-01-10", 0), ("2021-01-11", 0), ("2021-01-11", 0),
                      ("2021-01-11", 0), ("2021-01-26", 15)]
    # no drop to two states' count alone: the day's new cases are Ohio's and Vermont's
    (nation,) = query("SELECT new_cases FROM covid.national_daily WHERE date = '2021-01-26'")
    (states,) = query("SELECT sum(new_cases) FROM covid.state_daily WHERE state IN ('Ohio', 'Vermont') "
                      "AND date = '2021-01-26'")
    assert nation == states


def test_county_daily(landing, resources, query):
    data = county_rows("2020-03-22", "2020-04-20", {"Rhode Island", "Delaware", "Vermont"})
    with dg.instance_for_test() as instance:
        assert ingest(landing, resources, drop(landing, "us_counties/spring.csv", data), instance).success
    frame = read_counties(data)
    assert (frame["fips"] == "").any(), "the slice should hold counties without fips"
    pd.testing.assert_frame_equal(county_table(query), expected_counties(frame), check_dtype=False)
    # A first load builds the indexes after the rows are in; the table ends with all of them. The dashboards'
    # top counties by 7-day new cases on the latest date are read off the end of the second.
    assert query("SELECT indexdef FROM pg_indexes WHERE tablename = 'county_daily' ORDER BY indexname") == [
        ("CREATE INDEX county_daily_date_new_cases_7d ON ONLY covid.county_daily "
         "USING btree (date, new_cases_7d)",),
        ("CREATE UNIQUE INDEX county_daily_pkey ON ONLY covid.county_daily USING btree (state, county, date)",),
    ]


def test_county_daily_is_partitioned_by_year_and_differences_cross_the_boundary(landing, resources, query):
    december = county_rows("2020-12-20", "2020-12-31", {"Delaware"})
    january = county_rows("2021-01-01", "2021-01-05", {"Delaware"})
    with dg.instance_for_test() as instance:
        for key, body in (("us_counties/december.csv", december), ("us_counties/january.csv", january)):
            assert ingest(landing, resources, drop(landing, key, body), instance).success
    assert query(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'covid.county_daily'::regclass ORDER BY 1"
    ) == [
        ("county_daily_2020", "FOR VALUES FROM ('2020-01-01') TO ('2021-01-01')"),
        ("county_daily_2021", "FOR VALUES FROM ('2021-01-01') TO ('2022-01-01')"),
    ]
    both = county_rows("2020-12-20", "2021-01-05", {"Delaware"})
    frame = read_counties(both)
    columns = ["state", "county", "date", "cases", "deaths", "new_cases", "new_deaths", "new_cases_7d"]
    expected = expected_daily(frame, ["state", "county"], rolling=True)[columns]
    actual = table(query, f"SELECT {', '.join(columns)} FROM covid.county_daily ORDER BY state, county, date",
                   columns)
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False)
    # 2021-01-01's difference is taken from 2020-12-31, in the other partition
    assert query("SELECT count(*) FROM covid.county_daily_2021 WHERE date = '2021-01-01' AND new_cases <> cases")[0][0] > 0


@pytest.mark.parametrize("second_key", ["us_states/again.csv", "us_states/same.csv"])
def test_the_same_file_twice_never_double_counts(landing, resources, query, second_key):
    data = nyt_states_slice("2021-01-01", "2021-01-10")
    with dg.instance_for_test() as instance:
        assert ingest(landing, resources, drop(landing, "us_states/same.csv", data), instance).success
        before = query("SELECT * FROM covid.state_daily ORDER BY state, date")
        national = query("SELECT * FROM covid.national_daily ORDER BY date")
        assert ingest(landing, resources, drop(landing, second_key, data), instance).success
    assert query("SELECT * FROM covid.state_daily ORDER BY state, date") == before
    assert query("SELECT * FROM covid.national_daily ORDER BY date") == national
    statuses = query("SELECT key, status, reason FROM covid.ingested_files ORDER BY file_id")
    if second_key == "us_states/same.csv":
        # Same key, same bytes: the same object version, so the same partition and one ledger row.
        assert [s[:2] for s in statuses] == [("us_states/same.csv", "loaded")]
    else:
        assert [s[:2] for s in statuses] == [("us_states/same.csv", "loaded"), (second_key, "duplicate")]
        assert "us_states/same.csv" in statuses[1][2]


VALUES = "state, fips, date, cases, deaths, new_cases, new_deaths, new_cases_7d, new_deaths_7d"  # all but file_id


def test_bytes_loaded_again_after_a_later_change_win_again(landing, resources, query):
    """A file's bytes dropped again after a later file revised some of its values are not a duplicate: they
    win as any later file does (a publisher back to an earlier version, a user restoring a good file)."""
    good = nyt_states_slice("2021-01-01", "2021-01-10", {"Ohio", "Vermont"})
    header, *rows = good.split(b"\r\n")
    vermont = next(row for row in rows if row.startswith(b"2021-01-05,Vermont,"))
    date, state, fips, _, _ = vermont.split(b",")
    wrong = b"\r\n".join([header, b",".join([date, state, fips, b"100", b""]), b""])
    with dg.instance_for_test() as instance:
        assert ingest(landing, resources, drop(landing, "us_states/good.csv", good), instance).success
        loaded = query(f"SELECT {VALUES} FROM covid.state_daily ORDER BY state, date")
        assert ingest(landing, resources, drop(landing, "us_states/wrong.csv", wrong), instance).success
        assert query("SELECT cases, deaths FROM covid.state_daily WHERE state = 'Vermont' AND date = %s",
                     (date.decode(),)) == [(100, None)]
        assert ingest(landing, resources, drop(landing, "us_states/good-again.csv", good), instance).success
        # and once more: now the same bytes as the latest file, a duplicate
        assert ingest(landing, resources, drop(landing, "us_states/good-3.csv", good), instance).success
    statuses = query("SELECT key, status FROM covid.ingested_files ORDER BY file_id")
    assert statuses == [("us_states/good.csv", "loaded"), ("us_states/wrong.csv", "loaded"),
                        ("us_states/good-again.csv", "loaded"), ("us_states/good-3.csv", "duplicate")]
    assert query(f"SELECT {VALUES} FROM covid.state_daily ORDER BY state, date") == loaded
