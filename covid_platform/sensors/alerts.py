"""Alert sensors: failed ingestion runs (including files stopped by a gate), stale tables and stream messages
the bridge refused.

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
from covid_platform.datasets import DATASETS, route
from covid_platform.engine import ledger
from covid_platform.engine.ledger import Status
from covid_platform.resources.landing import LandingZone
from covid_platform.resources.notifier import Notifier
from covid_platform.resources.warehouse import Warehouse
from covid_platform.stream.batch import name_time
from covid_platform.stream.bridge import UNROUTED

# Where the bridge writes the messages it refuses, a folder per dataset (`stream/bridge.py`).
REFUSED = "_quarantine/stream/"
# An object of refused messages is alerted on when it appears within this time of the time its name starts
# with, counted from the sensor's previous tick: a bridge retrying a failed write, or a second bridge whose
# name sorts before one already seen. Older names are not listed again (nor alerted on at the first tick).
REFUSED_LOOKBACK = timedelta(hours=1)


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


@dg.sensor(
    name="stream_refusal_alert",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts once per object of stream messages the bridge refused (`_quarantine/stream/`), with "
    "how many it holds and the first one's topic and reason.",
)
def stream_refusal_alert(context: dg.SensorEvaluationContext, landing: LandingZone, notifier: Notifier
                         ) -> dg.SkipReason:
    # Cursor: the previous tick's time and, per folder, the objects alerted on since the lookback before it.
    cursor = json.loads(context.cursor) if context.cursor else {}
    now = datetime.fromtimestamp(get_current_timestamp(), timezone.utc)
    since = datetime.fromisoformat(cursor["tick"]) if "tick" in cursor else now
    floor = name_time(since - REFUSED_LOOKBACK)
    seen, alerted = {}, []
    for name in [*(d.name for d in DATASETS.values() if d.stream), UNROUTED]:
        folder = f"{REFUSED}{name}/"
        known = set(cursor.get("seen", {}).get(name, []))
        for obj in landing.list_after(folder + floor, within=folder):
            if obj.key not in known:
                _alert_refused(landing, notifier, name, obj.key)
                known.add(obj.key)
                alerted.append(obj.key)
        seen[name] = sorted(key for key in known if key > folder + name_time(now - REFUSED_LOOKBACK))
    context.update_cursor(json.dumps({"tick": now.isoformat(), "seen": {k: v for k, v in seen.items() if v}},
                                     sort_keys=True))
    return dg.SkipReason(f"alerted on {', '.join(alerted)}" if alerted else "no newly refused stream message")


def _alert_refused(landing: LandingZone, notifier: Notifier, name: str, key: str) -> None:
    with landing.open(key) as body:
        lines = [line for line in body.read().decode("utf-8", errors="replace").splitlines() if line.strip()]
    try:
        first = json.loads(lines[0])
        example = f"the first, on {first['topic']}: {first['reason']}"
    except (IndexError, ValueError, KeyError, TypeError):
        example = "not one readable as the bridge writes them"
    notifier.send(
        f"Stream messages refused: {name}",
        dataset=None if name == UNROUTED else name,
        key=key,
        reason=f"{len(lines)} message(s) refused; {example}",
    )
