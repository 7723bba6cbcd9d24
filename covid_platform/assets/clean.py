"""Clean tables: every staged file of a dataset merged in, later files winning, derived columns recomputed
(`engine/merge.py`); or, for the job `replay_<dataset>`, rebuilt from every archived file under the gates of
the day (`engine/replay.py`)."""

import dagster as dg

from covid_platform.assets.docs import OWNERS, column_schema, table_metadata
from covid_platform.assets.policies import DATASET_TAG, RETRY, freshness
from covid_platform.assets.raw import raw_asset_key
from covid_platform.datasets import Dataset
from covid_platform.engine import ledger
from covid_platform.engine.ledger import Status
from covid_platform.engine.merge import Merged, merge_pending
from covid_platform.engine.replay import Verdict, replay
from covid_platform.engine.tables import columns, derived_columns
from covid_platform.resources.landing import LandingZone
from covid_platform.resources.warehouse import Warehouse


class CleanConfig(dg.Config):
    replay: bool = False
    """Rebuild the table from every archived file of the dataset, gated again (the job replay_<dataset>
    sets it); otherwise merge the files staged so far."""


def replay_job_name(dataset: Dataset) -> str:
    return f"replay_{dataset.name}"


def build_replay_job(dataset: Dataset):
    return dg.define_asset_job(
        replay_job_name(dataset),
        selection=dg.AssetSelection.assets(dataset.table).downstream(),
        config={"ops": {dataset.table: {"config": {"replay": True}}}},
        executor_def=dg.in_process_executor,
        tags={DATASET_TAG: dataset.name},
        description=f"Rebuild covid.{dataset.table} and its summaries from every archived {dataset.name} file, "
        "in ledger order, gated by today's rules (after a gate rule changed or a bug was fixed). The table "
        "is built aside and swapped in; files dropped meanwhile are merged after the swap.",
    )


def build_clean_asset(dataset: Dataset) -> dg.AssetsDefinition:
    region = ", ".join(dataset.region)
    derived = ", ".join(derived_columns(dataset)) or "none"

    revisions = (
        [dg.AssetCheckSpec("cumulative_revisions", asset=dataset.table, description=(
            "Cumulative counts lower than on the region's previous date, in the rows a load wrote "
            "(revisions: kept as reported, the difference negative)."))]
        if dataset.new else []
    )

    @dg.asset(
        name=dataset.table,
        check_specs=revisions,
        deps=[raw_asset_key(dataset)],
        group_name="clean",
        kinds={"postgres"},
        owners=OWNERS,
        metadata={"dagster/column_schema": column_schema(columns(dataset))},
        tags={DATASET_TAG: dataset.name},
        freshness_policy=freshness(dataset),
        retry_policy=RETRY,
        description=f"`covid.{dataset.table}`: one row per ({region}, date), the latest value any file "
        f"reported. Derived: {derived}. `new_x` = x minus x on the region's latest earlier date where x "
        "is not empty (x itself when there is none; null where x is empty: not reported; negative "
        "revisions kept); `*_7d` = mean of the non-empty values over the row and the 6 rows before it for "
        "the region; 7-day ratios sum both sides over the 7 calendar days ending on the row's date.",
    )
    def clean(context: dg.AssetExecutionContext, config: CleanConfig, warehouse: Warehouse, landing: LandingZone):
        verdicts: list[Verdict] = []
        with warehouse.connect() as conn:
            if config.replay:
                merged, verdicts = replay(conn, landing, dataset)
            else:
                with ledger.transaction(conn) as cur:
                    merged = merge_pending(cur, dataset)
            with ledger.transaction(conn) as cur:
                described = table_metadata(cur, dataset.table)
        if not merged.loaded and not config.replay:
            # Another run's merge took this run's file along (runs overlap), the file was a duplicate, or the
            # partition was loaded before: still a success, so backfills and re-executions complete.
            context.log.info(f"No staged {dataset.name} file to merge: {dataset.table} is unchanged")
        yield dg.MaterializeResult(metadata={**_metadata(merged), **described, **_replay_metadata(context, verdicts)})
        yield from _file_statuses(dataset, merged, verdicts)
        if revisions:
            revised = {count: n for count, n in merged.decreases.items() if n}
            yield dg.AssetCheckResult(
                check_name="cumulative_revisions",
                passed=not revised,
                severity=dg.AssetCheckSeverity.WARN,
                description="; ".join(f"{n} decrease(s) of cumulative '{c}' (kept as reported)" for c, n in revised.items())
                or (None if merged.loaded else "no rows written by this run"),
                metadata={f"decreases_{count}": n for count, n in merged.decreases.items()},
            )

    return clean


