"""The landing-zone sensor: every new object version under a dataset prefix becomes one ingestion run, and
every other object (an unknown prefix, not a CSV) one quarantine run: nothing dropped is ignored.

The cursor holds the last key listed, so a tick asks S3 only for keys after it (`StartAfter`). Keys that
S3 lists before the cursor (a late upload under an older name, an overwritten key) are found by a sweep
that walks the whole zone one page per tick and requests any object version not yet partitioned.
"""

import json
import os
from collections import defaultdict

import dagster as dg

from covid_platform.assets.raw import ETAG_TAG, KEY_TAG, files_partitions
from covid_platform.assets.unrouted import UNROUTED, dataset_of, unrouted_reason
from covid_platform.datasets import DATASETS, Dataset
from covid_platform.lib.ledger import partition_key
from covid_platform.resources.landing import PAGE_SIZE, LandingObject, LandingZone

# Sensor ticks are bounded by the daemon's 60 s evaluation timeout: cap the work of one tick.
MAX_KEYS_PER_TICK = 1000


def ingest_job_name(dataset: Dataset) -> str:
    return f"ingest_{dataset.name}"


def build_ingest_job(dataset: Dataset):
    return dg.define_asset_job(
        ingest_job_name(dataset),
        selection=dg.AssetSelection.assets(f"raw_{dataset.name}").downstream(),
        # One process per run, not per step: a step subprocess costs seconds of start-up per file.
        executor_def=dg.in_process_executor,
        description=f"Ingest one file of {dataset.name}: raw → clean → summaries.",
    )


QUARANTINE_JOB = dg.define_asset_job(
    "quarantine_unrouted",
    selection=dg.AssetSelection.assets("unrouted_files"),
    executor_def=dg.in_process_executor,
    description="Quarantine one object that no dataset takes.",
)


def _skip_platform_keys(key: str) -> str:
    """Where to continue listing: past the whole `_archive/`-style folder when `key` is in one."""
    top = dataset_of(key)
    return f"{top}0" if top.startswith("_") else key  # '0' sorts right after '/'


def _partitions(obj: LandingObject) -> dg.DynamicPartitionsDefinition:
    return UNROUTED if unrouted_reason(obj.key) else files_partitions(DATASETS[dataset_of(obj.key)])


def _request(obj: LandingObject) -> dg.RunRequest:
    unrouted = unrouted_reason(obj.key) is not None
    return dg.RunRequest(
        # The ETag in the run key: a new version of a key is a new run; the same version never is.
        run_key=f"{obj.key}@{obj.etag}",
        job_name=QUARANTINE_JOB.name if unrouted else ingest_job_name(DATASETS[dataset_of(obj.key)]),
        partition_key=partition_key(obj.key, obj.etag),
        tags={KEY_TAG: obj.key, ETAG_TAG: obj.etag},
    )


@dg.sensor(
    name="landing_sensor",
    minimum_interval_seconds=int(os.environ.get("COVID_SENSOR_INTERVAL_SECONDS", "10")),
    default_status=dg.DefaultSensorStatus.RUNNING,
    jobs=[*(build_ingest_job(dataset) for dataset in DATASETS.values()), QUARANTINE_JOB],
    description="Starts one ingestion per new object version in the landing zone (a quarantine run for "
    "objects no dataset takes).",
)
def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZone) -> dg.SensorResult:
    state = json.loads(context.cursor) if context.cursor else {}
    after = state.get("after", "")
    fresh = landing.list_after(_skip_platform_keys(after), MAX_KEYS_PER_TICK)
    if fresh:
        after = fresh[-1].key

    # The sweep: one page per tick, for the keys the cursor has already passed.
    sweep = state.get("sweep", "")
    page = [obj for obj in landing.list_after(_skip_platform_keys(sweep), PAGE_SIZE) if obj.key <= after]
    behind = [obj for obj in page if not dataset_of(obj.key).startswith("_")]
    known = {
        name: set(context.instance.get_dynamic_partitions(name)) for name in {_partitions(obj).name for obj in behind}
    }
    missed = [obj for obj in behind if partition_key(obj.key, obj.etag) not in known[_partitions(obj).name]]
    if missed:
        context.log.info(f"Sweep found {len(missed)} object version(s) behind the cursor: {missed[0].key}, …")
    sweep = page[-1].key if len(page) == PAGE_SIZE else ""

    objects = {(obj.key, obj.etag): obj for obj in fresh + missed if not dataset_of(obj.key).startswith("_")}
    partitions: dict[str, list[str]] = defaultdict(list)
    for obj in objects.values():
        partitions[_partitions(obj).name].append(partition_key(obj.key, obj.etag))
    return dg.SensorResult(
        run_requests=[_request(obj) for obj in objects.values()],
        dynamic_partitions_requests=[
            dg.AddDynamicPartitionsRequest(partitions_def_name=name, partition_keys=keys)
            for name, keys in partitions.items()
        ],
        cursor=json.dumps({"after": after, "sweep": sweep}),
    )
