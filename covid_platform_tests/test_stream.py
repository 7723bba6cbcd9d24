"""The MQTT stream bridge against real services: Mosquitto (this machine's on 127.0.0.1:1883, and one started
by a test with the settings a deployment needs), moto's S3 over HTTP, PostgreSQL. The bridge runs as its own
process (`python -m covid_platform.cli stream`), as in production; its objects are then ingested as the
sensor's runs would ingest them, and the clean table is compared with pandas' computation of the slice."""

import base64
import csv
import getpass
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import paho.mqtt.client as mqtt
import pandas as pd
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from covid_platform.datasets import US_STATES, Dataset, DatasetError
from covid_platform.resources.notifier import Notifier
from covid_platform.sensors import alerts
from covid_platform.sensors.alerts import REFUSED_LOOKBACK, stream_refusal_alert
from covid_platform.stream.batch import Batch, Held, object_name
from covid_platform.stream.messages import Unloadable, parse
from covid_platform_tests.conftest import _free_port
from covid_platform_tests.helpers import REPO, ingest, nyt_states_slice
from covid_platform_tests.oracles import STATE_COLUMNS, with_differences, with_rolling_7d

SHARED_BROKER = ("127.0.0.1", 1883)  # this machine's Mosquitto, on its default settings
PREFIX = "drops/"
TOPIC = "covid/us_states/test"


# --- what a message may hold (no broker needed) ------------------------------------------------------


def test_a_stream_declaration_is_validated_naming_dataset_and_field():
    base = dict(name="x_stream", table="x_daily", region=("state",), counts=("cases",))
    assert Dataset(**base, stream="covid/+/x/#").stream_folder == "x_stream/stream/"
    for bad, problem in (
        ("covid/#/x", "'#' must be a whole level, the last one"),
        ("covid/x+", "'+' must be"),
        ("", "1 to 65,535 bytes"),
    ):
        with pytest.raises(DatasetError, match=f"dataset 'x_stream', field 'stream': .*{re.escape(problem)}"):
            Dataset(**base, stream=bad)
    with pytest.raises(DatasetError, match="field 'stream': each message's rows carry their own date"):
        Dataset(**base, stream="covid/x", date_in_file_name="%m-%d-%Y")


def test_a_message_becomes_rows_in_the_files_columns_or_a_reason():
    assert US_STATES.source_columns == ("state", "fips", "date", "cases", "deaths")
    assert parse(US_STATES, b'{"Date": "2020-12-01", "STATE": "Ohio", "cases": 12, "deaths": null}') == [
        ("Ohio", "", "2020-12-01", "12", "")]
    assert parse(US_STATES, b'[{"date": "2020-12-01", "state": "Ohio", "fips": "39", "cases": 1.0, "x": 1},'
                            b' {"date": "2020-12-02", "state": "Ohio", "cases": "2", "deaths": true}]') == [
        ("Ohio", "39", "2020-12-01", "1.0", ""), ("Ohio", "", "2020-12-02", "2", "true")]
    # UTF-8 with a byte order mark, as a CSV file may have
    assert parse(US_STATES, b'\xef\xbb\xbf{"date": "2020-12-01", "state": "Ohio"}') == [("Ohio", "", "2020-12-01", "", "")]
    # a key no column reads may repeat, whatever its case
    assert parse(US_STATES, b'{"date": "2020-12-01", "state": "Ohio", "x": 1, "X": 2, "x": 3}') == [
        ("Ohio", "", "2020-12-01", "", "")]
    for payload, reason in (
        (b"cases=12", "not JSON: Expecting value"),
        (b"[]", "an empty JSON array: no rows"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        ('{"date": "2020-12-01", "state": "Ohio"}'.encode("utf-16"), "not UTF-8 text"),
        (b'{"date": "2020-12-01", "cases": 12}', "no value for key column 'state'"),
        (b'{"date": "2020-12-01", "state": " ", "cases": 12}', "no value for key column 'state'"),
        (b'[{"date": "2020-12-01", "state": "Ohio"}, 7]', "element 1: a JSON int, not an object with the"),
        (b'{"date": "2020-12-01", "state": "Oh\\u0000io"}', "column 'state': a NUL character"),
        (json.dumps({"date": "2020-12-01", "state": "x" * 10_001}).encode(), "10,001 characters"),
        (b'{"date": "2020-12-01", "state": "\\ud800"}', "lone surrogate"),
        (b'{"date": "2020-12-01", "state": "Ohio", "cases": 1, "Cases": 2}',
         "column 'cases': two keys name it, whatever their case ('cases' and 'Cases'); keep one"),
        (b'{"date": "2020-12-01", "state": "Ohio", "cases": 1, "cases": 2}',
         "column 'cases': two keys name it, whatever their case ('cases' and 'cases'); keep one"),
    ):
        with pytest.raises(Unloadable, match=re.escape(reason)):
            parse(US_STATES, payload)


# --- brokers, publisher, bridge ----------------------------------------------------------------------


def publish(broker, payloads: list[bytes | str], topic: str = TOPIC, retain: bool = False) -> None:
    """QoS 1, every message acknowledged by the broker before this returns; `retain`: the broker keeps the last
    one as the topic's retained message (an empty one clears it)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(200)
    client.connect(*broker)
    client.loop_start()
    try:
        for info in [client.publish(topic, payload, qos=1, retain=retain) for payload in payloads]:
            info.wait_for_publish(60)
    finally:
        client.disconnect()
        client.loop_stop()


def forget_session(broker, client_id: str) -> None:
    """End the bridge's persistent session, so that the shared broker stops queueing messages for it."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=MQTTProtocolVersion.MQTTv5)
    expiry = Properties(PacketTypes.CONNECT)
    expiry.SessionExpiryInterval = 0
    client.connect(*broker, clean_start=True, properties=expiry)
    client.loop_start()
    deadline = time.monotonic() + 10
    while not client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.05)
    client.disconnect()
    client.loop_stop()