def _metadata(merged: Merged) -> dict:
    metadata = {"files_merged": dg.MetadataValue.int(len(merged.loaded)),
                "rows_written": dg.MetadataValue.int(merged.rows_written),
                "keys_changed": dg.MetadataValue.int(merged.keys_changed)}
    if merged.loaded:
        metadata.update(rows_in_files=dg.MetadataValue.int(merged.rows_in_files),
                        first_date=str(merged.first_date), last_date=str(merged.last_date))
    if merged.revisions:
        metadata.update(_revision_metadata(merged))
    return metadata


def _revision_metadata(merged: Merged) -> dict:
    """The merged files' keys added, revised and unchanged against the versions before them (covid.revisions),
    and their largest revisions."""
    files = merged.revisions.values()
    largest = sorted((r for f in files for r in f.largest),
                     key=lambda r: -abs((r["new"] or 0) - (r["old"] or 0)))[:10]
    lines = ["| region | date | column | old | new |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {', '.join(map(str, r['region'].values()))} | {r['date']} | {r['column']} | {r['old']} | {r['new']} |"
              for r in largest]
    return {
        "keys_added": dg.MetadataValue.int(sum(f.keys_added for f in files)),
        "keys_revised": dg.MetadataValue.int(sum(f.keys_revised for f in files)),
        "keys_unchanged": dg.MetadataValue.int(sum(f.keys_unchanged for f in files)),
        "largest_revisions": dg.MetadataValue.md("\n".join(lines) if largest else "none"),
    }


def _replay_metadata(context: dg.AssetExecutionContext, verdicts: list[Verdict]) -> dict:
    """What a replay changed: each file whose verdict differs from its first one (a file that now fails
    is logged as a warning)."""
    if not verdicts:
        return {}
    changed = [v for v in verdicts if v.after != v.before]
    for verdict in changed:
        if verdict.status == Status.QUARANTINED:
            context.log.warning(f"{verdict.key} loaded before, now quarantined: {verdict.reason}")
    lines = ["| file_id | key | before | now | reason |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {v.file_id} | {v.key} | {v.before} | {v.after} | {v.reason or ''} |" for v in changed]
    return {
        "files_replayed": dg.MetadataValue.int(len(verdicts)),
        **{f"files_{status}": dg.MetadataValue.int(sum(v.after == status for v in verdicts))
           for status in (Status.LOADED, Status.QUARANTINED, Status.DUPLICATE)},
        "verdicts_changed": dg.MetadataValue.md("\n".join(lines) if changed else "none"),
    }


def _file_statuses(dataset: Dataset, merged: Merged, verdicts: list[Verdict]):
    """Each file's ledger status once this step is done, on its raw partition (the raw step could only say
    `staged`): `loaded` for the files merged; a replay's new verdict for the others."""
    raw = raw_asset_key(dataset)
    for file_id, key, partition, rows_loaded in merged.loaded:
        yield dg.AssetObservation(asset_key=raw, partition=partition, metadata={
            "status": str(Status.LOADED), "file_id": dg.MetadataValue.int(file_id), "key": key,
            "rows_loaded": dg.MetadataValue.int(rows_loaded), "table": f"covid.{dataset.table}",
        })
    for verdict in verdicts:
        if verdict.status != Status.STAGED:
            yield dg.AssetObservation(asset_key=raw, partition=verdict.partition_key, metadata={
                "status": str(verdict.status), "file_id": dg.MetadataValue.int(verdict.file_id),
                "key": verdict.key, "reason": verdict.reason or "",
            })
