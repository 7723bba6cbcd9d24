"""Shared steps of the tests: slice the real data, drop a file, ingest it as the sensor's run would, tick the
sensor, run a replay, run `covid-platform dev`. The pandas oracles are in oracles.py."""

import csv
import gzip
import io
import os
import signal
import subprocess
import sys
import time
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg

from covid_platform.assets.clean import build_replay_job
from covid_platform.assets.raw import ETAG_TAG, KEY_TAG, files_partitions
from covid_platform.datasets import DATASETS
from covid_platform.definitions import defs
from covid_platform.engine.ledger import partition_key
from covid_platform.resources.landing import LandingZone
from covid_platform.sensors.landing import landing_sensor

ASSETS = list(defs.assets)
REPOSITORY = defs.get_repository_def()
REPO = Path(__file__).resolve().parents[1]
# Small slices of real public data, kept with the tests so that a fresh clone runs them (data/README.md).
TEST_DATA = Path(__file__).parent / "data"
NYT_STATES = "nyt/us-states.csv.gz"
COUNTIES = "counties/us-counties-jhu-ct-de-ri-vt.csv.gz"
PR_DE = "counties/us-counties-jhu-pr-de-2021-02-16_2021-03-17.csv.gz"
# Kent County, Delaware, leaves deaths unreported for ten days: a difference after them reaches back past them.
GAP = ("Kent", "2021-02-20", "2021-03-01")
COVIDTRACKING = TEST_DATA / "covidtracking" / "all-states-history_2020-12-10.csv"


def csv_bytes(header: list[str], rows: list[list]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def drop(landing: LandingZone, key: str, body: bytes | Path) -> str:
    data = body.read_bytes() if isinstance(body, Path) else body
    landing.put(key, io.BytesIO(data))
    return key


def ingest(landing: LandingZone, resources: dict, key: str, instance: dg.DagsterInstance, etag: str | None = None,
           raw_only: bool = False):
    """Materialize the file's raw partition and everything downstream, tagged as the sensor tags it.

    `etag`: the version the sensor listed (default: the current one); `raw_only`: the raw step alone (a run
    whose merge is still to come)."""
    dataset = DATASETS[key.split("/", 1)[0]]
    etag = etag or landing.describe(key).etag
    partition = partition_key(key, etag)
    instance.add_dynamic_partitions(files_partitions(dataset).name, [partition])
    return dg.materialize(
        ASSETS,
        selection=dg.AssetSelection.assets(f"raw_{dataset.name}").downstream(depth=0 if raw_only else None),
        partition_key=partition,
        instance=instance,
        resources=resources,
        tags={KEY_TAG: key, ETAG_TAG: etag},
        raise_on_error=False,
    )


@cache
def data_file(name: str) -> bytes:
    """The bytes of a file of data/ (see its README.md for what each holds), gunzipped if it ends in .gz;
    read once per session: the slices below are cut from it again and again."""
    data = (TEST_DATA / name).read_bytes()
    return gzip.decompress(data) if name.endswith(".gz") else data


def _rows(name: str, state_column: int, first: str, last: str, states: set[str] | None) -> bytes:
    """The header and the original bytes (CRLF line ends) of each row dated `first` to `last` (inclusive),
    of one of `states` (every state if None)."""
    header, *lines = data_file(name).splitlines(keepends=True)
    keep = [header]
    for line in lines:
        fields = line.decode().split(",")
        if first <= fields[0] <= last and (states is None or fields[state_column] in states):
            keep.append(line)
    return b"".join(keep)


def nyt_states_slice(first: str, last: str, states: set[str] | None = None) -> bytes:
    """Rows of the real NYT us-states file (data/ holds 2020-06-01 to 2021-02-28, and Florida 2021-06-01 to
    06-07)."""
    return _rows(NYT_STATES, 1, first, last, states)


def county_rows(first: str, last: str, states: set[str] | None = None) -> bytes:
    """Real rows of the JHU county file in the NYT layout, "Unassigned" counties without fips among them
    (data/: Connecticut, Delaware, Rhode Island, Vermont 2020-03-22 to 2020-05-25, and Delaware 2020-12-20 to
    2021-01-05)."""
    return _rows(COUNTIES, 2, first, last, states)


def nyt_published(data: bytes, keep=lambda date: True) -> bytes:
    """The rows (those whose date `keep` accepts) with deaths empty for Puerto Rico's municipios (not for its
    "Unassigned" row) and for Kent County over GAP."""
    header, *rows = csv.reader(io.StringIO(data.decode()))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for date, county, state, fips, cases, deaths in rows:
        if not keep(date):
            continue
        municipio = state == "Puerto Rico" and county != "Unassigned"
        if municipio or (county == GAP[0] and GAP[1] <= date <= GAP[2]):
            deaths = ""
        writer.writerow([date, county, state, fips, cases, deaths])
    return out.getvalue().encode()


def negative_cases(data: bytes, lines: list[int]) -> bytes:
    """The file with a negative `cases` on each of these lines (the header is line 1)."""
    rows = data.split(b"\r\n")
    for line in lines:
        fields = rows[line - 1].split(b",")
        fields[3] = b"-" + fields[3]
        rows[line - 1] = b",".join(fields)
    return b"\r\n".join(rows)


def covidtracking_slice(keep) -> bytes:
    """The original header and the original bytes of every line whose (state, date) `keep` accepts."""
    lines = COVIDTRACKING.read_bytes().decode().splitlines(keepends=True)
    header = next(csv.reader([lines[0]]))
    state, date = header.index("state"), header.index("date")
    kept = [lines[0]]
    for line in lines[1:]:
        fields = next(csv.reader([line]))
        if keep(fields[state], fields[date]):
            kept.append(line if line.endswith("\n") else line + "\n")
    return "".join(kept).encode()


# States whose spring 2020 rows hold the cases worth testing: AS reports 0 tests and no positives until
# 03-30 (a zero denominator, then a window whose positives are all empty); MP has no negatives until 04-02; OR
# no totalTestResults until 03-29; PR no negatives from 05-06 on (its latest row too). AL's first four days
# end on a row with positive = negative = 0, its latest: the summary's zero denominator. AK's first days
# (to 03-16) test people but report no positives: windows of tests whose positives are all empty; WY leaves
# negative empty on 03-16 only: the next day's difference reaches back past it.
SPRING_STATES = {"AS", "MP", "OR", "PR", "NY", "WA"}


def spring_row(state: str, date: str) -> bool:
    return (
        (state in SPRING_STATES and "2020-03-20" <= date <= "2020-05-20")
        or (state == "AL" and date <= "2020-03-10")
        or (state in ("AK", "WY") and date <= "2020-03-20")
    )


def tick(instance: dg.DagsterInstance, landing: LandingZone, cursor: str | None):
    """One sensor evaluation, then what the daemon does with its result: add the requested partitions.

    Returns (result, the cursor for the next tick)."""
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"landing": landing}, repository_def=REPOSITORY
    ) as context:
        result = landing_sensor(context)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result, result.cursor


