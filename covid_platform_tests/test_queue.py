"""The landing sensor with a queue (LANDING_QUEUE_URL): moto's S3 and SQS over HTTP, the bucket notifying the
queue of every object created under the zone's prefix (moto delivers S3's event notifications, its
s3:TestEvent included, to SQS in server mode: nothing here sends them by hand but the duplicates and the
garbage), and the sensor ticked as the daemon ticks it (`helpers.tick`: the cursor carried from tick to tick,
each tick's partitions added before the next)."""

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from covid_platform.assets.raw import ETAG_TAG, KEY_TAG
from covid_platform.engine.ledger import partition_key
from covid_platform.resources.landing import LandingZone
from covid_platform.sensors import landing as sensor
from covid_platform_tests.helpers import REPOSITORY, tick, tick_until_quiet

PREFIX = "drops/"  # the `landing` fixture's zone is s3://<bucket>/drops


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture(autouse=True)
def short_waits(monkeypatch):
    """A tick waits 1 s on an empty queue (4 s in production) and lists when its cursor says so."""
    monkeypatch.setattr(sensor, "QUEUE_WAIT_SECONDS", 1)
    monkeypatch.delenv("LANDING_QUEUE_URL", raising=False)


@pytest.fixture
def sqs(s3_endpoint):
    return boto3.client("sqs", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture
def put(s3_client, bucket):
    def put_object(key: str, body: bytes | None = None) -> str:
        body = body if body is not None else f"date,state,fips,cases,deaths\n# {key}\n".encode()
        return s3_client.put_object(Bucket=bucket, Key=PREFIX + key, Body=body)["ETag"].strip('"')

    return put_object


@pytest.fixture
def notify(s3_client, sqs, bucket, s3_endpoint):
    """A function that creates a queue, has the bucket send it its s3:ObjectCreated:* notifications under
    the zone's prefix from then on (S3, and moto, then send it an s3:TestEvent), and returns a zone on that
    queue."""

    def zone(**settings) -> LandingZone:
        url = sqs.create_queue(QueueName=f"landing-{uuid.uuid4().hex[:12]}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        s3_client.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
            "QueueConfigurations": [{
                "QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": PREFIX}]}},
            }],
        })
        return LandingZone(url=f"s3://{bucket}/drops", queue_url=url,
                           s3=S3Resource(endpoint_url=s3_endpoint, region_name="us-east-1"), **settings)

    return zone


def in_queue(sqs, url: str) -> tuple[int, int]:
    """(messages waiting, messages received and not deleted yet)."""
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return (int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]))


def listed_now(cursor: str, **changes) -> str:
    """The cursor as a tick that has just listed the zone leaves it: the next tick does not list."""
    return json.dumps({**json.loads(cursor), "listed": time.time(), **changes})


def requested(result) -> list[tuple[str, str]]:
    return sorted((r.tags[KEY_TAG], r.tags[ETAG_TAG]) for r in result.run_requests)


def s3_event(bucket: str, key: str, etag: str, name: str = "ObjectCreated:Put") -> str:
    """An S3 event notification as S3 sends it (the key URL-encoded)."""
    from urllib.parse import quote_plus

    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-27T12:00:00.000Z", "eventName": name,
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(key), "size": 10, "eTag": etag}},
    }]})


def test_a_drop_is_requested_from_its_message_alone(instance, landing, notify, put, sqs, monkeypatch):
    # More than a page of objects, already requested (no queue yet): the zone as a running platform leaves it.
    keys = [f"us_states/nyt-{i:05d}.csv" for i in range(1100)] + ["us_states/zz.csv"]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, keys))
    requests, _, cursor = tick_until_quiet(instance, landing, None)
    assert len(requests) == len(keys)
    zone = notify()
    result, cursor = tick(instance, zone, listed_now(cursor))  # reads the s3:TestEvent only
    assert result.run_requests == [] and in_queue(sqs, zone.queue) == (0, 0)

    # It sorts before its folder's cursor (us_states/zz.csv) and the last key seen, and the sweep is put past
    # it: no listing could find it on this tick. The tick does not list at all.
    late = "us_states/nyt-01100a.csv"
    etag = put(late)
    listings = []
    monkeypatch.setattr(LandingZone, "list_after", lambda self, *args, **kw: listings.append(args) or [])
    result, cursor = tick(instance, zone, listed_now(cursor, sweep="us_states/zz.csv"))
    assert listings == []
    [request] = result.run_requests
    assert (request.tags, request.job_name) == ({KEY_TAG: late, ETAG_TAG: etag}, "ingest_us_states")
    assert (request.run_key, request.partition_key) == (f"{late}@{etag}", partition_key(late, etag))
    assert [(r.partitions_def_name, list(r.partition_keys)) for r in result.dynamic_partitions_requests] == [
        ("us_states_files", [partition_key(late, etag)])]

    # Not deleted by the tick that requested it: received, hidden, its receipt in the cursor.
    assert in_queue(sqs, zone.queue) == (0, 1)
    assert len(json.loads(cursor)["receipts"]) == 1
    # The next tick, given that cursor (the daemon recorded the runs), deletes it and requests nothing.
    result, cursor = tick(instance, zone, cursor)
    assert result.run_requests == [] and in_queue(sqs, zone.queue) == (0, 0)
    assert json.loads(cursor)["receipts"] == []


