"""`covid-platform stream`: its options (each defaulting to an environment variable, so a container sets them
there) and its start: broker from MQTT_URL, landing zone from LANDING_URL, health endpoint, signals."""

import argparse
import logging
import os
import re
import signal
import sys
import threading
from urllib.parse import unquote, urlparse

from dagster_aws.s3 import S3Resource

from covid_platform.datasets import DATASETS
from covid_platform.resources.landing import LandingZone
from covid_platform.stream import health
from covid_platform.stream.bridge import RECEIVE_MAXIMUM, Bridge, Broker, Settings

# matched whole (fullmatch: '$' would let a trailing line feed through)
BRIDGE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a client id every broker takes, and safe in an object key
# whole topic levels, no wildcard, not a broker's own ('$SYS/', '$share/group/'): '' or 'staging/' or 'a/b/'
TOPIC_PREFIX = re.compile(r"(?!\$)(?:[^/+#\x00\n]+/)*")


def broker_from_url(url: str) -> Broker:
    """`mqtt://[user:password@]host[:1883]` or `mqtts://…` (TLS, port 8883 by default); a user and password
    not in the URL come from MQTT_USERNAME / MQTT_PASSWORD."""
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise ValueError(f"MQTT_URL must be mqtt://host:port or mqtts://host:port, got {parsed.scheme}://…")
    tls = parsed.scheme == "mqtts"
    return Broker(
        host=parsed.hostname,
        port=parsed.port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parsed.username) if parsed.username else os.environ.get("MQTT_USERNAME"),
        password=unquote(parsed.password) if parsed.password else os.environ.get("MQTT_PASSWORD"),
    )


def add_parser(commands) -> None:
    env = os.environ.get
    run = commands.add_parser("stream", help="bridge MQTT messages into the landing zone (needs MQTT_URL)")
    run.add_argument("--bridge-id", default=env("STREAM_BRIDGE_ID", "covid-platform-stream"),
                     help="MQTT client id, kept across restarts (the broker holds its session); "
                          "env STREAM_BRIDGE_ID (default: %(default)s)")
    run.add_argument("--batch-seconds", type=float, default=float(env("STREAM_BATCH_SECONDS", "30")),
                     help="write a dataset's batch at the latest this long after its first message "
                          "(env STREAM_BATCH_SECONDS; default %(default)s)")
    run.add_argument("--batch-rows", type=int, default=int(env("STREAM_BATCH_ROWS", "10000")),
                     help="or as soon as it holds this many rows or messages "
                          "(env STREAM_BATCH_ROWS; default %(default)s)")
    run.add_argument("--session-expiry-seconds", type=int,
                     default=int(env("STREAM_SESSION_EXPIRY_SECONDS", "604800")),
                     help="how long the broker keeps the session while the bridge is away "
                          "(env STREAM_SESSION_EXPIRY_SECONDS; default %(default)s, 7 days)")
    run.add_argument("--topic-prefix", default=env("STREAM_TOPIC_PREFIX", ""),
                     help="before each dataset's declared topic filter, for a deployment's own topics on a "
                          "shared broker: 'staging/' takes staging/covid/us_states/# (env STREAM_TOPIC_PREFIX)")
    run.add_argument("--health-port", type=int, default=int(env("STREAM_HEALTH_PORT", "8081")),
                     help="port of GET /health (0: none; env STREAM_HEALTH_PORT; default %(default)s)")
    run.add_argument("--health-address", default=env("STREAM_HEALTH_ADDRESS", "0.0.0.0"))


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    if not os.environ.get("MQTT_URL"):
        sys.exit("Set MQTT_URL (mqtt://host:1883 or mqtts://host:8883) to the broker the messages arrive at.")
    if not os.environ.get("LANDING_URL"):
        sys.exit("Set LANDING_URL (s3://bucket/prefix or file:///folder): where the batches are written.")
    if not BRIDGE_ID.fullmatch(args.bridge_id):
        sys.exit(f"--bridge-id {args.bridge_id!r}: 1 to 64 letters, digits, '-' or '_'")
    if not 0 < args.batch_rows <= RECEIVE_MAXIMUM or args.batch_seconds <= 0:
        sys.exit(f"--batch-rows must be 1 to {RECEIVE_MAXIMUM:,} and --batch-seconds above 0")
    if args.session_expiry_seconds <= 0:  # the broker would forget what it holds while the bridge restarts
        sys.exit("--session-expiry-seconds must be above 0")
    if not TOPIC_PREFIX.fullmatch(args.topic_prefix):
        sys.exit(f"--topic-prefix {args.topic_prefix!r}: topic levels ending in '/', without '+', '#', a "
                 "leading '/' or '$' (e.g. staging/)")
    datasets = [dataset for dataset in DATASETS.values() if dataset.stream]
    if not datasets:
        sys.exit("No dataset declares a stream (Dataset.stream in covid_platform/datasets.py).")
    try:
        broker = broker_from_url(os.environ["MQTT_URL"])
    except ValueError as error:
        sys.exit(str(error))
    settings = Settings(args.bridge_id, args.batch_seconds, args.batch_rows, args.session_expiry_seconds,
                        args.topic_prefix)
    # S3 endpoint, region and credentials come from the standard AWS environment variables.
    bridge = Bridge(LandingZone(url=os.environ["LANDING_URL"], s3=S3Resource()), datasets, broker, settings)
    if args.health_port:
        health.serve(args.health_address, args.health_port, bridge.status)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    topics = ", ".join(f"{bridge.topic(d)} → {d.stream_folder}" for d in datasets)
    logging.getLogger("covid_platform.stream").info(
        f"bridging {topics} in {os.environ['LANDING_URL']}; batches of {args.batch_rows:,} rows or "
        f"{args.batch_seconds:g} s; health on :{args.health_port or '-'}/health")
    bridge.run(stop)
    return 0
