"""The landing-zone sensor: every new object version under a dataset prefix becomes one ingestion run, and
every other object (an unknown prefix, not a CSV) one quarantine run: nothing dropped is ignored.

The cursor holds the last key listed in each folder (each dataset's folder, its stream folder, and the rest
of the zone), so a tick asks S3 only for keys after it in each (`StartAfter`): a new file in a folder that
sorts before another's last key (a `us_counties/` drop after a `us_states/` one, a `us_states/stream/`
batch after `us_states/nyt.csv`) is found on the next tick. Keys that S3 lists before their folder's
cursor (a late upload under an older name, an overwritten key) are found by a sweep that walks the whole
zone one page per tick and requests any object version not yet partitioned.

With a queue (`LANDING_QUEUE_URL`: an SQS queue receiving the bucket's `s3:ObjectCreated:*` notifications), a
tick reads the queue: each notification becomes the run request the listing would have made (same run key,
same partition), so a drop is requested as soon as its notification arrives, wherever its key sorts, and a
tick costs a ReceiveMessage, not a listing (ticks every 2 s by default instead of 10). The listing and its
sweep stay, every `COVID_LISTING_INTERVAL_SECONDS` (30) instead of every tick: the reconciliation of whatever
the queue did not say (notifications lost or not configured, objects put before the queue existed).
"""

import json
import os
import time
from collections import defaultdict

import botocore.exceptions
import dagster as dg

from covid_platform.assets.policies import DATASET_TAG
from covid_platform.assets.raw import ETAG_TAG, KEY_TAG, files_partitions
from covid_platform.assets.unrouted import UNROUTED
from covid_platform.datasets import DATASETS, Dataset, route, top_folder
from covid_platform.engine.ledger import partition_key
from covid_platform.resources.landing import PAGE_SIZE, LandingObject, LandingZone, QueueMessage

# Sensor ticks are bounded by the daemon's 60 s evaluation timeout: cap the work of one tick.
MAX_KEYS_PER_TICK = 1000
# At most 100 messages a tick (SQS gives 10 at a time); a burst beyond them is read on the next ticks.
QUEUE_BATCHES_PER_TICK = 10
# Dagster's sensor daemon starts a sensor's ticks at most every 5 s (its loop), whatever the interval: a tick
# waits this long on the queue (SQS long polling, answered as soon as a message arrives), so that a message
# arriving between ticks is read when it arrives, not at the next tick. 0 to 20 (SQS's bounds).
QUEUE_WAIT_SECONDS = int(os.environ.get("LANDING_QUEUE_WAIT_SECONDS", "4"))
# With a queue, the listing (folder cursors and a page of the sweep) runs on a tick once this long has passed
# since the last one; without one, on every tick.
LISTING_INTERVAL_SECONDS = float(os.environ.get("COVID_LISTING_INTERVAL_SECONDS", "30"))


def queue_configured() -> bool:
    """Whether the landing sensor reads a queue (what the sensor's interval is chosen by when it loads)."""
    return bool(os.environ.get("LANDING_QUEUE_URL", "").strip()) and os.environ.get(
        "LANDING_URL", "").startswith("s3://")


def sensor_interval_seconds() -> int:
    """`COVID_SENSOR_INTERVAL_SECONDS`, else 2 with a queue (a tick then costs one ReceiveMessage; the daemon
    starts ticks every 5 s at most, and the tick's long poll covers the gap) and 10 without (every tick lists
    the zone)."""
    return int(os.environ.get("COVID_SENSOR_INTERVAL_SECONDS") or (2 if queue_configured() else 10))


def ingest_job_name(dataset: Dataset) -> str:
    return f"ingest_{dataset.name}"


