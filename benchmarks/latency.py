"""Latency of a small file: from the S3 put to covid.national_daily updated, `covid-platform dev` running.

    .venv/bin/python benchmarks/latency.py [--drops 5] [--interval 10] [--data DIR]

Starts `covid-platform dev` (webserver, daemon, landing sensor, runs in their own processes) against a scratch
PostgreSQL database and a landing zone in moto's S3 over HTTP, as the end-to-end test does, with the landing
sensor ticking every `--interval` seconds (the platform's default is 10). The base file (NYT us-states.csv,
every state to 2023-03-23; nyt/… of the --data folder, default ../shared/data) is loaded first. Then `--drops`
files of one state and one day (the next day each time) are put at random moments of the sensor's cycle, one
at a time; for each, the time from the put to the row of that day in covid.national_daily, split by the run's
timestamps in Dagster's storage:
  until the sensor's tick created the run | queued until the daemon launched it and its process started |
  the run (raw → state_daily → national_daily).
PostgreSQL: BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
"""

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlparse

import boto3
from common import (
    NYT_STATES, add_data_argument, connect, dagster_dev, data_file, moto_s3, scratch_database, wait_for,
)

from covid_platform.assets.raw import KEY_TAG

BASE_LAST_DAY = date(2023, 3, 23)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--drops", type=int, default=5)
    parser.add_argument("--interval", type=int, default=10, help="COVID_SENSOR_INTERVAL_SECONDS")
    parser.add_argument("--seed", type=int, default=1)
    add_data_argument(parser)
    args = parser.parse_args()
    base_file = data_file(args.data, NYT_STATES)

    with moto_s3() as endpoint, scratch_database() as database_url, \
            tempfile.TemporaryDirectory(prefix="covid_latency_") as work:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        bucket = f"latency-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        conn, query = connect(database_url)
        with dagster_dev(database_url, endpoint, bucket, Path(work), args.interval) as (dev, env):
            measure(args, base_file, s3, bucket, dev, query, env)
        conn.close()


def measure(args, base_file: Path, s3, bucket, dev, query, env) -> None:
    import dagster as dg

    os.environ["DAGSTER_PG_URL"] = env["DAGSTER_PG_URL"]  # to read the runs' timestamps in Dagster's storage
    print(f"cores: {os.cpu_count()}  load average {os.getloadavg()[0]:.1f}  "
          f"sensor interval: {args.interval} s"
          f"  (covid-platform dev, S3 = moto, PostgreSQL on {urlparse(env['DATABASE_URL']).hostname})")
    started = time.monotonic()
    # The sample file covid-platform dev drops at start: loaded once national_daily has rows.
    wait_for(dev, lambda: query("SELECT to_regclass('covid.national_daily')")[0][0] and query(
        "SELECT 1 FROM covid.national_daily LIMIT 1"), 300, "the sample file to load", 0.5)
    print(f"platform up, sample file loaded: {time.monotonic() - started:.0f} s", flush=True)

    started = time.monotonic()
    s3.upload_file(str(base_file), bucket, "drops/us_states/base.csv")
    wait_for(dev, lambda: query("SELECT 1 FROM covid.national_daily WHERE date = %s", (BASE_LAST_DAY,)), 300,
             "the base file in national_daily", 0.5)
    rows = query("SELECT count(*) FROM covid.state_daily")[0][0]
    print(f"base file loaded ({base_file.name}, state_daily {rows:,} rows): "
          f"{time.monotonic() - started:.1f} s", flush=True)

    rng = random.Random(args.seed)
    latencies = []
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        for drop in range(1, args.drops + 1):
            time.sleep(rng.uniform(0, args.interval))  # a random moment of the sensor's cycle
            day = BASE_LAST_DAY + timedelta(days=drop)
            key = f"us_states/{day}.csv"
            body = f"date,state,fips,cases,deaths\n{day},New York,36,{7_000_000 + drop},80000\n".encode()
            put = time.time()
            s3.put_object(Bucket=bucket, Key=f"drops/{key}", Body=body)
            wait_for(dev, lambda: query("SELECT 1 FROM covid.national_daily WHERE date = %s", (day,)), 120,
                     f"{day} in national_daily", 0.05)
            latency = time.time() - put
            latencies.append(latency)
            [record] = wait_for(dev, lambda: instance.get_run_records(dg.RunsFilter(tags={KEY_TAG: key})), 30,
                                f"the run of {key}")
            run = wait_for(dev, lambda: instance.get_run_record_by_id(record.dagster_run.run_id).end_time
                           and instance.get_run_record_by_id(record.dagster_run.run_id), 60, "the run to end")
            created = run.create_timestamp.timestamp()
            until_run = run.start_time - put
            print(f"drop {drop}: {latency:5.1f} s  = sensor tick {created - put:4.1f} s | queue + launch + "
                  f"process start {run.start_time - created:4.1f} s | run {latency - until_run:4.1f} s"
                  f" (until national_daily; the run ended after {run.end_time - run.start_time:.1f} s)",
                  flush=True)
    print(f"max: {max(latencies):.1f} s  mean: {sum(latencies) / len(latencies):.1f} s  "
          f"over {len(latencies)} drops (target: at most 15 s); load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
