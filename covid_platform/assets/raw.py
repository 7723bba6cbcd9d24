"""Raw assets: one partition per landed file version, archived, staged and gated.

A file that passes every gate is staged for its clean table; one that fails any is quarantined with the
reason, and the blocking checks stop the run before the clean table is touched.
"""

import hashlib
import io

import dagster as dg
from psycopg2 import sql

from covid_platform.assets.policies import RETRY
from covid_platform.datasets import Dataset
from covid_platform.lib import ledger
from covid_platform.lib.gates import GATES, GateResult, evaluate, not_evaluated, reason_of
from covid_platform.lib.staging import FileRejected, HashingReader, StagedFile, stage, staging_table, text_table
from covid_platform.resources.landing import LandingZone, ObjectChanged
from covid_platform.resources.warehouse import Warehouse

S3_KEY_BYTES = 1024
KEY_TAG = "covid/key"
ETAG_TAG = "covid/etag"
# A file with less than this share of the previous file's rows is reported (non-blocking).
ROW_DROP_RATIO = 0.5
WARNINGS = {
    "row_count_drop": f"The file has under {ROW_DROP_RATIO:.0%} of the rows of the dataset's previous file.",
    "wide_total_matches": "Each row's total column equals the sum of its date columns (wide files).",
}


def warnings_of(dataset: Dataset) -> dict[str, str]:
    return {name: text for name, text in WARNINGS.items() if name != "wide_total_matches" or dataset.wide_total}


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
        for name, description in warnings_of(dataset).items()
    ]

    @dg.asset(
        key=key,
        group_name="raw",
        partitions_def=files_partitions(dataset),
        check_specs=check_specs,
        kinds={"s3", "postgres"},
        retry_policy=RETRY,
        description=f"Files dropped under `{dataset.name}/` in the landing zone, one partition per object "
        "version: archived under `_archive/`, streamed into a staging table with COPY and gated.",
    )
    def raw(context: dg.AssetExecutionContext, landing: LandingZone, warehouse: Warehouse):
        with warehouse.connect() as conn:
            obj_key, etag = object_of(context, conn)
            entry = ledger.register(conn, obj_key, etag, context.partition_key, dataset.name, context.run.run_id)
            if entry.status in ("loaded", "staged", "duplicate"):
                context.log.info(f"{obj_key} was already {entry.status} (file {entry.file_id}); nothing to redo")
                yield from _report(dataset, entry.file_id, obj_key, etag, entry.status)
                return
            yield from _ingest(context, conn, landing, dataset, entry.file_id, obj_key, etag)

    return raw


def object_of(context: dg.AssetExecutionContext, conn) -> tuple[str, str]:
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


def _ingest(context, conn, landing: LandingZone, dataset: Dataset, file_id: int, obj_key: str, etag: str):
    # Archive first, then parse the archived copy: what was loaded is exactly what was kept.
    archive_key = platform_key(landing, "_archive", obj_key, etag)
    try:
        landing.copy(obj_key, archive_key, etag=etag)
    except ObjectChanged as gone:
        ledger.update(conn, file_id, reason=str(gone))
        # Retrying cannot bring this version back; a newer version of the key gets its own run.
        raise dg.Failure(str(gone), allow_retries=False) from gone
    ledger.update(conn, file_id, archive_key=archive_key)

    staged: StagedFile | None = None
    with landing.open(archive_key) as body:
        reader = HashingReader(body)
        try:
            staged = stage(conn, reader, file_id, dataset, obj_key)
            gates = evaluate(conn, dataset, staged, file_id, obj_key)
        except FileRejected as rejected:
            gates = [GateResult("csv_readable", False, str(rejected))]
            gates += [not_evaluated(name, "the file is not readable CSV") for name in list(GATES)[1:]]
        reader.drain()
    rows = staged.rows if staged else None
    ledger.update(conn, file_id, sha256=reader.hexdigest, bytes=reader.bytes, rows=rows)
    failed = any(gate.blocking and not gate.passed for gate in gates)
    rejected = 0 if failed else ledger.rejected_rows(conn, file_id)

    duplicate_of = None if failed else ledger.loaded_with_same_content(conn, dataset.name, reader.hexdigest, file_id)
    if failed:
        reason = reason_of(gates)
        quarantine(landing, archive_key, obj_key, etag, reason)
        ledger.update(conn, file_id, status="quarantined", reason=reason)
        context.log.error(f"{obj_key} quarantined: {reason}")
        status, warnings = "quarantined", []
    elif duplicate_of:
        reason = f"same bytes as file {duplicate_of[0]} ({duplicate_of[1]}), already loaded"
        ledger.update(conn, file_id, status="duplicate", reason=reason)
        context.log.info(f"{obj_key}: {reason}")
        status, warnings = "duplicate", []
    else:
        warnings = _warnings(conn, dataset, file_id, staged)
        ledger.update(conn, file_id, status="staged", columns=staged.columns)
        status = "staged"
    with conn, conn.cursor() as cur:  # the typed rows stay for the merge; nothing else does
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(text_table(file_id)))
        if status != "staged":
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging_table(file_id)))

    metadata = {
        "sha256": reader.hexdigest,
        "size": dg.MetadataValue.int(reader.bytes),
        "rows_read": dg.MetadataValue.int(rows or 0),
        "rows_loaded": dg.MetadataValue.int(rows - rejected if status == "staged" else 0),
        "rows_rejected": dg.MetadataValue.int(rejected),
        "archive_key": archive_key,
    }
    if status != "staged":
        metadata["reason"] = reason
    yield dg.MaterializeResult(metadata={**_identity(file_id, obj_key, etag, status), **metadata})
    for gate in gates:
        yield dg.AssetCheckResult(
            check_name=gate.name,
            passed=gate.passed,
            severity=dg.AssetCheckSeverity.ERROR if gate.blocking else dg.AssetCheckSeverity.WARN,
            description=gate.reason or None,
            metadata={"key": obj_key, **gate.metadata},
        )
    for warning in warnings or [
        GateResult(name, True, "not evaluated: file not staged") for name in warnings_of(dataset)
    ]:
        yield dg.AssetCheckResult(
            check_name=warning.name,
            passed=warning.passed,
            severity=dg.AssetCheckSeverity.WARN,
            description=warning.reason or None,
            metadata={"key": obj_key, **warning.metadata},
        )


