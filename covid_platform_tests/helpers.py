"""Shared steps of the tests: drop a file, run its ingestion as the sensor's run would."""

import csv
import io
from pathlib import Path

import dagster as dg

from covid_platform.assets.raw import ETAG_TAG, KEY_TAG, files_partitions
from covid_platform.datasets import DATASETS
from covid_platform.definitions import defs
from covid_platform.lib.ledger import partition_key
from covid_platform.resources.landing import LandingZone

ASSETS = list(defs.assets)


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


def nyt_states_slice(first: str, last: str, states: set[str] | None = None) -> bytes:
    """Rows of the real NYT us-states file between two dates (inclusive), with its CRLF line ends."""
    from covid_platform_tests.conftest import SHARED_DATA

    lines = (SHARED_DATA / "nyt" / "us-states.csv").read_bytes().splitlines(keepends=True)
    keep = [lines[0]]
    for line in lines[1:]:
        fields = line.decode().rstrip("\r\n").split(",")
        if first <= fields[0] <= last and (states is None or fields[1] in states):
            keep.append(line)
    return b"".join(keep)