def build_ingest_job(dataset: Dataset):
    return dg.define_asset_job(
        ingest_job_name(dataset),
        selection=dg.AssetSelection.assets(f"raw_{dataset.name}").downstream(),
        # One process per run, not per step: a step subprocess costs seconds of start-up per file.
        executor_def=dg.in_process_executor,
        tags={DATASET_TAG: dataset.name},
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
    top = top_folder(key)
    return f"{top}0" if top.startswith("_") else key  # '0' sorts right after '/'


def _folders() -> list[str]:
    """The folders listed each with its own cursor: "" (keys no dataset takes), each dataset's folder, and the
    stream folder of each dataset that declares a stream."""
    return ["", *(f"{name}/" for name in DATASETS), *(d.stream_folder for d in DATASETS.values() if d.stream)]


def _folder_of(key: str) -> str:
    """The most specific folder of `_folders()` holding `key`."""
    dataset = DATASETS.get(top_folder(key))
    if dataset is None:
        return ""
    in_stream = dataset.stream and key.startswith(dataset.stream_folder)
    return dataset.stream_folder if in_stream else f"{dataset.name}/"


def _skip_to(folder: str, key: str) -> str | None:
    """When `key`, listed in `folder`, belongs to another cursor's folder or to the platform: where the
    listing of `folder` continues (past that whole folder), else None."""
    if folder == "" and (top_folder(key) in DATASETS or top_folder(key).startswith("_")):
        return f"{top_folder(key)}0"
    inner = _folder_of(key)
    return f"{inner[:-1]}0" if inner != folder else None


def _list_folder(
    landing: LandingZone, folder: str, after: str, limit: int
) -> tuple[list[LandingObject], str, bool]:
    """Up to `limit` objects of `folder` after its cursor `after`, skipping the folders inside it that other
    cursors list: (the objects, the folder's new cursor, whether the listing reached the folder's end).

    A dataset's cursor stays on its last key, so a key dropped between it and the stream folder is found on
    the next tick. The cursor of "" also passes the folders it skips: keys no dataset takes are rare
    mistakes, and finding one dropped behind it is the sweep's job; a request per folder boundary on every
    tick is not worth it."""
    found: list[LandingObject] = []
    start = after
    while len(found) < limit:
        wanted = limit - len(found)
        page = landing.list_after(start, wanted, within=folder)
        skip = None
        for obj in page:
            skip = _skip_to(folder, obj.key)
            if skip:
                break
            found.append(obj)
            start = after = obj.key
        if skip:  # S3 lists again from past the inner folder: at most once per inner folder
            start = skip
            after = skip if folder == "" else after
        elif len(page) < wanted:
            return found, after, True
    return found, after, False


def _new_objects(landing: LandingZone, cursors: dict[str, str]) -> tuple[list[LandingObject], bool]:
    """Each folder's new objects, at most MAX_KEYS_PER_TICK in all: an equal share each first, so that one
    folder's backlog never delays another's new file, then what is left to the folders that have more.
    Moves `cursors` on; also says whether every folder was listed to its end."""
    share = max(1, MAX_KEYS_PER_TICK // len(cursors))
    found: list[LandingObject] = []
    pending = []
    for folder in cursors:
        objects, cursors[folder], done = _list_folder(landing, folder, cursors[folder], share)
        found += objects
        if not done:
            pending.append(folder)
    for folder in list(pending):
        if len(found) >= MAX_KEYS_PER_TICK:
            break
        left = MAX_KEYS_PER_TICK - len(found)
        objects, cursors[folder], done = _list_folder(landing, folder, cursors[folder], left)
        found += objects
        if done:
            pending.remove(folder)
    return found, not pending


def _load_cursor(cursor: str | None) -> tuple[dict[str, str], str, str, str]:
    """(each folder's cursor, the last key listed anywhere, the sweep's position, a mark).

    A folder the cursor does not know yet (every folder, for a cursor from before folders had their own; a
    dataset or a stream declared since) is listed from its start, but its keys up to the mark (the last key
    listed anywhere then) were listed before, under another cursor: they are requested only when their
    version has no partition. The mark goes once every folder has been listed to its end."""
    state = json.loads(cursor) if cursor else {}
    after, sweep, mark = state.get("after", ""), state.get("sweep", ""), state.get("mark", "")
    known = state.get("folders", {})
    cursors = {}
    for folder in _folders():
        if folder in known:
            cursors[folder] = known[folder]
        else:  # exact for the folder the old cursor stopped in; the others from their start, up to the mark
            cursors[folder] = after if after and _folder_of(after) == folder else ""
            mark = mark or after
    return cursors, after, sweep, mark


def _without_partition(
    context: dg.SensorEvaluationContext, objects: list[LandingObject]
) -> list[LandingObject]:
    """The object versions that have no dynamic partition yet (were never requested)."""
    names = {_partitions(obj).name for obj in objects}
    known = {name: set(context.instance.get_dynamic_partitions(name)) for name in names}
    return [obj for obj in objects if partition_key(obj.key, obj.etag) not in known[_partitions(obj).name]]


def _partitions(obj: LandingObject) -> dg.DynamicPartitionsDefinition:
    dataset = route(obj.key)
    return files_partitions(dataset) if dataset else UNROUTED


def _request(obj: LandingObject) -> dg.RunRequest:
    dataset = route(obj.key)
    return dg.RunRequest(
        # The ETag in the run key: a new version of a key is a new run; the same version never is.
        run_key=f"{obj.key}@{obj.etag}",
        job_name=ingest_job_name(dataset) if dataset else QUARANTINE_JOB.name,
        partition_key=partition_key(obj.key, obj.etag),
        tags={KEY_TAG: obj.key, ETAG_TAG: obj.etag},
    )


def _list_zone(
    context: dg.SensorEvaluationContext, landing: LandingZone, cursors: dict[str, str], after: str,
    sweep: str, mark: str,
) -> tuple[list[LandingObject], str, str, str]:
    """The listing: each folder's new keys after its cursor (moved on), and one page of the sweep for the keys
    behind them. Returns (the object versions to request, after, sweep, mark)."""
    fresh, caught_up = _new_objects(landing, cursors)
    after = max([after, *(obj.key for obj in fresh)])
    if mark:
        fresh = [obj for obj in fresh if obj.key > mark] + _without_partition(
            context, [obj for obj in fresh if obj.key <= mark])
        mark = "" if caught_up else mark

    # The sweep: one page per tick, for the keys their folder's cursor has already passed.
    page = landing.list_after(_skip_platform_keys(sweep), PAGE_SIZE)
    behind = [
        obj for obj in page
        if not top_folder(obj.key).startswith("_") and obj.key <= cursors[_folder_of(obj.key)]
    ]
    listed = {(obj.key, obj.etag) for obj in fresh}  # this tick's new keys are behind the moved cursors too
    missed = [obj for obj in _without_partition(context, behind) if (obj.key, obj.etag) not in listed]
    if missed:
        named = ", ".join(obj.key for obj in missed[:3]) + (", …" if len(missed) > 3 else "")
        context.log.info(f"Sweep found {len(missed)} object version(s) behind the cursor: {named}")
    sweep = page[-1].key if len(page) == PAGE_SIZE else ""
    return fresh + missed, after, sweep, mark


# When a message is deleted. A sensor cannot act after it returns, and its run requests are recorded only
# then, by the daemon: it adds the tick's partitions, reserves its runs together with its cursor, submits
# them, and only then makes that cursor the one the next tick is given (a tick cut short is resumed from its
# reserved runs; a failed evaluation keeps the older cursor). So a message whose object this tick requests
# is not deleted now: its receipt goes into the cursor, and the next tick deletes it. If the tick is never
# recorded, the next tick is given the older cursor, the receipt is gone with it, and the message comes back
# once its visibility timeout (LandingZone.queue_visibility_timeout_seconds, 60 s) has passed, to be
# requested again. A message whose object version already has its partition (an earlier tick requested it:
# a notification delivered twice, one come back after a lost tick, a key the listing found first) is
# deleted at once, as is one that names nothing to ingest (an s3:TestEvent, a body that is no S3 event, an
# object of the platform's own folders), with a log line. A failed deletion only logs: the message comes
# back and is deleted then.
def _read_queue(
    context: dg.SensorEvaluationContext, landing: LandingZone, messages: list[QueueMessage],
    objects: dict[tuple[str, str], LandingObject],
) -> list[str]:
    """Adds to `objects` the versions the messages name that no tick has requested yet, deletes the
    messages that request nothing, and returns the receipts of the others (for the next tick to delete)."""
    named = {
        (obj.key, obj.etag): obj for message in messages for obj in message.objects
        if not top_folder(obj.key).startswith("_")
    }
    new = _without_partition(context, [obj for version, obj in named.items() if version not in objects])
    objects.update({(obj.key, obj.etag): obj for obj in new})
    keep, done = [], []
    for message in messages:
        if message.malformed:
            context.log.warning(f"Deleting queue message {message.message_id}: {message.note}")
        elif message.note:
            context.log.info(f"Queue message {message.message_id}: ignored {message.note}")
        requests = any((obj.key, obj.etag) in objects for obj in message.objects)
        (keep if requests else done).append(message.receipt)
    failed = landing.delete_messages(done) if done else []
    if failed:
        context.log.warning(f"Could not delete {len(failed)} queue message(s) (they come back and are "
                            f"deleted then): {failed[0]}")
    if messages:
        first = f": {new[0].key}, …" if new else ""
        context.log.info(f"Queue: {len(messages)} message(s), {len(new)} new object version(s) requested"
                         f"{first}; {len(done)} deleted now, {len(keep)} on the next tick")
    return keep


@dg.sensor(
    name="landing_sensor",
    minimum_interval_seconds=sensor_interval_seconds(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    jobs=[*(build_ingest_job(dataset) for dataset in DATASETS.values()), QUARANTINE_JOB],
    description="Starts one ingestion per new object version in the landing zone (a quarantine run for "
    "objects no dataset takes).",
)
def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZone) -> dg.SensorResult:
    cursors, after, sweep, mark = _load_cursor(context.cursor)
    queue = landing.queue
    state = json.loads(context.cursor) if context.cursor and queue else {}
    listed_at = float(state.get("listed", 0))
    if queue and state.get("receipts"):  # the last tick's requests are recorded: see _read_queue
        failed = landing.delete_messages(state["receipts"])
        if failed:
            context.log.warning(f"Could not delete {len(failed)} queue message(s) of the last tick (they "
                                f"come back and are deleted then): {failed[0]}")

    objects: dict[tuple[str, str], LandingObject] = {}

    def list_zone() -> None:
        nonlocal after, sweep, mark, listed_at
        listed_at = time.time()
        found, after, sweep, mark = _list_zone(context, landing, cursors, after, sweep, mark)
        if queue:  # versions the queue requested are found again by their folder's cursor: requested once
            found = _without_partition(context, found)
        objects.update({(obj.key, obj.etag): obj for obj in found})

    listing = not queue or time.time() - listed_at >= LISTING_INTERVAL_SECONDS
    if listing:
        list_zone()
    receipts: list[str] = []
    # No long poll once this tick has something to request: its runs should not wait for it. Messages that
    # request nothing (the copies under _archive/ and the reports every run writes) do not end the wait: a
    # drop just after them would wait for the next tick.
    deadline, batches = time.monotonic() + (0 if objects else QUEUE_WAIT_SECONDS), QUEUE_BATCHES_PER_TICK
    while queue and batches > 0:
        wait = max(0, int(deadline - time.monotonic()))  # SQS waits whole seconds
        try:
            messages = landing.receive(wait, batches)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            context.log.error(f"Could not read the landing queue {queue}: {error}; listing the zone instead")
            if not listing:
                list_zone()
            break
        receipts += _read_queue(context, landing, messages, objects)
        batches -= max(1, -(-len(messages) // 10))
        if objects or not messages or not wait:
            break

    objects = {version: obj for version, obj in objects.items() if not top_folder(obj.key).startswith("_")}
    partitions: dict[str, list[str]] = defaultdict(list)
    for obj in objects.values():
        partitions[_partitions(obj).name].append(partition_key(obj.key, obj.etag))
    return dg.SensorResult(
        run_requests=[_request(obj) for obj in objects.values()],
        dynamic_partitions_requests=[
            dg.AddDynamicPartitionsRequest(partitions_def_name=name, partition_keys=keys)
            for name, keys in partitions.items()
        ],
        # "after" is kept (the last key listed anywhere) so that an older version of the sensor reading this
        # cursor carries on where it would have. With a queue: when the zone was last listed, and the
        # receipts of the messages this tick requested (deleted by the next tick).
        cursor=json.dumps({
            "after": after, "folders": cursors, "sweep": sweep, **({"mark": mark} if mark else {}),
            **({"listed": listed_at, "receipts": receipts} if queue else {}),
        }),
    )