def _identity(file_id: int, obj_key: str, etag: str, status: str) -> dict:
    return {"key": obj_key, "etag": etag, "file_id": dg.MetadataValue.int(file_id), "status": status}


def _report(dataset: Dataset, file_id: int, obj_key: str, etag: str, status: str):
    """Results for a partition processed by an earlier run: its gates already passed."""
    yield dg.MaterializeResult(metadata=_identity(file_id, obj_key, etag, status))
    for name in (*GATES, *warnings_of(dataset)):
        severity = dg.AssetCheckSeverity.ERROR if name in GATES else dg.AssetCheckSeverity.WARN
        yield dg.AssetCheckResult(check_name=name, passed=True, severity=severity,
                                  description=f"checked when the file was first {status}")


def platform_key(landing: LandingZone, folder: str, obj_key: str, etag: str) -> str:
    """`<folder>/<key>/<etag>`; for a key so long that this would pass S3's 1,024-byte limit, the key's
    digest stands in for it (the ledger's archive_key records which)."""
    key = f"{folder}/{obj_key}/{etag}"
    if len(f"{landing.prefix}{key}.reason.txt".encode()) > S3_KEY_BYTES:
        digest = hashlib.sha256(obj_key.encode()).hexdigest()
        key = f"{folder}/{obj_key.split('/', 1)[0]}/{digest}/{etag}"
    return key


def quarantine(landing: LandingZone, archive_key: str, obj_key: str, etag: str, reason: str) -> None:
    """Keep the rejected bytes and the reason side by side under `_quarantine/` for the person who fixes it."""
    quarantine_key = platform_key(landing, "_quarantine", obj_key, etag)
    landing.copy(archive_key, quarantine_key)
    landing.put(f"{quarantine_key}.reason.txt", io.BytesIO(f"{reason}\n".encode()))


def _warnings(conn, dataset: Dataset, file_id: int, staged: StagedFile) -> list[GateResult]:
    results = [_row_drop(conn, dataset, file_id, staged)]
    if dataset.wide_total:
        results.append(_wide_total(conn, dataset, staged))
    return results


def _row_drop(conn, dataset: Dataset, file_id: int, staged: StagedFile) -> GateResult:
    previous = ledger.previous_rows(conn, dataset.name, file_id)
    dropped = previous is not None and staged.rows < ROW_DROP_RATIO * previous
    return GateResult(
        "row_count_drop",
        not dropped,
        f"{staged.rows} rows, the previous file had {previous}" if dropped else "",
        {"rows": staged.rows, "previous_rows": previous or 0},
    )


def _wide_total(conn, dataset: Dataset, staged: StagedFile) -> GateResult:
    """Rows whose total column disagrees with the sum of their date columns."""
    total = staged.positions.get(dataset.wide_total)
    if total is None:
        return GateResult("wide_total_matches", False, f"no {dataset.wide_total!r} column to compare with")
    cells = sql.SQL(" + ").join(
        sql.SQL("coalesce(nullif(btrim({}), ''), '0')::numeric").format(sql.Identifier(f"c{p}"))
        for p in staged.wide_dates.values()
    )
    region = sql.SQL(" || '/' || ").join(
        sql.SQL("btrim({})").format(sql.Identifier(f"c{staged.positions[c]}")) for c in dataset.region
    )
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT {region}, btrim({total}), {cells} FROM {table} "
                "WHERE btrim({total})::numeric <> {cells} ORDER BY line"
            ).format(region=region, total=sql.Identifier(f"c{total}"), cells=cells, table=staged.table)
        )
        disagree = cur.fetchall()
    listed = ", ".join(f"{region} ({total} vs {int(summed)})" for region, total, summed in disagree[:10])
    return GateResult(
        "wide_total_matches",
        not disagree,
        f"{len(disagree)} row(s) whose {dataset.wide_total} differs from the sum of the date columns: {listed}"
        if disagree else "",
        {"rows_disagreeing": len(disagree)},
    )