@pytest.fixture(scope="session")
def shared_broker():
    try:
        publish(SHARED_BROKER, [])
    except OSError as error:
        pytest.fail(f"no MQTT broker on {SHARED_BROKER}: {error}; "
                    "start it: mosquitto -d -c /etc/mosquitto/mosquitto.conf")
    return SHARED_BROKER


def start_mosquitto(folder: Path, port: int | None = None) -> tuple[subprocess.Popen, tuple[str, int]]:
    """A second Mosquitto with the settings README's "Streams" asks of a deployment: no cap on the messages
    queued for a disconnected bridge, its sessions and messages on disk (in `folder`)."""
    port = port or _free_port()
    (folder / "mosquitto.conf").write_text("\n".join([
        f"listener {port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 0", "persistence true",
        f"persistence_location {folder}/", f"user {getpass.getuser()}", "",  # as root it would switch user
    ]))
    process = subprocess.Popen(["mosquitto", "-c", str(folder / "mosquitto.conf")], stderr=subprocess.DEVNULL)
    broker = ("127.0.0.1", port)
    deadline = time.monotonic() + 10
    while True:
        try:
            publish(broker, [])
            return process, broker
        except OSError:
            assert time.monotonic() < deadline, "the test's mosquitto did not start"
            time.sleep(0.1)


@pytest.fixture
def deployment_broker(tmp_path):
    process, broker = start_mosquitto(tmp_path)
    yield broker
    process.terminate()
    process.wait(10)


class BridgeProcess:
    """`covid-platform stream` in its own process, on the test bucket and a broker."""

    def __init__(self, broker, s3_endpoint: str, bucket: str, log: Path, *flags: str, bridge_id=None):
        self.broker, self.log = broker, log
        self.id = bridge_id or f"test-{uuid.uuid4().hex[:10]}"
        port = _free_port()
        self.health = f"http://127.0.0.1:{port}/health"
        env = {**os.environ, "LANDING_URL": f"s3://{bucket}/{PREFIX.rstrip('/')}",
               "AWS_ENDPOINT_URL": s3_endpoint, "MQTT_URL": f"mqtt://{broker[0]}:{broker[1]}"}
        with open(log, "a") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "covid_platform.cli", "stream", "--bridge-id", self.id,
                 "--health-port", str(port), "--health-address", "127.0.0.1", *flags],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        self.wait_for(lambda s: s["connected"], "the bridge to connect")

    def status(self) -> dict | None:
        try:
            with urllib.request.urlopen(self.health, timeout=2) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:  # 503 while not connected: the same JSON
            return json.load(error)
        except OSError:
            return None

    def wait_for(self, condition, what: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the bridge exited:\n{self.log.read_text()}"
            status = self.status()
            if status and condition(status):
                return status
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}: {self.status()}\n{self.log.read_text()}")

    def kill(self, sig=signal.SIGKILL) -> int:
        self.process.send_signal(sig)
        return self.process.wait(60)


