"""Alert sensors: failed ingestion runs (including files stopped by a gate), stale tables and stream messages
the bridge refused.

Every alert names the dataset, the file's key, the reason and a link to the run in the UI (when
`DAGSTER_UI_URL` is set); for a stale table the key and run are those of its last successful load.
"""

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone

import dagster as dg
import psycopg2

from covid_platform.assets.policies import DATASET_TAG
from covid_platform.assets.raw import KEY_TAG
from covid_platform.compat import WILL_RETRY_TAG, FreshnessState, get_current_timestamp
from covid_platform.datasets import route
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
# Objects read per folder and tick (one alert sums them up); more wait for the next ticks.
REFUSED_PER_TICK = 50
REASONS_SHOWN = 3


def _datasets_of_assets(graph, keys: Iterable[dg.AssetKey]) -> list[str]:
    """The datasets whose tag the assets carry."""
    return sorted({graph.get(key).tags.get(DATASET_TAG) for key in keys} - {None})


def _run_dataset(context: dg.RunFailureSensorContext, key: str | None) -> str | None:
    """The dataset a run worked on: its job's tag, else the dataset its file's key routes to, else its assets'
    tag (a run of assets launched from the UI)."""
    run = context.dagster_run
    if DATASET_TAG in run.tags:
        return run.tags[DATASET_TAG]
    routed = route(key or "")
    if routed or context.repository_def is None:
        return routed.name if routed else None
    graph = context.repository_def.asset_graph
    found = _datasets_of_assets(graph, [key for key in run.asset_selection or () if graph.has(key)])
    return found[0] if len(found) == 1 else None


def _ours(context: dg.RunFailureSensorContext) -> bool:
    """Whether the failed run is of this platform's assets or jobs, not of another code location's."""
    run, repository = context.dagster_run, context.repository_def
    if repository is None:
        return True
    keys = {*(run.asset_selection or ()), *(check.asset_key for check in run.asset_check_selection or ())}
    if keys:  # an asset job's run (`__ASSET_JOB` is every code location's): by its assets and checks
        return any(repository.asset_graph.has(key) for key in keys)
    return repository.has_job(run.job_name)


@dg.run_failure_sensor(
    name="ingestion_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts once per failed run; for a quarantined file the alert carries the gate's reason.",
    # a run launched from a shell (`dg launch`, `dagster asset materialize -m …`) comes from no code location
    # of the workspace: watched too, then told apart by its job and assets (`_ours`)
    monitor_all_code_locations=True,
)
def ingestion_failure_alert(context: dg.RunFailureSensorContext, notifier: Notifier, warehouse: Warehouse):
    run = context.dagster_run
    if not _ours(context):
        return
    errors = [
        event.event_specific_data.error.message.strip()
        for event in context.get_step_failure_events()
        if event.event_specific_data and event.event_specific_data.error
    ]
    reason = None
    key = run.tags.get(KEY_TAG)
    partition = run.tags.get("dagster/partition")
    if partition:  # a file's partition; run from the UI or a backfill, its run has no key tag: the ledger's
        try:
            with warehouse.connect_read() as conn:
                entry = ledger.lookup(conn, partition)
                if entry:
                    key = key or entry.key
                    if entry.status == Status.QUARANTINED:
                        reason = ledger.reason(conn, entry.file_id)
        except psycopg2.Error as error:  # the warehouse down (maybe why the run failed): alerted without it
            context.log.warning(f"Alert of run {run.run_id} sent without the ledger's entry: {error}".strip())
    dataset = _run_dataset(context, key)
    # Dagster's run retries (dagster.yaml) tag a failed run they will launch again: a worker that crashed
    retried = ", will be retried" if run.tags.get(WILL_RETRY_TAG) == "true" else ""
    notifier.send(
        f"File quarantined: {key}" if reason else f"Run failed{retried}: {key or dataset or run.job_name}",
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
    description="Alerts on stream messages the bridge refused (`_quarantine/stream/<dataset>/`): per dataset "
    "and tick, how many, their commonest reasons and the objects holding them.",
)
def stream_refusal_alert(context: dg.SensorEvaluationContext, landing: LandingZone, notifier: Notifier
                         ) -> dg.SkipReason:
    # Cursor: the previous tick's time and, per folder, the key its next listing starts after (`from`) and
    # the objects after it already alerted on (`seen`).
    cursor = json.loads(context.cursor) if context.cursor else {}
    now = datetime.fromtimestamp(get_current_timestamp(), timezone.utc)
    since = datetime.fromisoformat(cursor["tick"]) if "tick" in cursor else now
    folders, alerted = {}, []
    for folder in landing.folders(REFUSED):
        kept = cursor.get("folders", {}).get(folder, {})
        start = kept.get("from", folder + name_time(since - REFUSED_LOOKBACK))
        seen = set(kept.get("seen", []))
        listed = landing.list_after(start, limit=len(seen) + REFUSED_PER_TICK + 1, within=folder)
        new = [obj.key for obj in listed if obj.key not in seen]
        read, waiting = new[:REFUSED_PER_TICK], len(new) > REFUSED_PER_TICK
        if read:
            _alert_refused(landing, notifier, folder, read, waiting)
            alerted.append(folder)
        # the next listing starts at the lookback before now, or before the first object left for it
        start = folder + name_time(now - REFUSED_LOOKBACK)
        if waiting:
            start = min(start, read[-1])
        seen = sorted(key for key in seen.union(read) if key > start)
        folders[folder] = {"from": start, "seen": seen}
    context.update_cursor(json.dumps({"tick": now.isoformat(), "folders": folders}, sort_keys=True))
    return dg.SkipReason(f"alerted on {', '.join(alerted)}" if alerted else "no newly refused stream message")


def _alert_refused(landing: LandingZone, notifier: Notifier, folder: str, keys: list[str], waiting: bool) -> None:
    """One alert for these objects of a folder: the messages they hold and their commonest reasons."""
    reasons: Counter[str] = Counter()
    for key in keys:
        try:
            with landing.open(key) as body:
                for line in _lines(body):
                    try:
                        reasons[str(json.loads(line)["reason"])] += 1
                    except (ValueError, KeyError, TypeError):
                        reasons["a line not written as the bridge writes them"] += 1
        except Exception as error:  # gone or unreadable since it was listed: alerted on all the same
            reasons[f"{key} could not be read ({type(error).__name__}: {error})"] += 1
    name = folder.removeprefix(REFUSED).rstrip("/")
    commonest = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    shown = "; ".join(f"{count} × {reason}" for reason, count in commonest[:REASONS_SHOWN])
    others = len(commonest) - REASONS_SHOWN
    notifier.send(
        f"Stream messages refused: {name}" if name != UNROUTED else "Stream messages on no dataset's topic",
        dataset=None if name == UNROUTED else name,
        key=keys[0] if len(keys) == 1 else f"{len(keys)} objects, {keys[0]} … {keys[-1]}",
        reason=f"{reasons.total()} message(s) refused: {shown}"
        + (f"; and {others} other reason(s)" if others > 0 else "")
        + ("; more objects are left for the next alert" if waiting else ""),
    )


def _lines(body) -> Iterator[bytes]:
    """The non-empty lines of an object, read a chunk at a time (a refused message may be large)."""
    parts: list[bytes] = []
    while chunk := body.read(1 << 20):
        *ends, rest = chunk.split(b"\n")
        for end in ends:
            line, parts = b"".join([*parts, end]), []
            if line.strip():
                yield line
        parts.append(rest)
    if (line := b"".join(parts)).strip():
        yield line
