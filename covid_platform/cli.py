"""`covid-platform`: run the platform locally on its embedded defaults, drop a file into the landing zone,
serve the analysts' dashboard or the read API, or bridge an MQTT broker into the landing zone."""

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import NoReturn
from urllib.parse import parse_qs, urlparse

from dagster_aws.s3 import S3Resource

from covid_platform.datasets import DATASETS
from covid_platform.engine import embedded
from covid_platform.resources.landing import LandingZone, issue_time
from covid_platform.stream import command as stream

# The instance `dev` runs on, copied into its DAGSTER_HOME. It lives in the package, not in the repository
# root: `dagster dev` warns about a dagster.yaml in its working directory that is not DAGSTER_HOME's, and
# `dg check defs` (with no DAGSTER_HOME) would build its instance from it and need DAGSTER_PG_URL.
INSTANCE_YAML = resources.files("covid_platform").joinpath("dagster.yaml")
# What another shell needs to reach what `dev` runs; the AWS variables of an S3 landing zone are the user's own.
SHARED_ENV = ("DAGSTER_HOME", "DAGSTER_PG_URL", "DATABASE_URL", "LANDING_URL")
# Set in dev's environment, a run launched from another shell needs them too (an S3 zone's endpoint and
# credentials, where reports go and whom they notify, where alerts go and the links they carry, the queue the
# sensor reads, the pulls' switch and sources); a secret's value is not printed (a webhook's URL is its secret).
OPTIONAL_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
                "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "LANDING_QUEUE_URL",
                "REPORTS_URL", "REPORTS_PUBLIC_URL", "REPORT_WEBHOOK_URL", "REPORT_SNS_TOPIC_ARN",
                "ALERT_WEBHOOK_URL", "ALERT_SNS_TOPIC_ARN", "DAGSTER_UI_URL", "DATABASE_READ_URL", "DASHBOARD_URL",
                "COVID_PULLS", *(f"{name.upper()}_URL" for name, dataset in DATASETS.items() if dataset.pull))
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "REPORT_WEBHOOK_URL", "ALERT_WEBHOOK_URL")

SAMPLE = ("us_states", "sample/nyt-us-states-2021-01-01_2021-02-14.csv")
DASHBOARD = Path(__file__).resolve().parent / "dashboard" / "app.py"