@pytest.fixture
def bridges(s3_endpoint, bucket, tmp_path):
    """Start bridges with `bridges(broker, *flags, bridge_id=…)`; each is stopped, its session forgotten."""
    started = []

    def start(broker, *flags, bridge_id=None) -> BridgeProcess:
        bridge = BridgeProcess(broker, s3_endpoint, bucket, tmp_path / "bridge.log", *flags,
                               bridge_id=bridge_id)
        started.append(bridge)
        return bridge

    yield start
    for bridge in started:
        if bridge.process.poll() is None:
            bridge.kill(signal.SIGTERM)
    for broker, client_id in {(b.broker, b.id) for b in started}:
        try:
            forget_session(broker, client_id)
        except OSError:
            pass  # a test's own broker, stopped: its sessions go with its folder


# --- slices as messages, objects, tables ---------------------------------------------------------------


def slice_rows(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def as_message(row: dict, upper: bool = False) -> dict:
    """A state-day as a publisher would send it: counts as numbers, an unreported count as null."""
    message = {
        "date": row["date"], "state": row["state"], "fips": row["fips"],
        "cases": int(row["cases"]), "deaths": int(row["deaths"]) if row["deaths"] else None,
    }
    return {name.upper(): value for name, value in message.items()} if upper else message


def payloads(rows: list[dict]) -> list[bytes]:
    """One state-day per message, except each date's first five states: one array (names in upper case)."""
    by_date: dict[str, list[dict]] = {}
    for row in rows:
        by_date.setdefault(row["date"], []).append(row)
    out = []
    for day in by_date.values():
        out.append(json.dumps([as_message(row, upper=True) for row in day[:5]]).encode())
        out += [json.dumps(as_message(row)).encode() for row in day[5:]]
    return out


def stream_objects(s3_client, bucket, folder: str = "us_states/stream/") -> list[str]:
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX + folder)
    return [item["Key"][len(PREFIX):] for page in pages for item in page.get("Contents", [])]


def read_object(s3_client, bucket, key: str) -> bytes:
    return s3_client.get_object(Bucket=bucket, Key=PREFIX + key)["Body"].read()


def ingest_all(landing, resources, keys: list[str]) -> None:
    with dg.instance_for_test() as instance:
        for key in keys:
            assert ingest(landing, resources, key, instance).success, key


def expected_state_daily(data: bytes) -> pd.DataFrame:
    frame = pd.read_csv(io.BytesIO(data), parse_dates=["date"], dtype={"fips": str})
    frame = with_differences(frame, {"cases": "new_cases", "deaths": "new_deaths"})
    return with_rolling_7d(frame, ["new_cases", "new_deaths"])[STATE_COLUMNS]


def state_daily(query) -> pd.DataFrame:
    frame = pd.DataFrame(
        query(f'SELECT {", ".join(STATE_COLUMNS)} FROM covid.state_daily ORDER BY state COLLATE "C", date'),
        columns=STATE_COLUMNS)
    frame["date"] = pd.to_datetime(frame["date"])
    return frame.astype({c: "float64" for c in STATE_COLUMNS[3:]})


def assert_state_daily(query, data: bytes) -> None:
    expected = expected_state_daily(data).astype({c: "float64" for c in STATE_COLUMNS[3:]})
    pd.testing.assert_frame_equal(state_daily(query), expected, check_dtype=False, check_exact=False,
                                  rtol=1e-9)


# --- the bridge --------------------------------------------------------------------------------------


def test_a_published_slice_becomes_the_clean_table(
    shared_broker, bridges, landing, resources, query, s3_client, bucket
):
    data = nyt_states_slice("2020-12-01", "2020-12-14")
    messages = payloads(slice_rows(data))
    bridge = bridges(shared_broker, "--batch-rows", "200", "--batch-seconds", "1")

    publish(shared_broker, messages)
    status = bridge.wait_for(lambda s: s["messages_batched"] == len(messages) and not s["pending"],
                             "every message written")

    assert status["connected"] and status["quarantined"] == 0 and status["last_message_at"]
    assert status["rows_written"] == len(slice_rows(data)) == 55 * 14
    keys = stream_objects(s3_client, bucket)
    assert len(keys) >= 4 and keys == sorted(keys), "batches of at most 200 rows, named in the order written"
    assert all(len(read_object(s3_client, bucket, key).splitlines()) <= 201 for key in keys)
    ingest_all(landing, resources, keys)
    assert query("SELECT count(*), min(status), max(status) FROM covid.ingested_files") == [
        (len(keys), "loaded", "loaded")]
    assert_state_daily(query, data)


