"""Latency of a small file: from the S3 put to covid.national_daily updated, `covid-platform dev` running.

    .venv/bin/python benchmarks/latency.py [--drops 10] [--queue] [--interval S] [--queue-wait S]
        [--objects 1100] [--pycache] [--keep-log] [--data DIR]

Starts `covid-platform dev` (webserver, daemon, landing sensor, runs in their own processes) against a scratch
PostgreSQL database and a landing zone in moto's S3 over HTTP, as the end-to-end test does. The zone first
holds `--objects` objects (default 1,100: more than a page of S3's listing) under `_archive/`, as a zone that
has ingested that many files does; the sensor never requests them, but its sweep lists them. The base file
(NYT us-states.csv, every state to 2023-03-23; nyt/… of the --data folder, default ../shared/data) is loaded
first, as `us_states/base.csv`. Then `--drops` files of one state and one day (New York's last day, its cases
revised: +1 each time) are put as `us_states/<day>-<n>.csv`, at random moments, one at a time: each sorts
before the last key seen in its folder
(the folder's cursor, the sample file `us_states/sample/…` that `covid-platform dev` drops), so no listing
from a cursor finds it: without a queue the sweep does, which takes two ticks to go round more than 1,000
objects. With `--queue`, the bucket notifies an SQS queue of moto's (s3:ObjectCreated:* under the zone's
prefix) and `covid-platform dev` reads it (LANDING_QUEUE_URL): the sensor requests each drop from its
message. For each drop, the time from the put to that day's national total in covid.national_daily, split by the
run's timestamps in Dagster's storage:
  until the sensor's tick created the run | queued until the daemon launched it and its process started |
  the run (raw → state_daily → national_daily).
--interval: COVID_SENSOR_INTERVAL_SECONDS (default: the platform's, 10 without a queue, 2 with one);
--queue-wait: LANDING_QUEUE_WAIT_SECONDS (the tick's long poll; default the platform's, 4).
--pycache: bytecode cached for the platform's processes where PYTHONDONTWRITEBYTECODE is set (each run's
process otherwise compiles the package's sources again: about 0.8 s of CPU).
PostgreSQL: BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
"""

import argparse
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from common import (
    NYT_STATES, add_data_argument, connect, dagster_dev, data_file, moto_s3, scratch_database, wait_for,
)

from covid_platform.assets.raw import KEY_TAG

BASE_LAST_DAY = date(2023, 3, 23)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--drops", type=int, default=10)
    parser.add_argument("--queue", action="store_true",
                        help="S3 event notifications to SQS, LANDING_QUEUE_URL")
    parser.add_argument("--interval", type=int,
                        help="COVID_SENSOR_INTERVAL_SECONDS (default 10; 2 with --queue)")
    parser.add_argument("--queue-wait", type=int, help="LANDING_QUEUE_WAIT_SECONDS (default: the platform's)")
    parser.add_argument("--objects", type=int, default=1100, help="objects in the zone before the drops")
    parser.add_argument("--pycache", action="store_true",
                        help="let the platform's processes cache their bytecode (in the scratch folder), "
                             "even where PYTHONDONTWRITEBYTECODE is set: a run's process then does not "
                             "compile the package's sources again")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-log", action="store_true", help="keep covid-platform dev's log (printed)")
    add_data_argument(parser)
    args = parser.parse_args()
    args.interval = args.interval or (2 if args.queue else 10)
    base_file = data_file(args.data, NYT_STATES)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request otherwise

    work = tempfile.mkdtemp(prefix="covid_latency_")  # kept when a drop does not arrive: its dev.log says why
    with moto_s3() as endpoint, scratch_database() as database_url:
        s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(max_pool_connections=32))
        bucket = f"latency-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        fill(s3, bucket, args.objects)
        os.environ.pop("LANDING_QUEUE_URL", None)
        if args.queue:
            os.environ["LANDING_QUEUE_URL"] = notify(endpoint, s3, bucket)
        if args.queue_wait is not None:
            os.environ["LANDING_QUEUE_WAIT_SECONDS"] = str(args.queue_wait)
        if args.pycache:
            os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
            os.environ["PYTHONPYCACHEPREFIX"] = str(Path(work) / "pycache")
        conn, query = connect(database_url)
        with dagster_dev(database_url, endpoint, bucket, Path(work), args.interval) as (dev, env):
            try:
                measure(args, base_file, s3, bucket, dev, query, env)
            except SystemExit:
                print(f"covid-platform dev's log: {work}/dev.log")
                raise
        conn.close()
    if args.keep_log:
        print(f"covid-platform dev's log: {work}/dev.log")
    else:
        shutil.rmtree(work)


def fill(s3, bucket: str, count: int) -> None:
    """`count` archived copies, as `_archive/<key>/<etag>` (what ingesting a file leaves in the zone)."""
    def put(i: int) -> None:
        s3.put_object(Bucket=bucket, Key=f"drops/_archive/us_states/old-{i:05d}.csv/{i:032x}", Body=b"date\n")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, range(count)))


def notify(endpoint: str, s3, bucket: str) -> str:
    """A queue of moto's SQS, and the bucket's notification of every object created under the zone's prefix to
    it (moto delivers them, as S3 does); returns the queue's URL."""
    sqs = boto3.client("sqs", endpoint_url=endpoint)
    url = sqs.create_queue(QueueName=f"{bucket}-landing")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{
            "QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "drops/"}]}},
        }],
    })
    return url


