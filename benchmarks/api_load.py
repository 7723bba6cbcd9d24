"""The read API under load: one state's full series, requested by 50 concurrent clients on loopback.

    .venv/bin/python benchmarks/api_load.py [--requests 2000] [--clients 50] [--state Florida] [--workers 1]

Loads the NYT slice the tests ship (covid_platform_tests/data/nyt/us-states.csv.gz: 15,022 rows, every state
from 2020-06-01 to 2021-02-28) through the platform into a scratch database (benchmarks/common.py), starts
`covid-platform api` on it as its own process, then sends a fixed number of
`GET /v1/tables/state_daily?state=<state>&limit=10000` (the whole series in one page) from `--clients`
keep-alive connections at once, each sending its next request as soon as its answer is in. Prints the core
count, the load average, the throughput and p50 / p95 / max of the latency seen by the clients (goal: p95
under 100 ms). PostgreSQL: BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
"""

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import REPO, free_port, scratch_database


def load(url: str, landing_dir: Path) -> int:
    """The slice through the platform's raw → clean → summaries, as the sensor's run would; its row count."""
    import dagster as dg
    from dagster_aws.s3 import S3Resource

    from covid_platform.resources.http_source import HttpSources
    from covid_platform.resources.landing import LandingZone
    from covid_platform.resources.notifier import Notifier
    from covid_platform.resources.warehouse import Warehouse
    from covid_platform_tests.helpers import NYT_STATES, data_file, drop, ingest

    landing = LandingZone(url=landing_dir.as_uri(), s3=S3Resource())
    resources = {"landing": landing, "warehouse": Warehouse(database_url=url), "notifier": Notifier(),
                 "http": HttpSources()}
    with dg.instance_for_test() as instance:
        key = drop(landing, "us_states/us-states.csv", data_file(NYT_STATES))
        if not ingest(landing, resources, key, instance).success:
            sys.exit("the slice did not load")
    with Warehouse(database_url=url).connect_read() as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM covid.state_daily")
        return cur.fetchone()[0]


async def clients(port: int, path: str, requests: int, concurrency: int) -> tuple[list[float], int, bytes]:
    """Latencies (s) of `requests` requests from `concurrency` keep-alive connections; the answers that were
    not 200; one answer's body. A bare HTTP/1.1 client on asyncio streams: the figures are the server's, not
    a client library's (httpx spends more CPU per request than the server does, on the same two cores)."""
    latencies, errors, body = [], 0, b""
    remaining = iter(range(requests))
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()

    async def one_client():
        nonlocal errors, body
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in remaining:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            errors += not head.startswith(b"HTTP/1.1 200 ")
        writer.close()

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return latencies, errors, body


def wait_ready(base: str, api: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if api.poll() is not None:
            sys.exit(f"covid-platform api exited with {api.returncode}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    sys.exit("covid-platform api did not answer /health within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--state", default="Florida")
    parser.add_argument("--workers", type=int, default=1, help="the API's server processes (--workers)")
    args = parser.parse_args()

    with scratch_database() as url, tempfile.TemporaryDirectory() as landing_dir:
        rows = load(url, Path(landing_dir))
        port = free_port()
        env = {**os.environ, "DATABASE_URL": url}
        env.pop("DATABASE_READ_URL", None)
        api = subprocess.Popen([sys.executable, "-m", "covid_platform.cli", "api", "--port", str(port),
                                "--workers", str(args.workers)],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, api)
            path = f"/v1/tables/state_daily?state={args.state}&limit=10000"
            asyncio.run(clients(port, path, args.clients, args.clients))  # warm-up: connections, pool
            load_before = os.getloadavg()
            started = time.perf_counter()
            latencies, errors, body = asyncio.run(clients(port, path, args.requests, args.clients))
            elapsed = time.perf_counter() - started
            load_after = os.getloadavg()
        finally:
            api.send_signal(signal.SIGINT)  # uvicorn shuts down cleanly, closing the pool before the drop
            api.wait(30)

    cuts = statistics.quantiles(latencies, n=100)
    print(f"cores: {os.cpu_count()}, load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    served = len(json.loads(body)["rows"])
    print(f"state_daily: {rows:,} rows; one answer: {served} rows of {args.state} ({len(body):,} bytes)")
    print(f"{len(latencies):,} requests from {args.clients} concurrent clients to {args.workers} server "
          f"process(es) in {elapsed:.1f} s "
          f"({len(latencies) / elapsed:.0f}/s), {errors} not 200")
    print(f"latency: p50 {cuts[49] * 1000:.1f} ms, p95 {cuts[94] * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms "
          f"(goal: p95 < 100 ms)")


if __name__ == "__main__":
    main()