def sqlalchemy_url(database_url: str) -> str:
    """dagster-postgres goes through SQLAlchemy, whose default PostgreSQL driver (psycopg 3) is not installed."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg2://", database_url)


def dashboard_command(port: int, address: str) -> list[str]:
    """`streamlit run` on the dashboard: headless (no browser opened, no e-mail prompt), no usage statistics
    sent, no file watcher (the code does not change under a running server), the toolbar of a viewer (no
    "Deploy" or developer options)."""
    return [
        sys.executable, "-m", "streamlit", "run", str(DASHBOARD),
        "--server.port", str(port), "--server.address", address, "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer",
    ]


def _require_reader(what: str) -> None:
    if not (os.environ.get("DATABASE_READ_URL") or os.environ.get("DATABASE_URL")):
        sys.exit("Set DATABASE_READ_URL (a covid_reader login) or DATABASE_URL; "
                 f"`covid-platform dev` starts the {what} on its own database.")


def dashboard(port: int, address: str) -> NoReturn:
    _require_reader("dashboard")
    print(f"Dashboard on http://{address}:{port} (health: /_stcore/health)", flush=True)
    command = dashboard_command(port, address)
    os.execv(command[0], command)  # Streamlit becomes this process: signals reach it directly


def api(port: int, address: str, workers: int) -> int:
    _require_reader("API")
    from covid_platform.api.app import serve  # FastAPI and uvicorn only for this command

    serve(port, address, workers)
    return 0


def _embedded_wanted(database_url: str | None, state_dir: Path) -> bool:
    """No DATABASE_URL, or the URL of this state dir's embedded server (dev's export line pasted into the shell
    that starts dev again): the embedded server is started, where it would otherwise be waited for."""
    if not database_url:
        return True
    host = parse_qs(urlparse(database_url).query).get("host", [""])[0]
    return bool(host) and Path(host).resolve() == (state_dir / "pgdata").resolve()


def dev(state_dir: Path, port: int, dashboard_port: int, api_port: int = 8000) -> int:
    """`dagster dev` (UI + daemon) with an embedded PostgreSQL and a local landing folder unless
    DATABASE_URL / LANDING_URL say otherwise; the sample file is dropped so the first run starts at once."""
    env = dict(os.environ)
    if _embedded_wanted(env.get("DATABASE_URL"), state_dir):
        _, urls = embedded.start(state_dir / "pgdata", ("covid", "dagster"))
        env["DATABASE_URL"] = urls["covid"]
        env.setdefault("DAGSTER_PG_URL", sqlalchemy_url(urls["dagster"]))
        print(f"Embedded PostgreSQL running in {state_dir / 'pgdata'}")
    env.setdefault("DAGSTER_PG_URL", sqlalchemy_url(env["DATABASE_URL"]))
    env.setdefault("LANDING_URL", (state_dir / "landing").resolve().as_uri())
    if dashboard_port:  # the tables' metadata link to the dashboard dev starts
        env.setdefault("DASHBOARD_URL", f"http://127.0.0.1:{dashboard_port}")
    own_home = not env.get("DAGSTER_HOME")
    env.setdefault("DAGSTER_HOME", str((state_dir / "dagster_home").resolve()))
    _instance_file(Path(env["DAGSTER_HOME"]), own_home)
    print(f"Landing zone: {env['LANDING_URL']}")
    if env.get("LANDING_QUEUE_URL"):  # read by the landing sensor (README: Landing queue)
        print(f"Landing queue: {env['LANDING_QUEUE_URL']}")
    print(connection_help(env), flush=True)

    _drop_sample(LandingZone(url=env["LANDING_URL"], s3=S3Resource()), port)
    with _instance(env) as instance:  # disposed: dev holds no connection of its own while it runs
        _fail_runs_left_running(instance)
    # A shell without job control starts a background job (`covid-platform dev &` in a script) with SIGINT
    # ignored, which children inherit: `dagster dev` would ignore the SIGINT that stops it. Here and in the
    # children, it is what it is in a terminal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # In a process group of its own, which a stop signals whole, as a terminal's Ctrl-C would: a SIGINT to
    # `dagster dev` alone, while it launches its services, is lost.
    process = subprocess.Popen([sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-p", str(port)], env=env,
                               process_group=0)
    # Beside it, each read-side service asked for; the stream bridge only when there is a broker to bridge
    # (no embedded broker is started). Stopped after `dagster dev`, before the embedded server they read.
    cli = [sys.executable, "-m", "covid_platform.cli"]
    wanted = [
        (dashboard_port, dashboard_command(dashboard_port, "127.0.0.1"), f"Dashboard on http://127.0.0.1:{dashboard_port}"),
        (api_port, [*cli, "api", "--port", str(api_port)], f"API on http://127.0.0.1:{api_port} (docs: /docs)"),
        (env.get("MQTT_URL"), [*cli, "stream"], f"Stream bridge on {env.get('MQTT_URL')}"),
    ]
    services = []
    for enabled, command, started in wanted:
        if enabled:
            services.append(subprocess.Popen(command, env=env))
            print(started)
    # `dagster dev` shuts its webserver, daemon and code servers down cleanly on SIGINT; pass a SIGTERM or
    # a Ctrl-C on as one, to its group, then wait, so the embedded server stops only after its clients have
    # gone; said again every 10 s while it runs.
    asked: list[float] = []  # when a stop was passed on

    def stop(*_):
        asked.append(time.monotonic())
        try:
            os.killpg(process.pid, signal.SIGINT)
        except ProcessLookupError:
            pass  # stopped already

    signal.signal(signal.SIGTERM, stop)
    while True:
        try:
            code = process.wait(timeout=1)
            break
        except subprocess.TimeoutExpired:
            if asked and time.monotonic() - asked[-1] > 10:
                stop()
        except KeyboardInterrupt:
            stop()
    try:  # what `dagster dev` left running in its group (a code server it started, seen past its heartbeat)
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # nothing left
    for service in services:
        service.terminate()  # the bridge writes what it holds, then acknowledges it
    for service in services:
        service.wait(60)
    return code  # an embedded server stops as this process exits


def _shown(url: str) -> str:
    """A URL fit for the terminal: a password is replaced by *** (the embedded server has none)."""
    return re.sub(r"^([a-z0-9+]+://[^:/@]*:)[^@/]+@", r"\1***@", url)


def _activation() -> list[str]:
    """The line that activates the virtual environment `dev` runs in (none outside one): `dg` and `dagster`
    are its commands, and dg warns unless the project's `.venv` is the active environment."""
    script = Path(sys.prefix) / "bin" / "activate"
    if sys.prefix == sys.base_prefix or not script.is_file():
        return []
    if script.is_relative_to(Path.cwd()):
        script = script.relative_to(Path.cwd())
    return [f"  . {shlex.quote(str(script))}"]


