"""Objects in the landing zone that no dataset takes: kept and quarantined, never silently ignored."""

import dagster as dg

from covid_platform.assets.checks import check_result
from covid_platform.assets.docs import OWNERS
from covid_platform.assets.policies import RETRY
from covid_platform.assets.raw import archive, file_version, quarantined_failure
from covid_platform.datasets import top_folder, unrouted_reason
from covid_platform.engine import ledger
from covid_platform.engine.gates import GateResult
from covid_platform.engine.intake import quarantine
from covid_platform.engine.ledger import Status
from covid_platform.resources.landing import LandingZone, landing_kinds
from covid_platform.resources.warehouse import Warehouse

UNROUTED = dg.DynamicPartitionsDefinition(name="unrouted_files")
@dg.asset(
    key="unrouted_files",
    group_name="raw",
    owners=OWNERS,
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
        reason = unrouted_reason(obj_key) or f"{obj_key} belongs to dataset {top_folder(obj_key)!r}"
        entry = ledger.register(conn, obj_key, etag, context.partition_key, top_folder(obj_key), context.run.run_id)
        if entry.status != Status.QUARANTINED:
            archive_key = archive(conn, landing, entry)
            quarantine(landing, archive_key, obj_key, etag, reason)
            ledger.update(conn, entry.file_id, status=Status.QUARANTINED, reason=reason)
            context.log.error(f"{obj_key} quarantined: {reason}")
    yield check_result(GateResult("known_dataset", False, reason), key=obj_key)
    raise quarantined_failure(entry, reason)