def test_a_bridge_killed_mid_batch_and_restarted_loses_nothing(
    deployment_broker, bridges, landing, resources, query, s3_client, bucket
):
    data = nyt_states_slice("2020-10-01", "2020-12-06")
    rows = slice_rows(data)
    messages = [json.dumps(as_message(row)).encode() for row in rows]
    first, second = messages[:1200], messages[1200:]
    bridge = bridges(deployment_broker, "--batch-rows", "500", "--batch-seconds", "600")

    publish(deployment_broker, first)
    # Two batches written and acknowledged, 200 messages held in the third: SIGKILL, nothing is flushed.
    bridge.wait_for(lambda s: s["messages_batched"] == 1000 and s["pending"] == 200,
                    "two batches and a partial one")
    assert bridge.kill() == -signal.SIGKILL
    # While no bridge runs: queued by the broker for the session, more than Mosquitto's default of 1,000.
    publish(deployment_broker, second)

    again = bridges(deployment_broker, "--batch-rows", "500", "--batch-seconds", "1", bridge_id=bridge.id)
    again.wait_for(lambda s: s["messages_batched"] >= len(messages) - 1000 and not s["pending"],
                   "the rest written")
    time.sleep(1.5)  # anything more (there should be nothing) would have been written by now
    assert again.status()["messages_batched"] == len(messages) - 1000

    keys = stream_objects(s3_client, bucket)
    written = [row for key in keys
               for row in csv.DictReader(io.StringIO(read_object(s3_client, bucket, key).decode()))]
    published = {(row["state"], row["date"]) for row in rows}
    counted = pd.Series([(row["state"], row["date"]) for row in written]).value_counts()
    assert set(counted.index) == published, "every message published is in an object"
    assert len(written) == len(messages) and counted.max() == 1, "each in exactly one (none written twice)"
    print(f"kill and restart: {len(messages)} published, {len(written)} rows in {len(keys)} objects")

    ingest_all(landing, resources, keys)
    assert query("SELECT count(*) FROM covid.state_daily") == [(len(rows),)]
    assert_state_daily(query, data)


def refusal_alerts(landing, cursor: str | None = None) -> str:
    """One tick of the `stream_refusal_alert` sensor; returns its cursor."""
    with dg.build_sensor_context(cursor=cursor, resources={"landing": landing, "notifier": Notifier()}) as context:
        stream_refusal_alert(context)
        return context.cursor


def test_malformed_messages_are_quarantined_with_reasons_and_the_rest_loads(
    shared_broker, bridges, landing, resources, query, s3_client, bucket, webhook
):
    data = nyt_states_slice("2020-12-01", "2020-12-03")
    good = payloads(slice_rows(data))
    bad = {
        b"not json at all": "not JSON",
        b'{"date": "2020-12-02", "cases": 5}': "no value for key column 'state'",
        b'[{"date": "2020-12-02", "state": "Ohio", "cases": 1}, "Ohio"]': "element 1: a JSON str",
        b"\xff\xfe\x00": "not UTF-8 text",
        b'{"state": "Ohio", "date": null, "cases": 3}': "no value for key column 'date'",
    }
    mixed = list(good)
    for i, payload in enumerate(bad):
        mixed.insert(7 * i + 3, payload)
    bridge = bridges(shared_broker, "--batch-rows", "100", "--batch-seconds", "1")

    publish(shared_broker, mixed)
    status = bridge.wait_for(
        lambda s: s["messages_batched"] + s["quarantined"] == len(mixed) and not s["pending"], "all written")
    assert (status["messages_batched"], status["quarantined"]) == (len(good), len(bad))

    objects = stream_objects(s3_client, bucket, "_quarantine/stream/us_states/")
    lines = [line for key in objects for line in read_object(s3_client, bucket, key).splitlines()]
    quarantined = [json.loads(line) for line in lines]
    assert len(quarantined) == len(bad) and {q["topic"] for q in quarantined} == {TOPIC}
    for line in quarantined:
        payload = line["payload"].encode() if "payload" in line else base64.b64decode(line["payload_base64"])
        assert bad[payload] in line["reason"], line
    ingest_all(landing, resources, stream_objects(s3_client, bucket))
    assert_state_daily(query, data)

    # one alert for the objects of refused messages: how many, and the commonest reasons
    cursor = refusal_alerts(landing)
    reasons = Counter(json.loads(line)["reason"] for key in objects
                      for line in read_object(s3_client, bucket, key).splitlines())
    commonest = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    shown = "; ".join(f"{count} × {reason}" for reason, count in commonest[:3])
    where = objects[0] if len(objects) == 1 else f"{len(objects)} objects, {objects[0]} … {objects[-1]}"
    assert [body["text"] for body in webhook] == [
        f"*Stream messages refused: us_states*\ndataset: us_states\nkey: {where}\n"
        f"reason: {len(bad)} message(s) refused: {shown}; and {len(commonest) - 3} other reason(s)"]
    refusal_alerts(landing, cursor)
    assert len(webhook) == 1


