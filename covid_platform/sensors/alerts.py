"""Alert sensors: failed ingestion runs (including files stopped by a gate) and stale tables."""

import json

import dagster as dg
from dagster._core.definitions.freshness import FreshnessState

from covid_platform.assets.raw import KEY_TAG
from covid_platform.lib import ledger
from covid_platform.resources.notifier import Notifier
from covid_platform.resources.warehouse import Warehouse


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
    partition = run.tags.get("dagster/partition")
    if partition and run.tags.get(KEY_TAG):
        with warehouse.connect() as conn:
            entry = ledger.lookup(conn, partition)
            if entry and entry.status == "quarantined":
                with conn.cursor() as cur:
                    cur.execute("SELECT reason FROM covid.ingested_files WHERE file_id = %s", (entry.file_id,))
                    reason = cur.fetchone()[0]
    title = "File quarantined" if reason else f"Run of {run.job_name} failed"
    notifier.send(
        title,
        job=run.job_name,
        key=run.tags.get(KEY_TAG),
        reason=reason or "; ".join(errors) or context.failure_event.message,
        run=notifier.run_link(run.run_id) or run.run_id,
    )


@dg.sensor(
    name="freshness_alert",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts when the freshness daemon marks a table stale (FAIL), once per change of state.",
)
def freshness_alert(context: dg.SensorEvaluationContext, notifier: Notifier) -> dg.SkipReason:
    graph = context.repository_def.asset_graph
    keys = [node.key for node in graph.asset_nodes if node.freshness_policy is not None]
    records = context.instance.get_freshness_state_records(keys)
    seen = json.loads(context.cursor) if context.cursor else {}
    alerted = []
    for key in keys:
        record = records.get(key)
        state = record.freshness_state.value if record else FreshnessState.UNKNOWN.value
        name = key.to_user_string()
        if state == FreshnessState.FAIL.value and seen.get(name) != state:
            window = graph.get(key).freshness_policy.fail_window.to_timedelta()
            notifier.send(
                "Table is stale",
                asset=name,
                detail=f"no successful load in the last {window}",
                since=record.updated_at.isoformat(),
            )
            alerted.append(name)
        seen[name] = state
    context.update_cursor(json.dumps(seen, sort_keys=True))
    return dg.SkipReason(f"stale: {', '.join(alerted)}" if alerted else "no new stale table")
