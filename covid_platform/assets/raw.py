"""Raw assets: one partition per landed file version, archived, staged and gated (`engine/intake.py`).

A file that passes every gate is staged for its clean table; one that fails any is quarantined with the
reason, and its step fails (not materialized: the partition is red in the UI) before the clean table is touched.
"""

import dagster as dg

from covid_platform.assets.checks import check_result
from covid_platform.assets.docs import OWNERS
from covid_platform.assets.policies import DATASET_TAG, RETRY
from covid_platform.assets.pulls import pull_asset_key
from covid_platform.compat import RETRY_NUMBER_TAG
from covid_platform.datasets import Dataset
from covid_platform.engine import intake, ledger, merge, staging
from covid_platform.engine.gates import GATES
from covid_platform.engine.ledger import Status
from covid_platform.resources.landing import LandingZone, ObjectChanged, landing_kinds
from covid_platform.resources.warehouse import Warehouse

KEY_TAG = "covid/key"
ETAG_TAG = "covid/etag"


def files_partitions(dataset: Dataset) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"{dataset.name}_files")


def raw_asset_key(dataset: Dataset) -> dg.AssetKey:
    return dg.AssetKey(f"raw_{dataset.name}")


def build_raw_asset(dataset: Dataset) -> dg.AssetsDefinition:
    key = raw_asset_key(dataset)
    check_specs = [
        dg.AssetCheckSpec(name, asset=key, blocking=True, description=description)
        for name, description in GATES.items()
    ] + [
        dg.AssetCheckSpec(name, asset=key, description=description)
        for name, description in intake.warnings_of(dataset).items()
    ]

    # A multi-asset of one, for `can_subset`: its checks are optional outputs, so a check that could not be
    # evaluated is not reported, and the UI shows it skipped (not executed, in a failed run), never passed.
    @dg.multi_asset(
        name=key.to_python_identifier(),
        specs=[dg.AssetSpec(
            key,
            # Lineage only: a pulled file reaches this asset through the landing zone and the sensor, so a
            # partition materializes without the pull (the sensor's runs never include it).
            deps=[pull_asset_key(dataset)] if dataset.pull else [],
            group_name="raw",
            owners=OWNERS,
            kinds={"postgres", *landing_kinds()},
            tags={DATASET_TAG: dataset.name},
            description=f"Files dropped under `{dataset.name}/` in the landing zone, one partition per object "
            "version: archived under `_archive/`, streamed into a staging table with COPY and gated.",
        )],
        partitions_def=files_partitions(dataset),
        check_specs=check_specs,
        can_subset=True,
        retry_policy=RETRY,
    )
    def raw(context: dg.AssetExecutionContext, landing: LandingZone, warehouse: Warehouse):
        with warehouse.connect() as conn:
            obj_key, etag = file_version(context, conn)
            entry = ledger.register(conn, obj_key, etag, context.partition_key, dataset.name, context.run.run_id,
                                    intake.issued_at(landing, obj_key, etag, context.log))
            if entry.status == Status.QUARANTINED and _automatic_retry(context):
                # The step's RetryPolicy or the daemon's run retry does not gate the same bytes again (same
                # verdict, another alert); a run a person starts (re-execution, materialize) does.
                raise quarantined_failure(entry, ledger.reason(conn, entry.file_id))
            if entry.status in (Status.LOADED, Status.STAGED, Status.DUPLICATE):
                context.log.info(f"{obj_key} was already {entry.status} (file {entry.file_id}); nothing to redo")
                yield from _earlier_verdict(dataset, entry, ledger.gate_results(conn, entry.file_id))
                return
            try:
                yield from _ingest(context, conn, landing, dataset, entry)
            except dg.Failure:  # its reason is in the ledger already
                raise
            except Exception as error:
                if context.retry_number >= RETRY.max_retries:  # the last attempt: nothing retries it now
                    ledger.note_failure(conn, entry.file_id, f"the raw step failed: {type(error).__name__}: {error}",
                                        context.log)
                raise

    return raw


def _automatic_retry(context: dg.AssetExecutionContext) -> bool:
    return context.retry_number > 0 or RETRY_NUMBER_TAG in context.run.tags


def file_version(context: dg.AssetExecutionContext, conn) -> tuple[str, str]:
    """The object key and ETag behind this partition: from the sensor's tags, or the ledger for UI runs."""
    tags = context.run.tags
    if KEY_TAG in tags and ledger.partition_key(tags[KEY_TAG], tags[ETAG_TAG]) == context.partition_key:
        return tags[KEY_TAG], tags[ETAG_TAG]
    entry = ledger.lookup(conn, context.partition_key)
    if entry is None:
        raise dg.Failure(
            f"Partition {context.partition_key} is not in covid.ingested_files and the run has no "
            f"{KEY_TAG} tag: drop the file again and the sensor will ingest it."
        )
    return entry.key, entry.etag