def test_a_message_whose_tick_was_lost_comes_back_and_is_requested_again(instance, notify, put, sqs):
    zone = notify(queue_visibility_timeout_seconds=1)
    _, cursor = tick(instance, zone, None)  # lists the empty zone; drops the s3:TestEvent
    cursor = listed_now(cursor)
    etag = put("us_states/2021-01-01.csv")

    # The daemon never records this tick (it crashed, the evaluation failed): the next tick is given the
    # older cursor, the receipt is lost with the tick, and nothing deleted the message.
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"landing": zone},
                                 repository_def=REPOSITORY) as context:
        lost = sensor.landing_sensor(context)
    assert requested(lost) == [("us_states/2021-01-01.csv", etag)]
    assert in_queue(sqs, zone.queue) == (0, 1)

    time.sleep(1.5)  # past the visibility timeout: the message is back
    result, cursor = tick(instance, zone, cursor)
    assert requested(result) == [("us_states/2021-01-01.csv", etag)]
    assert result.run_requests[0].run_key == lost.run_requests[0].run_key  # the daemon runs it once
    result, cursor = tick(instance, zone, cursor)
    assert result.run_requests == [] and in_queue(sqs, zone.queue) == (0, 0)


def test_a_version_already_requested_is_not_requested_again(instance, notify, put, sqs, bucket):
    zone = notify()
    key = "us_states/2021-01-01.csv"
    _, cursor = tick(instance, zone, None)
    etag = put(key)
    result, cursor = tick(instance, zone, listed_now(cursor))
    assert requested(result) == [(key, etag)]
    result, cursor = tick(instance, zone, cursor)
    assert result.run_requests == [] and in_queue(sqs, zone.queue) == (0, 0)

    # S3 delivers a notification at least once: the same one again is deleted at once, with no request.
    sqs.send_message(QueueUrl=zone.queue, MessageBody=s3_event(bucket, PREFIX + key, etag))
    result, cursor = tick(instance, zone, cursor)
    assert result.run_requests == [] and result.dynamic_partitions_requests == []
    assert in_queue(sqs, zone.queue) == (0, 0) and json.loads(cursor)["receipts"] == []

    # The listing (the reconciliation) finds the key after its folder's cursor: requested by the queue
    # already, it is not requested again.
    result, cursor = tick(instance, zone, json.dumps({**json.loads(cursor), "listed": 0}))
    assert json.loads(cursor)["folders"]["us_states/"] == key, "this tick listed the zone"
    assert result.run_requests == []

    # A new version of the key is a new request.
    second = put(key, b"date,state,fips,cases,deaths\n2021-01-01,Alabama,01,2,0\n")
    result, cursor = tick(instance, zone, cursor)
    assert requested(result) == [(key, second)]


def test_a_drop_found_by_the_listing_and_the_queue_in_one_tick_is_requested_once(instance, notify, put, sqs):
    zone = notify()
    _, cursor = tick(instance, zone, None)
    etag = put("us_counties/2021-01-01.csv")
    result, cursor = tick(instance, zone, json.dumps({**json.loads(cursor), "listed": 0}))
    assert requested(result) == [("us_counties/2021-01-01.csv", etag)]
    assert len(result.dynamic_partitions_requests[0].partition_keys) == 1
    assert in_queue(sqs, zone.queue) == (0, 1), "its message waits for the next tick"
    result, cursor = tick(instance, zone, cursor)
    assert result.run_requests == [] and in_queue(sqs, zone.queue) == (0, 0)


def test_event_keys_are_url_decoded_to_the_listings_run_request(instance, landing, notify, put):
    key = "us_states/new york+nj 2021.csv"  # S3 sends drops%2Fus_states%2Fnew+york%2Bnj+2021.csv
    zone = notify()
    _, cursor = tick(instance, zone, None)
    etag = put(key)
    from_queue, _ = tick(instance, zone, listed_now(cursor))
    with dg.instance_for_test() as other:
        from_listing, _ = tick(other, landing, None)
    [queued], [listed] = from_queue.run_requests, from_listing.run_requests
    assert queued.tags == listed.tags == {KEY_TAG: key, ETAG_TAG: etag}
    assert (queued.run_key, queued.partition_key, queued.job_name) == (
        listed.run_key, listed.partition_key, listed.job_name)


