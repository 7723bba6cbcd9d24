"""Shared steps of the tests: drop a file, ingest it as the sensor's run would, run `covid-platform dev`."""

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

import dagster as dg
import pandas as pd

from covid_platform.assets.raw import ETAG_TAG, KEY_TAG, files_partitions
from covid_platform.datasets import DATASETS
from covid_platform.definitions import defs
from covid_platform.engine.ledger import partition_key
from covid_platform.resources.landing import LandingZone

ASSETS = list(defs.assets)
REPO = Path(__file__).resolve().parents[1]
# Small slices of real public data, kept with the tests so that a fresh clone runs them (data/README.md).
TEST_DATA = Path(__file__).parent / "data"
NYT_STATES = "nyt/us-states.csv.gz"
COUNTIES = "counties/us-counties-jhu-ct-de-ri-vt.csv.gz"


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


def ingest(landing: LandingZone, resources: dict, key: str, instance: dg.DagsterInstance, etag: str | None = None):
    """Materialize the file's raw partition and everything downstream, tagged as the sensor tags it.

    `etag`: the version the sensor listed (default: the current one)."""
    dataset = DATASETS[key.split("/", 1)[0]]
    etag = etag or landing.describe(key).etag
    partition = partition_key(key, etag)
    instance.add_dynamic_partitions(files_partitions(dataset).name, [partition])
    return dg.materialize(
        ASSETS,
        selection=dg.AssetSelection.assets(f"raw_{dataset.name}").downstream(),
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


def wait_for(process: subprocess.Popen, condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"covid-platform dev exited with {process.returncode} (see dev.log)"
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


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


# --- oracles: the clean tables' derived columns computed independently, with pandas ------------------


def with_differences(frame: pd.DataFrame, counts: dict[str, str], region=("state",)) -> pd.DataFrame:
    """new_x = x − the region's latest earlier non-empty x (x itself when there is none); NaN where x is."""
    frame = frame.sort_values([*region, "date"]).reset_index(drop=True)
    for count, new in counts.items():
        previous = frame.groupby(list(region))[count].transform(lambda x: x.ffill().shift())
        frame[new] = frame[count] - previous.fillna(0)
    return frame


def with_rolling_7d(frame: pd.DataFrame, columns, region=("state",)) -> pd.DataFrame:
    """x_7d = mean of the non-empty x over the row and the 6 rows before it of its region (frame sorted by
    region and date); NaN when all seven are empty."""
    for column in columns:
        frame[f"{column}_7d"] = frame.groupby(list(region))[column].transform(
            lambda x: x.rolling(7, min_periods=1).mean())
    return frame
