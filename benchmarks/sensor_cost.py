"""The landing sensor's cost with a large landing zone: one tick with 100,000 objects already in the bucket.

    .venv/bin/python benchmarks/sensor_cost.py [--objects 100000] [--new 10]

The zone holds `--objects` objects as the platform leaves it: half landed files (us_counties/ and us_states/,
one folder per day) and half their `_archive/` copies, in moto's S3 over HTTP (filled through moto's
backend in-process, in seconds). The real `landing_sensor` is ticked as the daemon ticks it, against a Dagster
instance in PostgreSQL (as in production), until it has caught up; then it measures:
  1. a tick with nothing new;
  2. a tick after `--new` files land in the dataset that sorts last (the next day's us_states files);
  3. `--new` files landing in both datasets (the next day's us_counties and us_states files): the ticks until
     every one has been requested.
For each: wall time of the sensor's evaluation, the part of it spent in S3 requests, the S3 requests by
operation and the objects those listings returned. moto scans and sorts the whole bucket on every listing
(real S3 reads an index), so its request time grows with the bucket; the request and object counts are what
carries over to S3. PostgreSQL: BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres);
a scratch database is created and dropped.
"""

import argparse
import json
import os
import sys
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from datetime import date, timedelta
from urllib.parse import urlparse

import boto3
import botocore.client
from common import moto_s3, scratch_database

DATASETS = ("us_counties", "us_states")
PREFIX = "drops/"


class S3Meter:
    """Counts and times every AWS request this process makes (botocore's one entry point for them)."""

    def __init__(self):
        self.calls: Counter = Counter()
        self.listed = 0
        self.seconds = 0.0
        self._original = botocore.client.BaseClient._make_api_call

    def install(self):
        meter, original = self, self._original

        def metered(client, operation, params):
            started = time.perf_counter()
            try:
                response = original(client, operation, params)
            finally:
                meter.seconds += time.perf_counter() - started
                meter.calls[operation] += 1
            if operation == "ListObjectsV2":
                meter.listed += response.get("KeyCount", 0)
            return response

        botocore.client.BaseClient._make_api_call = metered

    @contextmanager
    def measure(self):
        self.calls, self.listed, self.seconds = Counter(), 0, 0.0
        yield self