def put_refused(landing, folder: str, when: datetime, bridge_id: str, reasons: list[str]) -> str:
    """An object of refused messages as the bridge writes it."""
    batch = Batch(folder, US_STATES)
    for reason in reasons:
        batch.quarantine(TOPIC, b"{}", reason, Held(1, 1, 0))
    key = f"_quarantine/stream/{folder}/{object_name(when, bridge_id, 1)}.jsonl"
    landing.put(key, io.BytesIO(batch.quarantine_body()))
    return key


def test_refused_messages_are_alerted_on_once_even_when_their_object_is_named_before_one_seen(
    landing, webhook
):
    """A second bridge, or one retrying a failed write, may put an object whose name sorts before one the
    sensor has seen: it is alerted on if its name is within the lookback; at the first tick, older names
    are not (a deployment's past refusals are not alerted on again)."""
    now = datetime.now(timezone.utc)
    put_refused(landing, "us_states", now - REFUSED_LOOKBACK - timedelta(minutes=5), "old", ["before the sensor"])
    first = put_refused(landing, "us_states", now, "a", ["not JSON", "no value for key column 'date'", "not JSON"])
    cursor = refusal_alerts(landing)
    assert [body["text"].splitlines()[2:] for body in webhook] == [
        [f"key: {first}", "reason: 3 message(s) refused: 2 × not JSON; 1 × no value for key column 'date'"]]

    late = put_refused(landing, "us_states", now - timedelta(minutes=20), "b", ["element 1: a JSON str"])
    cursor = refusal_alerts(landing, cursor)
    cursor = refusal_alerts(landing, cursor)
    assert [body["text"].splitlines()[2] for body in webhook] == [f"key: {first}", f"key: {late}"]


def test_refusals_are_summed_up_per_folder_a_few_objects_a_tick(landing, webhook, monkeypatch):
    """Each folder under `_quarantine/stream/` (a dataset this platform does not declare too), one alert a
    tick, at most REFUSED_PER_TICK objects read: the others at the next ticks, none twice."""
    monkeypatch.setattr(alerts, "REFUSED_PER_TICK", 2)
    now = datetime.now(timezone.utc)
    keys = [put_refused(landing, "us_states", now - timedelta(minutes=n), f"b{n}", [f"reason {n}"])
            for n in (5, 4, 3, 2, 1)]
    other = put_refused(landing, "not_declared", now, "c", ["not JSON"])
    cursor = None
    for _ in range(4):
        cursor = refusal_alerts(landing, cursor)
    texts = [body["text"].splitlines() for body in webhook]
    assert [lines[0] for lines in texts] == ["*Stream messages refused: not_declared*"] + [
        "*Stream messages refused: us_states*"] * 3
    assert texts[0][2:] == [f"key: {other}", "reason: 1 message(s) refused: 1 × not JSON"]
    assert [lines[2] for lines in texts[1:]] == [
        f"key: 2 objects, {keys[0]} … {keys[1]}", f"key: 2 objects, {keys[2]} … {keys[3]}", f"key: {keys[4]}"]
    assert [lines[3].endswith("left for the next alert") for lines in texts[1:]] == [True, True, False]


