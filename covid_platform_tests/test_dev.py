"""`covid-platform dev` on its embedded defaults, as a newcomer starts it (tracker issue 10, part 5): it prints
a psql line for its database and the exports that point Dagster's own CLI at its instance, and those lines
work as printed; it starts without dagster's warning about a dagster.yaml it would not use."""

import io
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from dagster._core.events import EngineEventData
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._core.utils import make_new_run_id
from dagster_aws.s3 import S3Resource

from covid_platform import cli
from covid_platform.engine.embedded import MAX_WAL_SIZE
from covid_platform.resources.landing import LandingZone
from covid_platform_tests.conftest import _free_port
from covid_platform_tests.helpers import REPO, stop_dev, wait_for

PLATFORM_ENV = ("DATABASE_URL", "DAGSTER_HOME", "DAGSTER_PG_URL", "LANDING_URL", "DATABASE_READ_URL")


def _loaded(url: str) -> bool:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('covid.ingested_files') IS NOT NULL")
        if not cur.fetchone()[0]:
            return False
        cur.execute("SELECT count(*) FROM covid.ingested_files WHERE status = 'loaded'")
        return cur.fetchone()[0] > 0


def test_dev_prints_how_to_reach_its_database_and_instance(tmp_path, webhook):
    """Started as a script's background job (`covid-platform dev &` in a shell without job control: SIGINT
    ignored, which children inherit), and stopped by a SIGTERM. A run the printed commands launch that fails
    is alerted on, as one launched from the UI is."""
    env = {name: value for name, value in os.environ.items() if name not in PLATFORM_ENV}
    env["COVID_SENSOR_INTERVAL_SECONDS"] = "2"
    log_path = tmp_path / "dev.log"
    dashboard_port = _free_port()
    with open(log_path, "w") as log:
        dev = subprocess.Popen(
            [sys.executable, "-m", "covid_platform.cli", "dev", "--state-dir", str(tmp_path / "state"),
             "--port", str(_free_port()), "--dashboard-port", str(dashboard_port), "--api-port", "0"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    try:
        printed = wait_for(dev, lambda: re.search(r"^  export (.*)$", log_path.read_text(), re.M), 180,
                           "the export line", log_path)
        # (the AWS variables the test session set are there too, a secret as *** after the line's comment)
        exports = dict(item.split("=", 1) for item in shlex.split(printed.group(1), comments=True))
        assert {*cli.SHARED_ENV, "DASHBOARD_URL"} <= set(exports) <= {*cli.SHARED_ENV, *cli.OPTIONAL_ENV}
        exports = {name: value for name, value in exports.items() if value != "***"}
        # the tables' metadata link to the dashboard dev started, not to the default port
        assert exports["DASHBOARD_URL"] == f"http://127.0.0.1:{dashboard_port}"
        (psql,) = re.findall(r"^Warehouse: psql (.*)$", log_path.read_text(), re.M)
        (warehouse,) = shlex.split(psql)
        assert warehouse == exports["DATABASE_URL"]

        # The printed URL reaches the embedded server, where the sample file loads.
        wait_for(dev, lambda: _loaded(warehouse), 240, "the sample file to load", log_path)
        with psycopg2.connect(warehouse) as conn, conn.cursor() as cur:
            cur.execute("SHOW max_wal_size")  # set for large loads (embedded.MAX_WAL_SIZE)
            assert cur.fetchone()[0] == MAX_WAL_SIZE

        # The printed commands run against the same instance: their runs are in its storage (the UI's).
        shell = {**env, **exports}
        commands = re.findall(r"^  ((?:dg|dagster) [^#\n]*?)\s*(?:#.*)?$", log_path.read_text(), re.M)
        assert [c.split()[:2] for c in commands] == [["dg", "launch"], ["dagster", "asset"]]
        bin_dir = os.path.dirname(sys.executable)
        for command in commands:
            argv = shlex.split(command)
            done = subprocess.run([os.path.join(bin_dir, argv[0]), *argv[1:]], cwd=REPO, env=shell,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
        with psycopg2.connect(exports["DAGSTER_PG_URL"].replace("+psycopg2", "")) as conn, conn.cursor() as cur:
            cur.execute("SELECT pipeline_name, status FROM runs WHERE pipeline_name NOT LIKE 'ingest_%' ORDER BY id")
            runs = cur.fetchall()
        assert ("replay_us_states", "SUCCESS") in runs and ("__ASSET_JOB", "SUCCESS") in runs

        closed = f"http://127.0.0.1:{_free_port()}/us-states.csv"  # nothing listens there
        failed = subprocess.run(
            [os.path.join(bin_dir, "dagster"), "asset", "materialize", "-m", "covid_platform.definitions",
             "--select", "us_states_pull"], cwd=REPO, env={**shell, "US_STATES_URL": closed},
            capture_output=True, text=True, timeout=300)
        assert failed.returncode != 0
        alert = wait_for(dev, lambda: next((body["text"] for body in webhook if closed in body["text"]), None),
                         120, "the failed run's alert", log_path)
        assert "Run failed: us_states" in alert, alert
    finally:
        dev.send_signal(signal.SIGTERM)  # to it alone, as `kill` does
        try:
            dev.wait(60)
            ended = "stopped"
        except subprocess.TimeoutExpired:
            ended = f"still running 60 s after a SIGTERM, then {stop_dev(dev)}"
    assert ended == "stopped", f"{ended}: {log_path.read_text()[-3000:]}"
    # nothing it started is left running (a code server once outlived `dagster dev`)
    deadline = time.monotonic() + 20
    while (left := _in_session(dev.pid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, left
    assert "will not be used" not in log_path.read_text()  # no dagster.yaml in the working directory


def _in_session(session: int) -> list[str]:
    """The command lines of the processes of a session (Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command's name, which may hold spaces
            if int(fields[3]) == session:  # state, ppid, pgrp, session
                found.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return found


def test_devs_own_export_line_in_its_shell_still_starts_the_embedded_server(tmp_path):
    """dev's export line pasted into the shell that starts dev again names its own embedded server: started,
    not waited for (it timed out with "too many retries for DB connection"); any other server is the user's."""
    state = tmp_path / "state"
    own = f"postgresql://postgres:@/covid?host={(state / 'pgdata').resolve()}"
    assert cli._embedded_wanted(None, state) and cli._embedded_wanted("", state)
    assert cli._embedded_wanted(own, state)
    assert not cli._embedded_wanted(f"postgresql://postgres:@/covid?host={tmp_path / 'other' / 'pgdata'}", state)
    assert not cli._embedded_wanted("postgresql://postgres@127.0.0.1:5432/covid", state)


def test_the_export_line_carries_what_a_run_needs_and_no_secret():
    """dev's S3 endpoint and credentials, where reports go and whom they notify, where alerts go, a pull's
    source: a run launched from another shell with the printed line does as dev's runs do; a secret's value (a
    webhook's URL, a URL's password) is never printed."""
    env = {name: f"value-of-{name}" for name in cli.SHARED_ENV}
    env |= {"DATABASE_URL": "postgresql://covid:hunter2@db:5432/covid", "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
            "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI", "REPORTS_URL": "s3://r/p",
            "REPORT_WEBHOOK_URL": "https://hooks.example/T0/B0/XOXO", "ALERT_SNS_TOPIC_ARN": "arn:aws:sns:r:1:alerts",
            "US_COUNTIES_URL": "http://mirror/us-counties-recent.csv", "UNRELATED": "x"}
    (export,) = [line for line in cli.connection_help(env).splitlines() if line.startswith("  export ")]
    assert "hunter2" not in export and "wJalrXUtnFEMI" not in export and "XOXO" not in export
    assigned, comment = export.split("#")
    values = dict(word.split("=", 1) for word in shlex.split(assigned)[1:])
    assert values == {**{name: env[name] for name in cli.SHARED_ENV},
                      "DATABASE_URL": "postgresql://covid:***@db:5432/covid", "AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
                      "AWS_SECRET_ACCESS_KEY": "***", "REPORTS_URL": "s3://r/p", "REPORT_WEBHOOK_URL": "***",
                      "ALERT_SNS_TOPIC_ARN": "arn:aws:sns:r:1:alerts", "US_COUNTIES_URL": "http://mirror/us-counties-recent.csv"}
    assert "***" in comment


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="not run from a virtual environment")
def test_the_printed_commands_activate_the_virtual_environment_first(tmp_path, monkeypatch):
    """A fresh shell has neither `dg` nor `dagster` on its PATH (they are the virtual environment's), and dg
    warns unless the project's `.venv` is the active environment, even run by its path: the lines dev prints
    start by activating it, after which dg runs without that warning."""
    monkeypatch.chdir(REPO)
    lines = cli.connection_help({name: "x" for name in cli.SHARED_ENV}).splitlines()
    steps = [line.split()[0] for line in lines if line.startswith("  ")]
    assert steps == [".", "export", "dg", "dagster"]
    activate = lines[2].strip()
    shell = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(["bash", "-c", f"{activate} && command -v dg dagster && dg check defs"], cwd=REPO,
                          env=shell, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[:2] == [os.path.join(sys.prefix, "bin", name) for name in ("dg", "dagster")]
    assert "does not match the virtual environment" not in done.stdout + done.stderr


def test_drop_puts_a_file_in_devs_zone_and_refuses_what_nothing_would_read(tmp_path, monkeypatch):
    """`covid-platform drop` writes under `<state dir>/landing/<dataset>/`, and refuses, with the reason and no
    file written, a folder with no landing zone (nothing would read it), a name that leaves the dataset's
    folder, a name the folder zone does not list (its own files being written start with '.'), and a file
    that is not there."""
    monkeypatch.delenv("LANDING_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "states.csv"
    source.write_bytes(b"date,state,fips,cases,deaths\r\n")
    refused = {
        "no landing zone": ([str(source), "us_states"], "No landing zone in"),
        "a name that leaves the folder": ([str(source), "us_states", "--name", "../../escape.csv"], "'..'"),
        "an empty part": ([str(source), "us_states", "--name", "daily//day.csv"], "empty parts"),
        "no such file": ([str(tmp_path / "gone.csv"), "us_states"], "No file"),
        "a hidden name": ([str(source), "us_states", "--name", "daily/.day.csv"], "starting with '.' is not read"),
    }
    for args, says in refused.values():
        with pytest.raises(SystemExit, match=says):
            cli.main(["drop", *args, "--state-dir", "state"])
        (tmp_path / "state" / "landing").mkdir(parents=True, exist_ok=True)  # the later cases have a zone
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [source]
    assert cli.main(["drop", str(source), "us_states", "--name", "day.csv", "--state-dir", "state"]) == 0
    assert (tmp_path / "state" / "landing" / "us_states" / "day.csv").read_bytes() == source.read_bytes()
    # in a folder of its own under the dataset's, as the sample file is (any name under it is the dataset's)
    assert cli.main(["drop", str(source), "us_states", "--name", "daily/day.csv", "--state-dir", "state"]) == 0
    zone = LandingZone(url=(tmp_path / "state" / "landing").as_uri(), s3=S3Resource())
    assert [o.key for o in zone.list_after("", 10, within="us_states/daily/")] == ["us_states/daily/day.csv"]

    # a past vintage: its issue time is the file's last-modified time in a folder zone; an unreadable or
    # future time is refused before anything is written
    for when in ("last Tuesday", "2999-01-01"):
        with pytest.raises(SystemExit):
            cli.main(["drop", str(source), "us_states", "--name", "old.csv", "--state-dir", "state",
                      "--issued-at", when])
    assert not (tmp_path / "state" / "landing" / "us_states" / "old.csv").exists()
    assert cli.main(["drop", str(source), "us_states", "--name", "old.csv", "--state-dir", "state",
                     "--issued-at", "2021-03-17T12:00:00Z"]) == 0
    first = zone.describe("us_states/old.csv")
    assert first.last_modified == datetime(2021, 3, 17, 12, tzinfo=timezone.utc)
    # a corrected file of the same size issued at the same time is another version (another ETag)
    source.write_bytes(b"date,state,fips,cases,deaths\n\r")
    assert cli.main(["drop", str(source), "us_states", "--name", "old.csv", "--state-dir", "state",
                     "--issued-at", "2021-03-17T12:00:00Z"]) == 0
    second = zone.describe("us_states/old.csv")
    assert (second.size, second.etag != first.etag) == (first.size, True)
    assert second.last_modified - first.last_modified == timedelta(microseconds=1)


def test_the_sample_file_is_dropped_into_an_empty_zone_only(tmp_path, capsys):
    """Dropped again at a later start, the sample would be the zone's latest file and win its dates back from
    what was loaded since; a zone holding a user's files does not get it either."""
    zone = LandingZone(url=(tmp_path / "landing").as_uri(), s3=S3Resource())
    cli._drop_sample(zone, 3000)
    (first,) = zone.list_after("", 10)
    assert first.key == "/".join(cli.SAMPLE)
    time.sleep(0.01)  # a put now would change the file's modification time
    cli._drop_sample(zone, 3000)
    assert zone.list_after("", 10) == [first]
    used = LandingZone(url=(tmp_path / "used").as_uri(), s3=S3Resource())
    used.put("us_counties/recent.csv", io.BytesIO(b"date,county,state,fips,cases,deaths\n"))
    cli._drop_sample(used, 3000)
    assert [o.key for o in used.list_after("", 10)] == ["us_counties/recent.csv"]
    assert capsys.readouterr().out.count("is not dropped") == 2


def test_an_instance_file_of_a_chosen_dagster_home_is_kept(tmp_path):
    """dev writes the platform's dagster.yaml into its own DAGSTER_HOME at every start, and into one you chose
    only where it has none."""
    platform = cli.INSTANCE_YAML.read_bytes()
    yours = tmp_path / "yours"
    yours.mkdir()
    (yours / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    cli._instance_file(yours, own_home=False)
    assert (yours / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"
    cli._instance_file(tmp_path / "empty", own_home=False)
    assert (tmp_path / "empty" / "dagster.yaml").read_bytes() == platform
    own = tmp_path / "own"
    own.mkdir()
    (own / "dagster.yaml").write_text("an older version's\n")
    cli._instance_file(own, own_home=True)
    assert (own / "dagster.yaml").read_bytes() == platform


def test_a_run_left_started_by_a_stopped_dev_is_failed_when_its_worker_is_gone(capsys):
    """`dev` stopped by a SIGKILL leaves its runs STARTED, each holding one of the 4 run slots for good (the
    default launcher cannot see its worker die): at the next start, a run whose worker process is gone is
    failed, for Dagster's run retries to launch again; one whose worker still runs is left alone."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    with dg.instance_for_test() as instance:
        runs = {}
        for name, pid in (("gone", gone.pid), ("running", os.getpid())):
            run = instance.add_run(DagsterRun(job_name=f"ingest_{name}", run_id=make_new_run_id(),
                                              status=DagsterRunStatus.STARTED))
            instance.report_engine_event(f"Started process for run (pid: {pid}).", run,
                                         EngineEventData.in_process(pid))
            runs[name] = run.run_id
        cli._fail_runs_left_running(instance)
        assert {name: instance.get_run_by_id(run_id).status for name, run_id in runs.items()} == {
            "gone": DagsterRunStatus.FAILURE, "running": DagsterRunStatus.STARTED}
    assert f"Run {runs['gone']} (ingest_gone) was left running" in capsys.readouterr().out
