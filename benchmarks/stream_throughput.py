"""The stream bridge's throughput: messages per second from the broker into the landing zone.

    .venv/bin/python benchmarks/stream_throughput.py [--messages 50000] [--s3] [--batch-rows 10000]

Starts a Mosquitto with the settings README's "Streams" asks of a deployment (`max_queued_messages 0`; or
uses the broker of MQTT_URL when set) and `covid-platform stream` (its own process, as deployed) with the
landing zone in a scratch folder (or, with --s3, a bucket of moto's S3 server over HTTP), publishes `--messages` real NYT state-days (one JSON object per message, QoS 1, as fast as
`mosquitto_pub -l` sends them; past the data's rows the state names get a suffix, so every key is distinct),
and times from the first message published to the last one written, as the bridge's /health counts them.
Prints the rate, the core count and the load average. The bridge's session is removed at the end.

On Mosquitto's default settings (this machine's broker on 1883) a publisher faster than the bridge loses
messages: Mosquitto drops what is bound for a client once `max_queued_messages` (1,000) packets wait for it; the
benchmark then says how many the bridge did not receive."""

import argparse
import csv
import getpass
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from common import REPO, free_port, moto_s3

TOPIC = "covid/us_states/benchmark"
DATA = REPO / "covid_platform_tests" / "data" / "nyt" / "us-states.csv.gz"


def messages(count: int) -> bytes:
    """`count` lines of JSON, one state-day each."""
    rows = list(csv.DictReader(io.StringIO(gzip.decompress(DATA.read_bytes()).decode())))
    lines = []
    for i in range(count):
        row = rows[i % len(rows)]
        suffix = f" #{i // len(rows)}" if i >= len(rows) else ""
        lines.append(json.dumps({"date": row["date"], "state": row["state"] + suffix, "fips": row["fips"],
                                 "cases": int(row["cases"]), "deaths": int(row["deaths"]) if row["deaths"] else None}))
    return ("\n".join(lines) + "\n").encode()


def health(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.load(response)
    except OSError:
        return {}


def wait(url: str, bridge: subprocess.Popen, condition, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if bridge.poll() is not None:
            sys.exit(f"the bridge exited with {bridge.returncode} while waiting for {what}")
        status = health(url)
        if status and condition(status):
            return status
        time.sleep(0.02)
    sys.exit(f"timed out after {timeout:.0f} s waiting for {what}: {health(url)}")


def wait_written(url: str, bridge: subprocess.Popen, count: int) -> dict:
    """The bridge's counters once `count` messages are written, or once nothing has come for 10 s (the
    broker dropped some)."""
    last, quiet_since = -1, time.monotonic()
    while True:
        status = wait(url, bridge, lambda s: True, 60, "the health endpoint")
        if status["messages_batched"] >= count and not status["pending"]:
            return status
        if status["messages_batched"] + status["pending"] != last:
            last, quiet_since = status["messages_batched"] + status["pending"], time.monotonic()
        elif time.monotonic() - quiet_since > 10 and not status["pending"]:
            return status
        time.sleep(0.02)


def forget_session(broker, client_id: str) -> None:
    """Connect with a clean start and a session expiry of 0: the broker drops the bridge's session."""
    subprocess.run(["mosquitto_sub", "-h", broker.hostname, "-p", str(broker.port or 1883), "-V", "5",
                    "-i", client_id, "-t", TOPIC, "-x", "0", "-E"], check=True, timeout=30)


@contextmanager
def deployment_broker():
    """Mosquitto on a free port, configured as README's "Streams" asks; yields its URL."""
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        config = Path(folder) / "mosquitto.conf"
        config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
                          f"persistence true\npersistence_location {folder}/\nuser {getpass.getuser()}\n")
        broker = subprocess.Popen(["mosquitto", "-c", str(config)], stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        try:
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            broker.terminate()
            broker.wait(10)


def run(args, landing_url: str, env: dict) -> None:
    if os.environ.get("MQTT_URL"):
        measure(args, landing_url, env, os.environ["MQTT_URL"])
        return
    with deployment_broker() as url:
        measure(args, landing_url, env, url)


def measure(args, landing_url: str, env: dict, mqtt_url: str) -> None:
    broker = urlparse(mqtt_url)
    bridge_id = f"bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    url = f"http://127.0.0.1:{port}/health"
    payload = messages(args.messages)
    bridge = subprocess.Popen(
        [sys.executable, "-m", "covid_platform.cli", "stream", "--bridge-id", bridge_id, "--health-port", str(port),
         "--health-address", "127.0.0.1", "--batch-rows", str(args.batch_rows), "--batch-seconds", "1"],
        cwd=REPO, env={**env, "LANDING_URL": landing_url, "MQTT_URL": broker.geturl()},
        stdout=subprocess.DEVNULL if not args.verbose else None, stderr=subprocess.STDOUT,
    )
    try:
        wait(url, bridge, lambda s: s["connected"], 60, "the bridge to connect")
        load_before = os.getloadavg()
        started = time.monotonic()
        subprocess.run(["mosquitto_pub", "-h", broker.hostname, "-p", str(broker.port or 1883), "-V", "5", "-q", "1",
                        "-M", "1000", "-t", TOPIC, "-l"], input=payload, check=True, timeout=600)
        published = time.monotonic() - started
        status = wait_written(url, bridge, args.messages)
        elapsed = time.monotonic() - started
    finally:
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(60)
        forget_session(broker, bridge_id)
    lost = args.messages - status["messages_batched"]
    if lost:
        print(f"LOST: the bridge received {status['messages_batched']:,} of {args.messages:,} messages "
              f"(the broker at {mqtt_url} dropped {lost:,}); the rate below is not a valid measurement")
    print(f"{args.messages:,} messages via {mqtt_url} into {landing_url.split(':')[0]} in {elapsed:.2f} s: "
          f"{args.messages / elapsed:,.0f} messages/s (publishing alone took {published:.2f} s); "
          f"{status['objects_written']} objects of at most {args.batch_rows:,} rows, {status['rows_written']:,} rows")
    print(f"cores: {os.cpu_count()}; load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} "
          "(1 min; the publisher, the broker and the bridge share these cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--s3", action="store_true", help="write to moto's S3 server instead of a folder")
    parser.add_argument("--verbose", action="store_true", help="show the bridge's log")
    args = parser.parse_args()
    if args.s3:
        with moto_s3() as endpoint:
            import boto3

            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
            run(args, f"s3://{bucket}/drops", {**os.environ, "AWS_ENDPOINT_URL": endpoint})
    else:
        with tempfile.TemporaryDirectory() as folder:
            run(args, Path(folder).as_uri(), dict(os.environ))


if __name__ == "__main__":
    main()