def measure(args, base_file: Path, s3, bucket, dev, query, env) -> None:
    import dagster as dg

    os.environ["DAGSTER_PG_URL"] = env["DAGSTER_PG_URL"]  # to read the runs' timestamps in Dagster's storage
    how = (f"queue {env['LANDING_QUEUE_URL']}" if args.queue else "no queue") + (
        f", long poll {args.queue_wait} s" if args.queue and args.queue_wait is not None else "") + (
        ", bytecode cached" if args.pycache else
        ", no bytecode cache (PYTHONDONTWRITEBYTECODE)" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "")
    print(f"cores: {os.cpu_count()}  load average {os.getloadavg()[0]:.1f}  "
          f"sensor interval: {args.interval} s, {how}, {args.objects:,} objects in the zone"
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
    ((ny_cases, ny_deaths),) = query("SELECT cases, deaths FROM covid.state_daily WHERE state = 'New York' "
                                     "AND date = %s", (BASE_LAST_DAY,))
    ((national_cases,),) = query("SELECT cases FROM covid.national_daily WHERE date = %s", (BASE_LAST_DAY,))
    print(f"base file loaded ({base_file.name}, state_daily {rows:,} rows): "
          f"{time.monotonic() - started:.1f} s", flush=True)

    rng = random.Random(args.seed)
    splits, loads, starts = [], [], []
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        for drop in range(1, args.drops + 1):
            time.sleep(rng.uniform(0, 10))  # a random moment of the sensor's cycle
            loads.append(os.getloadavg()[0])
            # New York's count of the base file's last day revised: the national total of that day moves (a
            # day only one state reported is not a national total until the others report it)
            key = f"us_states/{BASE_LAST_DAY}-{drop:02d}.csv"  # sorts before its folder's cursor (us_states/sample/…)
            body = f"date,state,fips,cases,deaths\n{BASE_LAST_DAY},New York,36,{ny_cases + drop},{ny_deaths}\n".encode()
            put = time.time()
            s3.put_object(Bucket=bucket, Key=f"drops/{key}", Body=body)
            try:
                wait_for(dev, lambda: query("SELECT 1 FROM covid.national_daily WHERE date = %s AND cases = %s",
                                            (BASE_LAST_DAY, national_cases + drop)),
                         120, f"{key} in national_daily", 0.05)
            except SystemExit:
                runs = [(r.dagster_run.run_id, r.dagster_run.status.value)
                        for r in instance.get_run_records(dg.RunsFilter(tags={KEY_TAG: key}))]
                ledger = query("SELECT status, reason FROM covid.ingested_files WHERE key = %s", (key,))
                print(f"{key}: runs {runs}; the ledger: {ledger}")
                raise
            latency = time.time() - put
            [record] = wait_for(dev, lambda: instance.get_run_records(dg.RunsFilter(tags={KEY_TAG: key})), 30,
                                f"the run of {key}")
            run = wait_for(dev, lambda: instance.get_run_record_by_id(record.dagster_run.run_id).end_time
                           and instance.get_run_record_by_id(record.dagster_run.run_id), 60, "the run to end")
            created = run.create_timestamp.timestamp()
            split = (latency, created - put, run.start_time - created, latency - (run.start_time - put))
            splits.append(split)
            starts.append(start_split(instance, run.dagster_run.run_id, created))
            print(f"drop {drop}: {latency:5.1f} s  = sensor tick {split[1]:4.1f} s | queue + launch + "
                  f"process start {split[2]:4.1f} s (enqueue {starts[-1][0]:.1f} + queue "
                  f"{starts[-1][1]:.1f} + process start {starts[-1][2]:.1f}) | run {split[3]:4.1f} s"
                  f" (until national_daily; the run ended after {run.end_time - run.start_time:.1f} s)",
                  flush=True)
    columns = list(zip(*splits))
    print("over", len(splits), "drops, mean / worst (s): " + ", ".join(
        f"{name} {sum(values) / len(values):.1f} / {max(values):.1f}"
        for name, values in zip(("total", "sensor tick", "queue + start", "run"), columns)))
    print("queue + start, mean / worst (s): " + ", ".join(
        f"{name} {sum(values) / len(values):.1f} / {max(values):.1f}" for name, values in zip(
            ("created until enqueued", "in the queue until launched",
             "launched until the run's process began (spawn, imports: RUN_START)"), zip(*starts))))
    mean, worst = sum(columns[0]) / len(splits), max(columns[0])
    print(f"mean {mean:.1f} s, worst {worst:.1f} s (goal: mean ≤ 8 s, worst ≤ 12 s: "
          f"{'met' if mean <= 8 and worst <= 12 else 'NOT met'}); load average during the drops "
          f"{min(loads):.1f}–{max(loads):.1f}, now {os.getloadavg()[0]:.1f}")


def start_split(instance, run_id: str, created: float) -> tuple[float, float, float]:
    """From the run's creation: until the sensor daemon submitted it to the queue (RUN_ENQUEUED), until the
    queue's daemon called the launcher (RUN_STARTING), until the run's process, spawned by the code server,
    began (RUN_START)."""
    import dagster as dg

    event = dg.DagsterEventType
    types = (event.RUN_ENQUEUED, event.RUN_STARTING, event.RUN_START)
    at = {}
    for record in instance.get_records_for_run(run_id, of_type=set(types)).records:
        at.setdefault(record.event_log_entry.dagster_event.event_type, record.event_log_entry.timestamp)
    enqueued, starting, start = (at[t] for t in types)
    return enqueued - created, starting - enqueued, start - starting


if __name__ == "__main__":
    sys.exit(main())