def tick_until_quiet(instance, landing, cursor, max_ticks: int = 10):
    """Tick until a tick requests nothing: (every request in order, each tick's request count, cursor)."""
    requests, counts = [], []
    for _ in range(max_ticks):
        result, cursor = tick(instance, landing, cursor)
        requests += result.run_requests
        counts.append(len(result.run_requests))
        if not result.run_requests:
            return requests, counts, cursor
    raise AssertionError(f"the sensor still requested runs after {max_ticks} ticks: {counts}")


def run_replay(resources, instance, dataset: str = "us_states") -> dg.ExecuteInProcessResult:
    """The job `replay_<dataset>` as the Launchpad launches it (its config included), on the test's resources."""
    definitions = dg.Definitions(assets=ASSETS, jobs=[build_replay_job(DATASETS[dataset])], resources=resources)
    return definitions.resolve_job_def(f"replay_{dataset}").execute_in_process(instance=instance)


def as_user(url: str, user: str) -> str:
    """The same server and database, as another (trust-authenticated) user."""
    parsed = urlparse(url)
    port = f":{parsed.port}" if parsed.port else ""
    return parsed._replace(netloc=f"{user}@{parsed.hostname or ''}{port}").geturl()


def start_dev(env: dict, log) -> subprocess.Popen:
    """`covid-platform dev` (the README's first command) in its own process group."""
    from covid_platform_tests.conftest import _free_port

    return subprocess.Popen(
        # no dashboard nor API: their own tests start them; others would contend for their ports
        [sys.executable, "-m", "covid_platform.cli", "dev", "--port", str(_free_port()), "--dashboard-port", "0",
         "--api-port", "0"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def stop_dev(dev: subprocess.Popen, grace: float = 60) -> str:
    """SIGTERM to the whole process group (as a terminal's Ctrl-C or `docker stop` would); SIGKILL after
    `grace` seconds. Returns how it ended."""
    os.killpg(dev.pid, signal.SIGTERM)
    try:
        dev.wait(grace)
        return "stopped"
    except subprocess.TimeoutExpired:
        os.killpg(dev.pid, signal.SIGKILL)
        dev.wait(10)
        return "killed"


def wait_for(process: subprocess.Popen, condition, timeout: float, what: str, log: Path | None = None):
    """`condition()`'s first true value while `process` runs; a failure quotes the end of its `log`."""
    tail = (lambda: f": {log.read_text()[-3000:]}") if log else (lambda: " (see dev.log)")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"covid-platform dev exited with {process.returncode}{tail()}"
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{tail()}")


def loaded_files(query, key_like: str = "%") -> int:
    """Files the ledger says are loaded (0 until `covid-platform dev` has created the ledger)."""
    if not query("SELECT to_regclass('covid.ingested_files')")[0][0]:
        return 0
    return query("SELECT count(*) FROM covid.ingested_files WHERE key LIKE %s AND status = 'loaded'",
                 (key_like,))[0][0]


def dev_env(database_url: str, s3_endpoint: str, bucket: str, tmp_path: Path) -> dict[str, str]:
    """`covid-platform dev` on the test database, landing in the test bucket, its sensor ticking every 2 s."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "LANDING_URL": f"s3://{bucket}/drops",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "COVID_SENSOR_INTERVAL_SECONDS": "2",
    }
