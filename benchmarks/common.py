"""What the benchmarks share: the data folder of their --data argument, a scratch PostgreSQL database and
moto's S3 server over HTTP."""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import psycopg2

REPO = Path(__file__).resolve().parents[1]
# The big public files (the tests' data/README.md names their sources), not part of the project: where a
# development machine keeps them beside the clone, else wherever --data says.
DEFAULT_DATA = REPO.parent / "shared" / "data"
COUNTY_FILE = "counties/us-counties-jhu-2020-03-22_2021-10-28.csv.gz"
NYT_STATES = "nyt/us-states.csv"


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, metavar="DIR",
                        help="folder of the public data files, laid out as counties/..., nyt/... "
                             "(default: %(default)s)")


def data_file(folder: Path, name: str) -> Path:
    """`name` in the --data folder; exits, saying so, when it is not there."""
    path = folder / name
    if not path.is_file():
        sys.exit(f"{path} not found: pass --data DIR, a folder holding {name}")
    return path


@contextmanager
def scratch_database(keep: bool = False):
    """A new database on BENCH_POSTGRES_URL's server (default: this machine's), dropped afterwards unless
    `keep` (then its URL is printed); yields its URL."""
    admin_url = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"covid_bench_{os.urandom(4).hex()}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    url = urlparse(admin_url)._replace(path=f"/{name}").geturl()
    try:
        yield url
    finally:
        if keep:
            print(f"kept the scratch database {url}")
        else:
            admin.cursor().execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def moto_s3():
    """moto's server on a free port, with test credentials in this process's environment; yields its URL."""
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@contextmanager
def dagster_dev(database_url: str, endpoint: str, bucket: str, work: Path, interval: int = 10):
    """`covid-platform dev` (webserver, daemon, sensor; runs in their own processes) on the database, with
    its landing zone at s3://bucket/drops on `endpoint` and Dagster's storage in PostgreSQL; its output goes
    to work/dev.log. Yields the process and its environment."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DAGSTER_PG_URL": urlparse(database_url)._replace(scheme="postgresql+psycopg2").geturl(),
        "LANDING_URL": f"s3://{bucket}/drops",
        "AWS_ENDPOINT_URL": endpoint,
        "DAGSTER_HOME": str(work / "dagster_home"),
        "COVID_SENSOR_INTERVAL_SECONDS": str(interval),
    }
    with open(work / "dev.log", "w") as log:
        dev = subprocess.Popen(
            [sys.executable, "-m", "covid_platform.cli", "dev", "--port", str(free_port()),
             "--state-dir", work],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            yield dev, env
        finally:
            os.killpg(dev.pid, signal.SIGTERM)
            try:
                dev.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(dev.pid, signal.SIGKILL)


def wait_for(process, condition, timeout: float, what: str, poll: float = 0.1):
    """The condition's first true value; exits if the process ends or the time runs out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"covid-platform dev exited with {process.returncode} while waiting for {what}")
        value = condition()
        if value:
            return value
        time.sleep(poll)
    sys.exit(f"timed out after {timeout:.0f} s waiting for {what}")


def bare_copy(url: str, path: Path) -> float:
    """Seconds a bare COPY of the county file at `path` takes into a plain typed table (dropped after): the
    floor PostgreSQL sets for ingesting it."""
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE bare "
                    "(date date, county text, state text, fips text, cases bigint, deaths bigint)")
        started = time.perf_counter()
        with open(path, "rb") as f:
            cur.copy_expert("COPY bare FROM STDIN WITH (FORMAT csv, HEADER)", f, size=1 << 20)
    elapsed = time.perf_counter() - started
    with conn, conn.cursor() as cur:
        cur.execute("DROP TABLE bare")
    conn.close()
    return elapsed


def connect(url: str):
    """An autocommit connection and a query function on it."""
    conn = psycopg2.connect(url)
    conn.autocommit = True

    def query(statement, params=None):
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()

    return conn, query


def server_settings(url: str) -> str:
    """The PostgreSQL settings that bound a large load, as measured with (the embedded server's own
    max_wal_size is covid_platform.engine.embedded.MAX_WAL_SIZE; a deployment sets its own)."""
    conn, query = connect(url)
    try:
        names = ("max_wal_size", "shared_buffers", "max_parallel_workers_per_gather", "wal_compression")
        return ", ".join(f"{name} {query(f'SHOW {name}')[0][0]}" for name in names)
    finally:
        conn.close()