def archive(conn, landing: LandingZone, entry: ledger.LedgerEntry) -> str:
    """`intake.archive`, as a step failure that retrying cannot mend when the listed version is gone (a
    newer version of the key gets its own run)."""
    try:
        return intake.archive(conn, landing, entry)
    except ObjectChanged as gone:
        raise dg.Failure(str(gone), allow_retries=False) from gone


def _ingest(context, conn, landing: LandingZone, dataset: Dataset, entry: ledger.LedgerEntry):
    file_id, obj_key, etag = entry.file_id, entry.key, entry.etag
    archive_key = archive(conn, landing, entry)
    gated = intake.gate_archived(conn, landing, dataset, file_id, obj_key, archive_key)
    ledger.update(conn, file_id, sha256=gated.sha256, bytes=gated.bytes, rows=gated.rows)
    duplicate_of = None if gated.failed else intake.same_rows(
        dataset, obj_key, ledger.loaded_with_same_content(conn, dataset.name, gated.sha256, file_id))
    status, reason = intake.settle(landing, gated, obj_key, etag, archive_key, duplicate_of)
    staged = status == Status.STAGED
    warnings = intake.warnings(conn, dataset, file_id, gated.staged) if staged else []
    rejected = 0 if gated.failed else ledger.rejected_rows(conn, file_id)
    if status == Status.DUPLICATE:
        with conn, conn.cursor() as cur:
            merge.cover_as(cur, dataset, file_id, duplicate_of[0])
    ledger.update(conn, file_id, status=status, reason=reason, gates=ledger.gates_of(gated.gates + warnings),
                  **({"columns": gated.staged.columns} if staged else {}))
    with conn, conn.cursor() as cur:  # the typed rows stay for the merge; nothing else does
        staging.drop(cur, file_id, typed=not staged)

    metadata = {
        **_identity(entry, status),
        "sha256": gated.sha256,
        "size": dg.MetadataValue.int(gated.bytes),
        "rows_read": dg.MetadataValue.int(gated.rows or 0),
        "rows_loaded": dg.MetadataValue.int(gated.rows - rejected if staged else 0),
        "rows_rejected": dg.MetadataValue.int(rejected),
        "archive_key": archive_key,
    }
    if gated.staged and gated.staged.empty_rows:  # blank lines, lines of commas: no rows
        metadata["empty_lines_ignored"] = dg.MetadataValue.int(gated.staged.empty_rows)
    if staged:
        # The ledger says `staged` until this run's next step merges it: say where it goes, not the
        # in-flight state (the merge then reports `loaded` on this partition, see assets/clean.py).
        metadata["status"] = f"passed the gates; merged into covid.{dataset.table} by the next step"
    else:
        metadata["reason"] = reason
    if status == Status.QUARANTINED:
        context.log.error(f"{obj_key} quarantined: {reason}")
    else:
        if status == Status.DUPLICATE:
            context.log.info(f"{obj_key}: {reason}")
        yield dg.MaterializeResult(metadata=metadata)
    for gate in gated.gates + warnings:
        yield check_result(gate, key=obj_key)
    if status == Status.QUARANTINED:
        # Not materialized: the partition shows as failed in the UI, with the reason in the failure.
        raise quarantined_failure(entry, reason, metadata)


def quarantined_failure(entry: ledger.LedgerEntry, reason: str, metadata: dict | None = None) -> dg.Failure:
    """The step's end for a quarantined file: a failure (no materialization, so the partition is red in
    the UI) carrying the reason; never retried, since the same bytes meet the same gates."""
    return dg.Failure(
        description=reason,
        metadata={**(metadata or {}), **_identity(entry, Status.QUARANTINED), "reason": reason},
        allow_retries=False,
    )


def _identity(entry: ledger.LedgerEntry, status: Status) -> dict:
    return {"key": entry.key, "etag": entry.etag, "file_id": dg.MetadataValue.int(entry.file_id),
            "status": str(status)}


def _earlier_verdict(dataset: Dataset, entry: ledger.LedgerEntry, results: dict):
    """Results for a partition processed by an earlier run: each gate's and warning's as it was then
    (`results`, from the ledger: a row gate that set rows aside warned), not evaluated again; a gate passed for
    a file gated before results were kept (it passed the gates then), a warning not reported then (skipped:
    kept since 2026-12-08; a replay keeps none, its files merged in another order)."""
    yield dg.MaterializeResult(metadata=_identity(entry, entry.status))
    first = f"when the file was first {entry.status}"
    kept = [name for name in intake.warnings_of(dataset) if name in results]
    for name in [*GATES, *kept]:
        then = results.get(name, {"passed": True, "blocking": True, "reason": ""})
        yield dg.AssetCheckResult(
            check_name=name, passed=then["passed"],
            severity=dg.AssetCheckSeverity.ERROR if then["blocking"] else dg.AssetCheckSeverity.WARN,
            description=f"as {first}: {then['reason']}" if then["reason"] else f"checked {first}")