def test_a_bad_value_in_a_small_batch_is_set_aside_and_the_batchs_good_messages_load(
    shared_broker, bridges, landing, resources, query, s3_client, bucket
):
    # a few messages in a batch, one a bad row (a day that does not exist): far more than the 1% a file may
    # have, yet each message is its own, so the others load
    data = nyt_states_slice("2020-12-01", "2020-12-01", {"Ohio", "Texas", "Vermont"})
    rows = slice_rows(data)
    bad = dict(rows[0], date="2020-12-32")
    bridge = bridges(shared_broker, "--batch-rows", "100", "--batch-seconds", "1")
    publish(shared_broker, [json.dumps(as_message(row)).encode() for row in (*rows, bad)])
    bridge.wait_for(lambda s: s["messages_batched"] == 4 and not s["pending"], "all written")
    (key,) = stream_objects(s3_client, bucket)
    ingest_all(landing, resources, [key])
    assert_state_daily(query, data)
    ((line, reason),) = query("SELECT line, reason FROM covid.rejected_rows")
    assert "2020-12-32" in reason, reason
    assert query("SELECT status FROM covid.ingested_files") == [("loaded",)]


def test_health_says_when_the_broker_is_gone(tmp_path, bridges):
    mosquitto, broker = start_mosquitto(tmp_path)
    bridge = bridges(broker, "--batch-seconds", "1")
    with urllib.request.urlopen(bridge.health, timeout=2) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "application/json"
        status = json.load(response)
    assert status == {"bridge_id": bridge.id, "connected": True, "last_message_at": None,
                      "messages_batched": 0, "rows_written": 0, "objects_written": 0, "quarantined": 0,
                      "pending": 0}
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(bridge.health.replace("/health", "/other"), timeout=2)

    mosquitto.terminate()
    mosquitto.wait(10)
    status = bridge.wait_for(lambda s: not s["connected"], "the bridge to see the broker gone")
    with pytest.raises(urllib.error.HTTPError, match="503"):
        urllib.request.urlopen(bridge.health, timeout=2)
    mosquitto, _ = start_mosquitto(tmp_path, broker[1])  # same port, same session on disk
    try:
        bridge.wait_for(lambda s: s["connected"], "the bridge to reconnect", timeout=90)
    finally:
        mosquitto.terminate()
        mosquitto.wait(10)


def test_a_key_sent_twice_in_a_batch_keeps_the_later_message_and_a_redelivery_changes_nothing(
    shared_broker, bridges, landing, resources, query, s3_client, bucket
):
    data = nyt_states_slice("2020-12-01", "2020-12-03")
    rows = slice_rows(data)
    messages = [json.dumps(as_message(row)).encode() for row in rows]
    ohio = next(row for row in rows if row["state"] == "Ohio" and row["date"] == "2020-12-02")
    # its state in capitals: the same key (covid.regions knows the name whatever its case)
    wrong = json.dumps({**as_message(ohio), "state": "OHIO", "cases": int(ohio["cases"]) + 1000}).encode()
    bridge = bridges(shared_broker, "--batch-seconds", "1")

    publish(shared_broker, [wrong, *messages])  # the wrong value, then the right one, in one batch
    bridge.wait_for(lambda s: s["messages_batched"] == len(messages) + 1 and not s["pending"],
                    "the first batch")
    publish(shared_broker, messages)  # everything again, as a redelivery would bring it
    status = bridge.wait_for(lambda s: s["messages_batched"] == 2 * len(messages) + 1 and not s["pending"],
                             "the second batch")

    assert status["rows_written"] == 2 * len(rows)
    keys = stream_objects(s3_client, bucket)
    assert len(keys) == 2
    log = bridge.log.read_text()  # a line per batch
    first, second = (f"us_states: wrote {key}: {len(rows)} row(s) from " for key in keys)
    assert f"{first}{len(messages) + 1} message(s) (1 replaced by a later message's)" in log
    assert f"{second}{len(messages)} message(s), 0 quarantined" in log
    ingest_all(landing, resources, keys)
    assert query("SELECT count(*) FROM covid.rejected_rows") == [(0,)], "no conflicting rows within a batch"
    assert_state_daily(query, data)