def connection_help(env: dict[str, str]) -> str:
    """How to reach, from another shell, the warehouse (psql) and this Dagster instance (Dagster's own CLI:
    its runs are recorded in the instance's storage and show in the UI)."""
    exports = " ".join(f"{name}={shlex.quote(_shown(env[name]))}" for name in SHARED_ENV)
    optional = [name for name in OPTIONAL_ENV if env.get(name)]
    exports += "".join(f" {name}=***" if name in SECRET_ENV else f" {name}={shlex.quote(_shown(env[name]))}"
                       for name in optional)
    return "\n".join([
        f"Warehouse: psql {shlex.quote(_shown(env['DATABASE_URL']))}",
        "Dagster's CLI on this instance, from another shell in this folder:",
        *_activation(),
        f"  export {exports}" + ("   # replace each *** with its secret" if "***" in exports else ""),
        "  dg launch --job replay_us_states   # or: dg launch --assets national_daily",
        "  dagster asset materialize -m covid_platform.definitions --select national_daily",
    ])


def _instance_file(home: Path, own_home: bool) -> None:
    """The platform's dagster.yaml into DAGSTER_HOME: always into dev's own (a new version's settings), into
    one you chose only where it has none: yours is kept."""
    home.mkdir(parents=True, exist_ok=True)
    instance, platform = home / "dagster.yaml", INSTANCE_YAML.read_bytes()
    if not own_home and instance.exists() and instance.read_bytes() != platform:
        print(f"Dagster instance: {instance} (yours, kept; the platform's is {INSTANCE_YAML})")
        return
    instance.write_bytes(platform)


def _instance(env: dict[str, str]):
    """The Dagster instance `dagster dev` will run on (its DAGSTER_HOME and storage)."""
    import dagster as dg  # here: the other commands start without it

    for name in ("DAGSTER_HOME", "DAGSTER_PG_URL"):
        os.environ[name] = env[name]
    return dg.DagsterInstance.get()


def _fail_runs_left_running(instance) -> None:
    """Fail the runs a stopped `dev` left started whose worker process is gone (killed with it): Dagster's
    default launcher cannot tell, so they would hold their run slots for good, and their files would never
    load; failed, Dagster's run retries launch them again. A run whose worker still runs is left alone."""
    import dagster as dg

    unfinished = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING])
    for run in instance.get_runs(filters=unfinished):
        pids = [int(event.dagster_event.engine_event_data.metadata["pid"].value)  # "Started process for run"
                for event in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
                if "pid" in event.dagster_event.engine_event_data.metadata]
        if pids and not _alive(pids[-1]):
            instance.report_run_failed(run, f"its worker (pid {pids[-1]}) is gone: `covid-platform dev` was "
                                            "stopped while it ran")
            print(f"Run {run.run_id} ({run.job_name}) was left running by a stopped dev: failed, to be retried")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal sent: only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        pass
    return True


def _drop_sample(zone: LandingZone, port: int) -> None:
    """The sample file into an empty zone only (dev's first start on it): dropped again, it would be the
    zone's latest file and win its keys back from every file loaded since (a user's revisions of those
    dates); nor does a zone holding a user's files get it."""
    dataset, name = SAMPLE
    key = f"{dataset}/{name}"
    if zone.list_after("", 1):
        print(f"The landing zone holds files already: the sample file ({key}) is not dropped")
        return
    with resources.files("covid_platform.sample_data").joinpath(f"{dataset}.csv").open("rb") as body:
        zone.put(key, body)
    print(f"Dropped the sample file as {key}; open http://127.0.0.1:{port} to watch it load")


