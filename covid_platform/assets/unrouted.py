"""Objects in the landing zone that no dataset takes: kept and quarantined, never silently ignored."""

import dagster as dg

from covid_platform.assets.checks import check_result
from covid_platform.assets.policies import RETRY
from covid_platform.assets.raw import archive, file_version, quarantined_failure
from covid_platform.datasets import DATASETS
from covid_platform.lib import ledger
from covid_platform.lib.gates import GateResult
from covid_platform.lib.intake import quarantine
from covid_platform.lib.ledger import Status
from covid_platform.resources.landing import LandingZone, landing_kinds
from covid_platform.resources.warehouse import Warehouse

UNROUTED = dg.DynamicPartitionsDefinition(name="unrouted_files")
SUFFIXES = (".csv", ".csv.gz")


def dataset_of(key: str) -> str:
    """The first path segment: the dataset the key is dropped under ('' at the zone's root)."""
    return key.split("/", 1)[0] if "/" in key else ""


def unrouted_reason(key: str) -> str | None:
    """Why no dataset takes this key, or None when one does."""
    known = ", ".join(DATASETS)
    if dataset_of(key) not in DATASETS:
        where = f"under {dataset_of(key)!r}/" if dataset_of(key) else "at the root of the landing zone"
        return f"no dataset is named by the key's first folder ({where}); drop files under one of: {known}"
    if not key.lower().endswith(SUFFIXES):
        return f"not a .csv or .csv.gz file; {dataset_of(key)!r} takes only those"
    return None


@dg.asset(
    key="unrouted_files",
    group_name="raw",
    partitions_def=UNROUTED,
    check_specs=[
        dg.AssetCheckSpec(
            "known_dataset",
            asset="unrouted_files",
            blocking=True,
            description="The object lies under a dataset's folder and is a .csv or .csv.gz file.",
        )
    ],
    kinds=landing_kinds(),
    retry_policy=RETRY,
    description="Objects no dataset takes (an unknown first folder, or not a CSV), one partition per object "
    "version: archived, quarantined with the reason and recorded in covid.ingested_files.",
)
def unrouted_files(context: dg.AssetExecutionContext, landing: LandingZone, warehouse: Warehouse):
    with warehouse.connect() as conn:
        obj_key, etag = file_version(context, conn)
        reason = unrouted_reason(obj_key) or f"{obj_key} belongs to dataset {dataset_of(obj_key)!r}"
        entry = ledger.register(conn, obj_key, etag, context.partition_key, dataset_of(obj_key), context.run.run_id)
        if entry.status != Status.QUARANTINED:
            archive_key = archive(conn, landing, entry)
            quarantine(landing, archive_key, obj_key, etag, reason)
            ledger.update(conn, entry.file_id, status=Status.QUARANTINED, reason=reason)
            context.log.error(f"{obj_key} quarantined: {reason}")
    yield check_result(GateResult("known_dataset", False, reason), key=obj_key)
    raise quarantined_failure(entry, reason)
