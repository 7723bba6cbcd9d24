"""Real services for the tests: PostgreSQL (this machine's, else the embedded one), S3 over HTTP (moto), and a
local webhook server."""

import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlparse

import boto3
import psutil
import psycopg2
import pytest
from dagster_aws.s3 import S3Resource

from covid_platform.resources.http_source import HttpSources
from covid_platform.resources.landing import LandingZone
from covid_platform.resources.notifier import Notifier
from covid_platform.resources.warehouse import Warehouse

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
UI = "http://dagster.example:3000"  # DAGSTER_UI_URL while `webhook` is up: alerts link runs and assets under it


SESSION_MARK = "COVID_TEST_SESSION"


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind(request):
    """Every process the tests start inherits this session's mark in its environment. One still running when
    the session ends is stopped, and named in the summary: a server whose parent was killed (`dagster
    code-server`'s gRPC server, say) would otherwise outlive the tests on a developer's machine. The session's
    own embedded PostgreSQL is spared: it stops itself when the session's process exits."""
    mark = uuid.uuid4().hex
    os.environ[SESSION_MARK] = mark
    yield
    spared = {os.getpid(), *_embedded_server_pids()}
    left = []
    for process in psutil.process_iter():
        try:
            if process.pid not in spared and process.environ().get(SESSION_MARK) == mark:
                left.append((process, " ".join(process.cmdline())[:200]))
        except psutil.Error:  # gone meanwhile, or not readable
            continue
    for process, _ in left:
        with suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs([process for process, _ in left], timeout=10)
    for process in alive:
        with suppress(psutil.Error):
            process.kill()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if left and reporter:
        reporter.write_line(f"{len(left)} process(es) a test started were still running, now stopped:")
        for process, command in left:
            reporter.write_line(f"  {process.pid}: {command}")


def _embedded_server_pids() -> list[int]:
    """The session's embedded PostgreSQL (`postgres_admin_url`), if it started one: its postmaster (the first
    line of `postmaster.pid`) and the processes it forked."""
    pgdata = getattr(pytest, "embedded_pgdata", None)
    if pgdata is None:
        return []
    try:
        postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
        return [postmaster.pid, *(child.pid for child in postmaster.children(recursive=True))]
    except (OSError, ValueError, IndexError, psutil.Error):
        return []


def _reachable(url: str) -> bool:
    try:
        psycopg2.connect(url, connect_timeout=3).close()
        return True
    except psycopg2.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory) -> str:
    """A server the tests may create databases on: TEST_POSTGRES_URL, this machine's, or an embedded one."""
    url = os.environ.get("TEST_POSTGRES_URL", LOCAL_POSTGRES)
    if _reachable(url):
        return url
    from covid_platform.engine import embedded

    pgdata = tmp_path_factory.mktemp("pgdata")
    server, urls = embedded.start(pgdata, ("postgres",))
    pytest.embedded_server = server  # kept alive for the session
    pytest.embedded_pgdata = pgdata
    return urls["postgres"]


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server of `admin_url`, dropped afterwards: its URL."""
    name = f"covid_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlparse(admin_url)._replace(path=f"/{name}").geturl()
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def database_url(postgres_admin_url) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    with fresh_database(postgres_admin_url) as url:
        yield url


@pytest.fixture
def warehouse(database_url) -> Warehouse:
    return Warehouse(database_url=database_url)


@pytest.fixture
def query(database_url):
    """Run one SELECT against the test database and return its rows."""
    conn = psycopg2.connect(database_url)
    conn.autocommit = True

    def run(statement: str, params=None) -> list[tuple]:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()

    yield run
    conn.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """moto in server mode: a real S3 API over HTTP on a local port."""
    from moto.server import ThreadedMotoServer

    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_client(s3_endpoint):
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3_client) -> str:
    name = f"landing-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def landing(s3_endpoint, bucket) -> LandingZone:
    return LandingZone(url=f"s3://{bucket}/drops", s3=S3Resource(endpoint_url=s3_endpoint, region_name="us-east-1"))


@pytest.fixture
def resources(landing, warehouse) -> dict:
    return {"landing": landing, "warehouse": warehouse, "notifier": Notifier(), "http": HttpSources(backoff_seconds=0.1)}


@pytest.fixture
def webhook(monkeypatch):
    """A local HTTP server standing in for a Slack incoming webhook; yields the JSON bodies it received.
    A path ending in `/revoked` answers 403, as Slack does for a deleted webhook."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            revoked = self.path.endswith("/revoked")
            if not revoked:
                received.append(body)
            self.send_response(403 if revoked else 200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    monkeypatch.setenv("DAGSTER_UI_URL", UI)
    yield received
    server.shutdown()