def _issue_time(text: str) -> datetime:
    """`--issued-at`: an ISO 8601 time (a date alone is its midnight; without a zone, UTC), not in the
    future."""
    try:
        when = issue_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time (2021-03-17T12:00:00Z)") from None
    if when > datetime.now(timezone.utc):
        raise argparse.ArgumentTypeError(f"{text!r} is in the future")
    return when


def drop(path: Path, dataset: str, name: str | None, state_dir: Path, issued_at: datetime | None = None
         ) -> int:
    """Put a file under `<dataset>/` of LANDING_URL, or of the local zone `covid-platform dev` made in
    `state_dir` (refused where there is none: nothing would read a new folder); `issued_at`, when its
    publisher issued it (a past vintage)."""
    if dataset not in DATASETS:
        sys.exit(f"Unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    name = name or path.name
    if "\\" in name or any(part in ("", ".", "..") for part in name.split("/")):
        sys.exit(f"--name {name!r}: an object name under {dataset}/, in folders of its own if you like "
                 "(e.g. us-states.csv, daily/us-states.csv), without '.', '..' or empty parts")
    if not path.is_file():
        sys.exit(f"No file {path}")
    url = os.environ.get("LANDING_URL")
    if not url:
        landing = state_dir / "landing"
        if not landing.is_dir():
            sys.exit(f"No landing zone in {landing.resolve()}: run this in the folder where `covid-platform dev` "
                     "runs (or give its --state-dir), or set LANDING_URL (dev prints its export line)")
        url = landing.resolve().as_uri()
    # a folder zone's files being written start with '.': never listed
    if name.rsplit("/", 1)[-1].startswith(".") and url.startswith("file:"):
        sys.exit(f"{dataset}/{name}: a name starting with '.' is not read in a landing folder; give another "
                 "with --name")
    with open(path, "rb") as body:
        LandingZone(url=url, s3=S3Resource()).put(f"{dataset}/{name}", body, issued_at=issued_at)
    issued = f", issued at {issued_at.isoformat()}" if issued_at else ""
    print(f"Dropped {path} as {dataset}/{name} in {url}{issued}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="covid-platform", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("dev", help="run the UI and daemon on the embedded defaults")
    run.add_argument("--state-dir", type=Path, default=Path(".covid_platform"))
    run.add_argument("--port", type=int, default=3000, help="port of the web UI")
    run.add_argument("--dashboard-port", type=int, default=8501, help="port of the dashboard (0: none)")
    run.add_argument("--api-port", type=int, default=8000, help="port of the read API (0: none)")
    serve_api = commands.add_parser("api", help="serve the read API (FastAPI on uvicorn)")
    serve_api.add_argument("--port", type=int, default=8000)
    serve_api.add_argument("--address", default="127.0.0.1", help="0.0.0.0 behind a load balancer")
    serve_api.add_argument("--workers", type=int, default=1, help="server processes (each with its own pool)")
    board = commands.add_parser("dashboard", help="serve the analysts' dashboard (Streamlit)")
    board.add_argument("--port", type=int, default=8501)
    board.add_argument("--address", default="127.0.0.1", help="0.0.0.0 behind a load balancer")
    put = commands.add_parser("drop", help="put a CSV file into the landing zone")
    put.add_argument("path", type=Path)
    put.add_argument("dataset", choices=sorted(DATASETS))
    put.add_argument("--name", help="object name under the dataset prefix (default: the file's name)")
    put.add_argument("--state-dir", type=Path, default=Path(".covid_platform"),
                     help="dev's --state-dir, whose landing folder is the zone (unless LANDING_URL is set)")
    put.add_argument("--issued-at", type=_issue_time, help="when the publisher issued the file, for a past "
                     "vintage (ISO 8601; default: now, the time it lands): its values' issue time in history")
    stream.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "stream":
        return stream.run(args)
    if args.command == "dev":
        return dev(args.state_dir, args.port, args.dashboard_port, args.api_port)
    if args.command == "api":
        return api(args.port, args.address, args.workers)
    if args.command == "dashboard":
        return dashboard(args.port, args.address)
    return drop(args.path, args.dataset, args.name, args.state_dir, args.issued_at)


if __name__ == "__main__":
    sys.exit(main())
