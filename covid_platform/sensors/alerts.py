"""Alert sensors: failed ingestion runs (including files stopped by a gate) and stale tables.

Every alert names the dataset, the file's key, the reason and a link to the run in the UI (when
`DAGSTER_UI_URL` is set); for a stale table the key and run are those of its last successful load.
"""

import json
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

import dagster as dg

from covid_platform.assets.policies import DATASET_TAG
from covid_platform.assets.raw import KEY_TAG
from covid_platform.compat import FreshnessState, get_current_timestamp
from covid_platform.datasets import route
from covid_platform.engine import ledger
from covid_platform.engine.ledger import Status
from covid_platform.resources.notifier import Notifier
from covid_platform.resources.warehouse import Warehouse


def _datasets_of_assets(graph, keys: Iterable[dg.AssetKey]) -> list[str]:
    """The datasets whose tag the assets carry."""
    return sorted({graph.get(key).tags.get(DATASET_TAG) for key in keys} - {None})


def _run_dataset(context: dg.RunFailureSensorContext) -> str | None:
    """The dataset a run worked on: its job's tag, else the dataset its file's key routes to, else its assets'
    tag (a run of assets launched from the UI)."""
    run = context.dagster_run
    if DATASET_TAG in run.tags:
        return run.tags[DATASET_TAG]
    routed = route(run.tags.get(KEY_TAG, ""))
    if routed or context.repository_def is None:
        return routed.name if routed else None
    graph = context.repository_def.asset_graph
    found = _datasets_of_assets(graph, [key for key in run.asset_selection or () if graph.has(key)])
    return found[0] if len(found) == 1 else None


@dg.run_failure_sensor(
    name="ingestion_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts once per failed run; for a quarantined file the alert carries the gate's reason.",
)
def ingestion_failure_alert(context: dg.RunFailureSensorContext, notifier: Notifier, warehouse: Warehouse):
    run = context.dagster_run
    errors = [
        event.event_specific_data.error.message.strip()
        for event in context.get_step_failure_events()
        if event.event_specific_data and event.event_specific_data.error
    ]
    reason = None
    key = run.tags.get(KEY_TAG)
    partition = run.tags.get("dagster/partition")
    if partition and key:
        with warehouse.connect_read() as conn:
            entry = ledger.lookup(conn, partition)
            if entry and entry.status == Status.QUARANTINED:
                reason = ledger.reason(conn, entry.file_id)
    dataset = _run_dataset(context)
    notifier.send(
        f"File quarantined: {key}" if reason else f"Run failed: {key or dataset or run.job_name}",
        dataset=dataset,
        key=key,
        reason=reason or "; ".join(errors) or context.failure_event.message,
        job=run.job_name,
        run=notifier.run_link(run.run_id) or run.run_id,
    )


def _alert_stale(
    context: dg.SensorEvaluationContext, notifier: Notifier, key: dg.AssetKey, window: timedelta
) -> None:
    graph = context.repository_def.asset_graph
    last = context.instance.get_latest_materialization_event(key)
    run = context.instance.get_run_by_id(last.run_id) if last else None
    if last:
        loaded = f"last load {datetime.fromtimestamp(last.timestamp, timezone.utc):%Y-%m-%d %H:%M} UTC"
    else:
        loaded = "never loaded"
    notifier.send(
        f"Table is stale: {key.to_user_string()}",
        dataset=", ".join(_datasets_of_assets(graph, [key])),
        asset=key.to_user_string(),
        key=run.tags.get(KEY_TAG) if run else None,
        reason=f"no successful load in the last {window} ({loaded})",
        run=(notifier.run_link(run.run_id) or run.run_id) if run else None,
        asset_page=notifier.asset_link(key),
    )


@dg.sensor(
    name="freshness_alert",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts when the freshness daemon marks a table stale (FAIL), then again once per fail "
    "window while it stays stale.",
)
def freshness_alert(context: dg.SensorEvaluationContext, notifier: Notifier) -> dg.SkipReason:
    graph = context.repository_def.asset_graph
    keys = [node.key for node in graph.asset_nodes if node.freshness_policy is not None]
    records = context.instance.get_freshness_state_records(keys)
    # Cursor: when each stale table was last alerted on (epoch seconds), so that it is reminded once per
    # fail window rather than on every tick.
    previous = json.loads(context.cursor).get("alerted_at", {}) if context.cursor else {}
    now = get_current_timestamp()
    alerted_at, alerted = {}, []
    for key in keys:
        name = key.to_user_string()
        record = records.get(key)
        state = record.freshness_state if record else FreshnessState.UNKNOWN
        if state not in (FreshnessState.FAIL, FreshnessState.UNKNOWN):
            continue  # fresh (or only late): forgotten, so going stale again alerts at once
        last = previous.get(name)
        window = graph.get(key).freshness_policy.fail_window.to_timedelta()
        if state == FreshnessState.FAIL and (last is None or now - last >= window.total_seconds()):
            _alert_stale(context, notifier, key, window)
            alerted.append(name)
            last = now
        if last is not None:
            alerted_at[name] = last  # UNKNOWN (not evaluated yet) is no recovery
    context.update_cursor(json.dumps({"alerted_at": alerted_at}, sort_keys=True))
    return dg.SkipReason(f"stale: {', '.join(alerted)}" if alerted else "no new stale table")