def test_a_retained_message_is_taken_once_not_again_at_each_reconnect(shared_broker, bridges):
    """A publisher's retained message (the broker sends it to every new subscription) is taken when it is
    published; at the bridge's restart it is not sent again, where it would win over the correction published
    after it. Nor does a retained message published before the bridge subscribed come in."""
    topic = f"covid/us_states/retained-{uuid.uuid4().hex[:8]}"
    old, correction, marker = (json.dumps({"date": "2021-03-01", "state": state, "fips": "39", "cases": cases}).encode()
                               for state, cases in (("Ohio", 100), ("Ohio", 101), ("Iowa", 5)))
    publish(shared_broker, [old], f"{topic}/before", retain=True)
    try:
        bridge = bridges(shared_broker, "--batch-seconds", "1")
        publish(shared_broker, [old], topic, retain=True)
        publish(shared_broker, [correction], topic)
        bridge.wait_for(lambda s: s["messages_batched"] == 2 and not s["pending"], "both messages written")
        bridge.kill()
        again = bridges(shared_broker, "--batch-seconds", "1", bridge_id=bridge.id)
        publish(shared_broker, [marker], topic)
        status = again.wait_for(lambda s: s["objects_written"] and not s["pending"], "the marker written")
        assert status["messages_batched"] == 1, "the retained message came in again"
    finally:
        for retained in (topic, f"{topic}/before"):
            publish(shared_broker, [b""], retained, retain=True)


def test_a_topic_prefix_keeps_a_deployment_to_its_own_topics(shared_broker, bridges, s3_client, bucket):
    """Two deployments on one broker: STREAM_TOPIC_PREFIX puts this bridge on `<prefix>covid/us_states/#`; a
    message on the declared topic itself (another deployment's) never comes in. A prefix with a wildcard or
    without its closing '/' is refused before connecting, naming the option."""
    prefix = f"trial-{uuid.uuid4().hex[:8]}/"
    row = {"date": "2021-03-01", "state": "Ohio", "fips": "39", "cases": 100}
    bridge = bridges(shared_broker, "--batch-seconds", "1", "--topic-prefix", prefix)
    publish(shared_broker, [json.dumps({**row, "cases": 1}).encode()], TOPIC)
    publish(shared_broker, [json.dumps(row).encode()], prefix + TOPIC)
    status = bridge.wait_for(lambda s: s["objects_written"] and not s["pending"], "the prefixed message written")
    assert status["messages_batched"] == 1
    (key,) = stream_objects(s3_client, bucket)
    assert [row["cases"] for row in slice_rows(read_object(s3_client, bucket, key))] == ["100"]
    assert prefix + "covid/us_states/#" in bridge.log.read_text()
    for bad in ("x/#/", "staging", "/staging/", "$share/group/", "staging/\n"):
        done = subprocess.run([sys.executable, "-m", "covid_platform.cli", "stream", "--topic-prefix", bad],
                              cwd=REPO, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "MQTT_URL": "mqtt://127.0.0.1:1", "LANDING_URL": "file:///x"})
        assert done.returncode != 0 and "--topic-prefix" in done.stderr, (bad, done.stderr)


def test_messages_held_for_a_stopped_bridge_survive_a_broker_restart(tmp_path, bridges, s3_client, bucket):
    mosquitto, broker = start_mosquitto(tmp_path)
    try:
        bridge = bridges(broker, "--batch-seconds", "1")  # its first start opens the session
        assert bridge.kill(signal.SIGTERM) == 0
        rows = slice_rows(nyt_states_slice("2020-11-01", "2020-11-30"))
        # 1,650 messages: past the 1,000 Mosquitto keeps by default
        publish(broker, [json.dumps(as_message(row)).encode() for row in rows])
        mosquitto.terminate()  # it saves sessions and queued messages to its folder
        mosquitto.wait(10)
        mosquitto, _ = start_mosquitto(tmp_path, broker[1])

        again = bridges(broker, "--batch-seconds", "1", bridge_id=bridge.id)
        again.wait_for(lambda s: s["messages_batched"] == len(rows) and not s["pending"], "all written")
        written = [line for key in stream_objects(s3_client, bucket)
                   for line in read_object(s3_client, bucket, key).splitlines()[1:]]
        assert len(written) == len(rows) == 1650
    finally:
        mosquitto.terminate()
        mosquitto.wait(10)