def fill(bucket: str, objects: int) -> tuple[date, int]:
    """Landed files and their archive copies, straight into moto's in-process backend.

    Returns the last day used and the files per day per dataset."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    files = objects // 2
    per_day = 50
    day, n = date(2020, 1, 1), 0
    while n < files:
        for dataset in DATASETS:
            for part in range(per_day):
                if n == files:
                    break
                key = f"{dataset}/{day}/part-{part:03d}.csv"
                body = f"date,state\n{day},{dataset}{part}\n".encode()
                landed = backend.put_object(bucket, PREFIX + key, body, disable_notification=True)
                backend.put_object(bucket, f"{PREFIX}_archive/{key}/{landed.etag.strip(chr(34))}", body,
                                   disable_notification=True)
                n += 1
        day += timedelta(days=1)
    return day - timedelta(days=1), per_day


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=10)
    args = parser.parse_args()

    with moto_s3() as endpoint, scratch_database() as url:
        run(endpoint, urlparse(url)._replace(scheme="postgresql+psycopg2").geturl(), args.objects, args.new)


def run(endpoint: str, dagster_url: str, objects: int, new: int) -> None:
    import dagster as dg
    from dagster_aws.s3 import S3Resource

    from covid_platform.assets.raw import KEY_TAG
    from covid_platform.definitions import defs
    from covid_platform.resources.landing import PAGE_SIZE, LandingZone
    from covid_platform.sensors.landing import landing_sensor

    s3 = boto3.client("s3", endpoint_url=endpoint)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    started = time.perf_counter()
    last_day, per_day = fill(bucket, objects)
    total = s3.list_objects_v2(Bucket=bucket, Prefix=PREFIX, MaxKeys=1)  # the bucket answers over HTTP
    assert total["KeyCount"] == 1
    print(f"cores: {os.cpu_count()}  load average {os.getloadavg()[0]:.1f}  zone: {objects:,} objects "
          f"({objects // 2:,} files + their _archive/ copies, {per_day} files a day per dataset, up to "
          f"{last_day}), filled in {time.perf_counter() - started:.1f} s")

    s3_resource = S3Resource(endpoint_url=endpoint, region_name="us-east-1")
    landing = LandingZone(url=f"s3://{bucket}/drops", s3=s3_resource)
    repository = defs.get_repository_def()
    meter = S3Meter()
    meter.install()

    with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": dagster_url}}}) as instance:
        print(f"Dagster instance: {type(instance.run_storage).__name__}")
        cursor = None

        def tick():
            """One evaluation as the daemon runs it; then the daemon's part, adding the partitions."""
            nonlocal cursor
            with meter.measure():
                begun = time.perf_counter()
                with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"landing": landing},
                                             repository_def=repository) as context:
                    result = landing_sensor(context)
                elapsed = time.perf_counter() - begun
                calls, listed, s3_seconds = dict(meter.calls), meter.listed, meter.seconds
            added = time.perf_counter()
            for request in result.dynamic_partitions_requests:
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            cursor = result.cursor
            return result, elapsed, s3_seconds, calls, listed, time.perf_counter() - added

        def report(label, elapsed, s3_seconds, calls, listed, requested, add_seconds):
            print(f"{label:<44} {elapsed:6.3f} s  (S3 {s3_seconds:5.3f} s, sensor + instance "
                  f"{elapsed - s3_seconds:5.3f} s)  requests {calls}  objects listed {listed:,}  "
                  f"runs requested {requested}  [daemon adds partitions: {add_seconds:.3f} s]")

        begun, ticks, requested = time.perf_counter(), 0, 0
        while True:  # caught up: a tick that requests nothing and leaves the cursor where it was
            before = cursor
            result, *_ = tick()
            ticks += 1
            requested += len(result.run_requests)
            unmoved = json.loads(cursor)["after"] == json.loads(before or "{}").get("after")
            if not result.run_requests and unmoved:
                break
        print(f"catch-up: {ticks} ticks, {requested:,} runs requested, {time.perf_counter() - begun:.0f} s")
        partitions = sum(len(instance.get_dynamic_partitions(f"{d}_files")) for d in DATASETS)
        assert requested == partitions == objects // 2, (requested, partitions)

        idle = [tick() for _ in range(5)]
        for result, *figures in idle:
            assert not result.run_requests
        idle.sort(key=lambda figures: figures[1])
        _, elapsed, s3_seconds, calls, listed, add_seconds = idle[2]
        report(f"nothing new (median of 5, max {idle[-1][1]:.3f} s)", elapsed, s3_seconds, calls, listed, 0,
               add_seconds)

        next_day = last_day + timedelta(days=1)
        keys = [f"us_states/{next_day}/part-{part:03d}.csv" for part in range(new)]
        for key in keys:
            s3.put_object(Bucket=bucket, Key=PREFIX + key, Body=f"date,state\n{next_day},{key}\n".encode())
        result, *figures = tick()
        assert sorted(r.tags[KEY_TAG] for r in result.run_requests) == keys, len(result.run_requests)
        report(f"{new} new, after the cursor (us_states/)", *figures[:4], len(keys), figures[4])

        next_day += timedelta(days=1)
        keys = [f"{DATASETS[i % 2]}/{next_day}/part-{i:03d}.csv" for i in range(new)]
        for key in keys:
            s3.put_object(Bucket=bucket, Key=PREFIX + key, Body=f"date,state\n{next_day},{key}\n".encode())
        found, slowest, first = {}, 0.0, None
        ticks = 0
        while len(found) < len(keys):
            result, elapsed, s3_seconds, calls, listed, add_seconds = tick()
            ticks += 1
            slowest = max(slowest, elapsed)
            first = first or (elapsed, s3_seconds, calls, listed, len(result.run_requests), add_seconds)
            found.update({r.tags[KEY_TAG]: ticks for r in result.run_requests})
            assert ticks <= objects // PAGE_SIZE + 2, f"not all found after {ticks} ticks: {sorted(found)}"
        assert sorted(found) == sorted(keys)
        report(f"{new} new in both datasets: first tick", *first)
        by_dataset = {d: max(t for k, t in found.items() if k.startswith(d)) for d in DATASETS}
        print(f"  ... every one requested after {ticks} ticks (slowest tick {slowest:.3f} s): "
              + ", ".join(f"{d}/ by tick {t}" for d, t in by_dataset.items()))

        # How long a file that lands behind the cursor can wait: one full cycle of the sweep.
        while json.loads(cursor)["sweep"]:
            tick()
        cycle = 0
        while True:
            tick()
            cycle += 1
            if not json.loads(cursor)["sweep"]:
                break
        print(f"  a full sweep of the zone takes {cycle} ticks: {cycle * 10 / 60:.1f} min at the 10 s "
              "interval, the longest a file behind the cursor waits")

        started = time.perf_counter()
        count = len(instance.get_dynamic_partitions("us_counties_files"))
        print(f"instance.get_dynamic_partitions('us_counties_files'): {count:,} keys in "
              f"{time.perf_counter() - started:.3f} s (the sweep reads it on every tick)")


if __name__ == "__main__":
    sys.exit(main())
