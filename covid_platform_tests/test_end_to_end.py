"""The README's first command against real services: `covid-platform dev` (dagster dev: webserver, daemon,
sensor) with PostgreSQL at DATABASE_URL and the landing zone in S3 (moto over HTTP). Files are dropped into
the bucket and the tables fill through the sensor, exactly as a user would see it."""

import time

import pandas as pd

from covid_platform_tests.helpers import (
    dev_env,
    loaded_files,
    nyt_states_slice,
    start_dev,
    stop_dev,
    wait_for,
)
from covid_platform_tests.oracles import NATIONAL_COLUMNS, expected_national, read_nyt, table


def test_dropped_files_flow_through_dagster_dev(database_url, s3_endpoint, s3_client, bucket, query, tmp_path):
    env = dev_env(database_url, s3_endpoint, bucket, tmp_path)
    log = open(tmp_path / "dev.log", "w")
    dev = start_dev(env, log)
    try:
        # The sample file shipped in the package is dropped at start and loaded by the sensor's run.
        wait_for(dev, lambda: loaded_files(query), 180, "the sample file to load")

        # The longest stretch of the tests' NYT slice (data/README.md) with every state: 15k rows, 9 months.
        last_date = "2021-02-28"
        nyt = nyt_states_slice("2020-06-01", last_date)
        dropped = time.monotonic()
        s3_client.put_object(Bucket=bucket, Key="drops/us_states/us-states.csv", Body=nyt)
        wait_for(dev, lambda: query("SELECT 1 FROM covid.ingested_files WHERE key = 'us_states/us-states.csv' "
                               "AND status = 'loaded'"), 120, "us-states.csv to load")
        wait_for(dev, lambda: query("SELECT 1 FROM covid.national_daily WHERE date = %s", (last_date,)), 60,
                 "national_daily to reach the file's last date")
        print(f"\ndrop → national_daily updated: {time.monotonic() - dropped:.1f} s "
              f"for us-states.csv ({len(nyt):,} bytes)")

        states = read_nyt(nyt)
        national = table(query, f"SELECT {', '.join(NATIONAL_COLUMNS)} FROM covid.national_daily ORDER BY date",
                         NATIONAL_COLUMNS)
        pd.testing.assert_frame_equal(national, expected_national(states)[NATIONAL_COLUMNS], check_dtype=False)
        assert query("SELECT count(*) FROM covid.state_daily") == [(len(states),)]
    finally:
        stop_dev(dev)
        log.close()
    assert dev.returncode is not None