def test_test_events_and_garbage_are_deleted_and_logged(instance, notify, put, sqs, bucket, capfd):
    zone = notify()  # S3 sent an s3:TestEvent when the notification was configured
    for body in ("not json", json.dumps({"hello": "world"}), json.dumps([1, 2]),
                 json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}),
                 json.dumps({"Records": ["x"]}),
                 s3_event("another-bucket", "drops/us_states/x.csv", "abc"),
                 s3_event(bucket, "elsewhere/us_states/x.csv", "abc"),
                 s3_event(bucket, "drops/us_states/x.csv", "abc", name="ObjectRemoved:Delete")):
        sqs.send_message(QueueUrl=zone.queue, MessageBody=body)
    archived = put("_archive/us_states/a.csv/0123abcd")  # the platform's own copy: notified, never requested
    assert archived

    capfd.readouterr()
    result, cursor = tick(instance, zone, listed_now(json.dumps({})))
    assert result.run_requests == []
    assert in_queue(sqs, zone.queue) == (0, 0) and json.loads(cursor)["receipts"] == []
    logged = capfd.readouterr().err  # the sensor's log (context.log) goes to stderr
    assert "s3:TestEvent" in logged
    assert "not JSON" in logged and "not an S3 event notification" in logged
    assert "another-bucket" in logged and "outside this zone" in logged
    assert logged.count("an S3 event record without eventName, bucket or key") == 2
    assert "10 message(s), 0 new object version(s) requested; 10 deleted now, 0 on the next tick" in logged


def test_a_burst_is_read_over_several_ticks(instance, notify, put, sqs, monkeypatch):
    monkeypatch.setattr(sensor, "QUEUE_BATCHES_PER_TICK", 2)  # at most 20 messages a tick
    zone = notify()
    _, cursor = tick(instance, zone, None)
    keys = [f"us_states/b{i:02d}.csv" for i in range(35)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        etags = dict(zip(keys, pool.map(put, keys)))
    found, counts = [], []
    for _ in range(5):
        result, cursor = tick(instance, zone, listed_now(cursor))
        found += requested(result)
        counts.append(len(result.run_requests))
    assert sorted(found) == sorted(etags.items())
    assert max(counts) <= 20 and counts[-1] == 0, counts
    assert in_queue(sqs, zone.queue) == (0, 0)


def test_a_queue_that_cannot_be_read_falls_back_to_listing(instance, landing, put, s3_endpoint, capfd):
    zone = LandingZone(url=landing.url, s3=landing.s3, queue_url=f"{s3_endpoint}/123456789012/no-such-queue")
    _, cursor = tick(instance, zone, None)
    etag = put("us_states/2021-01-01.csv")
    capfd.readouterr()
    result, cursor = tick(instance, zone, listed_now(cursor))
    assert requested(result) == [("us_states/2021-01-01.csv", etag)]
    assert "Could not read the landing queue" in capfd.readouterr().err


def test_without_a_queue_nothing_changes(instance, landing, notify, put, sqs, monkeypatch, tmp_path):
    zone = notify()  # the bucket notifies a queue, but the zone is not told of it (no LANDING_QUEUE_URL)
    assert landing.queue == ""
    monkeypatch.setattr(LandingZone, "queue_client", lambda self: pytest.fail("no queue is read"))
    etag = put("us_states/2021-01-01.csv")
    result, cursor = tick(instance, landing, None)
    assert requested(result) == [("us_states/2021-01-01.csv", etag)]
    assert set(json.loads(cursor)) == {"after", "folders", "sweep"}
    assert in_queue(sqs, zone.queue) == (2, 0), "the test event and the drop's notification, untouched"

    # The interval: 10 s without a queue, 2 s with one (on an S3 zone), COVID_SENSOR_INTERVAL_SECONDS first.
    monkeypatch.delenv("COVID_SENSOR_INTERVAL_SECONDS", raising=False)
    monkeypatch.setenv("LANDING_URL", landing.url)
    assert sensor.sensor_interval_seconds() == 10
    monkeypatch.setenv("LANDING_QUEUE_URL", zone.queue)
    assert sensor.sensor_interval_seconds() == 2
    assert landing.queue == zone.queue, "LANDING_QUEUE_URL is the zone's queue unless it names its own"
    monkeypatch.setenv("COVID_SENSOR_INTERVAL_SECONDS", "7")
    assert sensor.sensor_interval_seconds() == 7
    monkeypatch.delenv("COVID_SENSOR_INTERVAL_SECONDS")
    folder = tmp_path.as_uri()
    monkeypatch.setenv("LANDING_URL", folder)  # a folder zone has no queue
    assert sensor.sensor_interval_seconds() == 10
    assert LandingZone(url=folder, s3=S3Resource()).queue == ""


def test_messages_that_request_nothing_do_not_end_the_ticks_wait(instance, notify, put, sqs, monkeypatch):
    monkeypatch.setattr(sensor, "QUEUE_WAIT_SECONDS", 4)
    zone = notify()
    _, cursor = tick(instance, zone, None)
    put("_archive/us_states/a.csv/0123abcd")  # what every run writes: it wakes the tick's long poll

    def drop_later():
        time.sleep(1.5)
        return put("us_states/2021-01-01.csv")

    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        later = pool.submit(drop_later)
        result, cursor = tick(instance, zone, listed_now(cursor))
        took = time.monotonic() - started
    assert requested(result) == [("us_states/2021-01-01.csv", later.result())]
    assert 1.5 <= took < 4, "the tick went on waiting after the archive's message, and ended with the drop's"
