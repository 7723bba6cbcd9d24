"""The landing sensor ticked as the daemon ticks it: a real instance, S3 over HTTP (moto), the cursor carried
from tick to tick, and each tick's dynamic partitions added to the instance before the next (the sweep
consults them)."""

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import botocore.exceptions
import dagster as dg
import pytest

from covid_platform.assets.raw import ETAG_TAG, KEY_TAG
from covid_platform.engine.ledger import partition_key
from covid_platform.resources.landing import LandingZone
from covid_platform_tests import helpers
from covid_platform_tests.helpers import REPOSITORY, tick, tick_until_quiet

PREFIX = "drops/"  # the `landing` fixture's zone is s3://<bucket>/drops


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def put(s3_client, bucket):
    """Drop bytes at a dataset key (relative to the zone); returns the object's ETag."""

    def put_object(key: str, body: bytes | None = None) -> str:
        body = body if body is not None else f"date,state,fips,cases,deaths\n# {key}\n".encode()
        return s3_client.put_object(Bucket=bucket, Key=PREFIX + key, Body=body)["ETag"].strip('"')

    return put_object


def requested_keys(result) -> list[str]:
    return [request.tags[KEY_TAG] for request in result.run_requests]


def test_new_keys_become_one_run_request_each(instance, landing, put):
    etags = {
        "us_states/2021-01-01.csv": put("us_states/2021-01-01.csv", b"date,state\n2021-01-01,A\n"),
        "us_states/2021-01-02.csv": put("us_states/2021-01-02.csv", b"date,state\n2021-01-02,A\n"),
        "us_counties/2021-01-01.csv": put("us_counties/2021-01-01.csv", b"date,county\n2021-01-01,B\n"),
    }

    result, cursor = tick(instance, landing, None)

    by_key = {request.tags[KEY_TAG]: request for request in result.run_requests}
    assert len(result.run_requests) == 3 and set(by_key) == set(etags)
    for key, etag in etags.items():
        request = by_key[key]
        assert request.job_name == f"ingest_{key.split('/')[0]}"
        assert request.partition_key == partition_key(key, etag)
        assert request.tags == {KEY_TAG: key, ETAG_TAG: etag}
        assert etag in request.run_key and key in request.run_key
    assert len({request.run_key for request in result.run_requests}) == 3

    partitions = {r.partitions_def_name: sorted(r.partition_keys) for r in result.dynamic_partitions_requests}
    expected = {"us_states_files": [], "us_counties_files": []}
    for key, etag in etags.items():
        expected[f"{key.split('/')[0]}_files"].append(partition_key(key, etag))
    assert partitions == {name: sorted(keys) for name, keys in expected.items()}
    # Every requested partition exists in the job's partitions definition once the daemon has added it.
    for request in result.run_requests:
        partitions_def = REPOSITORY.get_job(request.job_name).partitions_def
        assert request.partition_key in partitions_def.get_partition_keys(dynamic_partitions_store=instance)
    # S3 lists us_counties/ before us_states/: the cursor is the last key listed.
    assert json.loads(cursor)["after"] == "us_states/2021-01-02.csv"


def test_cursor_requests_nothing_twice_then_only_the_new_key(instance, landing, put):
    put("us_states/a.csv")
    put("us_states/b.csv")
    result, cursor = tick(instance, landing, None)
    assert sorted(requested_keys(result)) == ["us_states/a.csv", "us_states/b.csv"]

    result, cursor = tick(instance, landing, cursor)
    assert result.run_requests == []
    assert result.dynamic_partitions_requests == []

    etag = put("us_states/c.csv")
    result, cursor = tick(instance, landing, cursor)
    assert [(r.tags[KEY_TAG], r.tags[ETAG_TAG]) for r in result.run_requests] == [("us_states/c.csv", etag)]
    assert json.loads(cursor)["after"] == "us_states/c.csv"

    result, cursor = tick(instance, landing, cursor)
    assert result.run_requests == []


def test_more_than_a_thousand_keys_are_each_requested_once(instance, landing, put):
    keys = [f"us_states/f{i:05d}.csv" for i in range(1205)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        etags = dict(zip(keys, pool.map(put, keys)))

    requests, counts, cursor = tick_until_quiet(instance, landing, None)

    assert counts[:2] == [1000, 205] and set(counts[2:]) == {0}, counts
    assert len(requests) == len(keys)
    assert sorted(r.tags[KEY_TAG] for r in requests) == keys
    assert len({r.run_key for r in requests}) == len(keys)
    assert all(r.partition_key == partition_key(r.tags[KEY_TAG], etags[r.tags[KEY_TAG]]) for r in requests)
    assert len(instance.get_dynamic_partitions("us_states_files")) == len(keys)

    # Caught up: the cursor sits on the last key, so the next listing starts after it (not from the top),
    # and a new key is the only thing a tick requests.
    assert json.loads(cursor)["after"] == keys[-1]
    new = "us_states/f01205.csv"
    put(new)
    result, cursor = tick(instance, landing, cursor)
    assert requested_keys(result) == [new]
    assert json.loads(cursor)["after"] == new
    requests, counts, cursor = tick_until_quiet(instance, landing, cursor)
    assert requests == []


def test_same_bytes_again_is_ignored_new_bytes_are_a_new_version(instance, landing, put):
    key = "us_states/a.csv"
    first = put(key, b"date,state,fips,cases,deaths\n2021-01-01,Alabama,01,1,0\n")
    put("us_states/b.csv")  # the cursor moves past `key`
    requests, _, cursor = tick_until_quiet(instance, landing, None)
    first_request = next(r for r in requests if r.tags[KEY_TAG] == key)
    assert json.loads(cursor)["after"] == "us_states/b.csv"

    # Identical bytes uploaded again: same ETag, same version, no new run.
    assert put(key, b"date,state,fips,cases,deaths\n2021-01-01,Alabama,01,1,0\n") == first
    requests, _, cursor = tick_until_quiet(instance, landing, cursor)
    assert requests == []

    # New bytes under the same key, which sorts before the cursor: the sweep finds the new version.
    second = put(key, b"date,state,fips,cases,deaths\n2021-01-01,Alabama,01,2,0\n")
    assert second != first
    found = []
    for _ in range(5):
        result, cursor = tick(instance, landing, cursor)
        found += result.run_requests
        if found:
            break
    assert [r.tags[KEY_TAG] for r in found] == [key]
    again = found[0]
    assert again.tags[ETAG_TAG] == second and second in again.run_key
    assert again.partition_key == partition_key(key, second) != first_request.partition_key
    assert again.run_key != first_request.run_key
    requests, _, cursor = tick_until_quiet(instance, landing, cursor)
    assert requests == []


def test_late_upload_before_the_cursor_is_found_by_the_sweep(instance, landing, put):
    put("us_states/2021-01-02.csv")
    put("us_states/2021-01-03.csv")
    requests, _, cursor = tick_until_quiet(instance, landing, None)
    assert len(requests) == 2

    late = "us_states/2021-01-01.csv"
    etag = put(late)
    assert late < json.loads(cursor)["after"]
    found = []
    for _ in range(5):
        result, cursor = tick(instance, landing, cursor)
        found += result.run_requests
        if found:
            break
    assert [(r.tags[KEY_TAG], r.partition_key) for r in found] == [(late, partition_key(late, etag))]
    requests, _, cursor = tick_until_quiet(instance, landing, cursor)
    assert requests == []


def test_keys_no_dataset_takes_get_a_quarantine_run(instance, landing, put):
    unrouted = [
        "us_states/notes.txt",  # not a .csv
        "unknown_dataset/2021-01-01.csv",  # no such dataset
        "2021-01-01.csv",  # not under a dataset prefix
    ]
    platform = [  # the platform's own copies: never requested
        "_archive/us_states/2021-01-01.csv/0123abcd",
        "_archive/us_states/old.csv",
        "_quarantine/us_states/bad.csv/4567ef01",
        "_quarantine/us_states/bad.csv/4567ef01.reason.txt",
        "_quarantine/us_states/bad.csv",
    ]
    etags = {key: put(key) for key in unrouted + platform}
    wanted = {key: put(key) for key in ("us_states/2021-01-01.csv", "us_states/2021-01-02.csv.gz")}

    requests, _, cursor = tick_until_quiet(instance, landing, None)
    late = put("us_states/zzz.txt")  # after the cursor too
    more, _, cursor = tick_until_quiet(instance, landing, cursor)

    jobs = {(r.tags[KEY_TAG], r.tags[ETAG_TAG]): r.job_name for r in requests + more}
    assert jobs == {
        **{(key, etag): "ingest_us_states" for key, etag in wanted.items()},
        **{(key, etags[key]): "quarantine_unrouted" for key in unrouted},
        ("us_states/zzz.txt", late): "quarantine_unrouted",
    }
    assert set(instance.get_dynamic_partitions("unrouted_files")) == {
        r.partition_key for r in requests + more if r.job_name == "quarantine_unrouted"
    }


def test_a_misplaced_file_dropped_behind_the_cursor_is_quarantined(instance, landing, put):
    put("us_states/2021-01-01.csv")
    _, cursor = tick(instance, landing, None)

    etag = put("states/2021-01-02.csv")  # a typo in the dataset folder; sorts before the cursor
    requests, _, cursor = tick_until_quiet(instance, landing, cursor)

    assert [(r.tags[KEY_TAG], r.tags[ETAG_TAG], r.job_name) for r in requests] == [
        ("states/2021-01-02.csv", etag, "quarantine_unrouted")
    ]
    again, _, _ = tick_until_quiet(instance, landing, cursor)  # a full sweep later: requested once only
    assert again == []


def test_unrouted_file_is_archived_quarantined_and_alerted(landing, resources, query, s3_client, bucket):
    from covid_platform.assets.unrouted import UNROUTED, unrouted_files

    key = "states/2021-01-02.csv"
    landing.put(key, io.BytesIO(b"date,state\n"))
    etag = landing.describe(key).etag
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(UNROUTED.name, [partition_key(key, etag)])
        result = dg.materialize([unrouted_files], partition_key=partition_key(key, etag), instance=instance,
                                resources=resources, tags={KEY_TAG: key, ETAG_TAG: etag}, raise_on_error=False)
    assert not result.success
    ((check,),) = [result.get_asset_check_evaluations()]
    assert (check.check_name, check.passed) == ("known_dataset", False)
    ((status, reason, dataset),) = query("SELECT status, reason, dataset FROM covid.ingested_files")
    assert (status, dataset) == ("quarantined", "states")
    assert "no dataset is named by the key's first folder (under 'states'/)" in reason
    assert "us_states" in reason and reason == check.description
    body = s3_client.get_object(Bucket=bucket, Key=f"{PREFIX}_quarantine/{key}/{etag}")["Body"].read()
    assert body == b"date,state\n"
    reason_txt = s3_client.get_object(Bucket=bucket, Key=f"{PREFIX}_quarantine/{key}/{etag}.reason.txt")
    assert reason_txt["Body"].read().decode() == reason + "\n"


def test_uploads_within_the_same_second_are_all_requested(instance, landing, put, s3_client, bucket):
    put("us_states/m.csv")
    _, cursor = tick(instance, landing, None)

    # Start at the top of a second so the whole batch lands within it; keys fall on both sides of the cursor.
    time.sleep(1 - time.time() % 1 + 0.01)
    batch = ["us_states/a.csv", "us_states/n1.csv", "us_states/n2.csv", "us_counties/x.csv",
             "us_states/z.csv"]
    with ThreadPoolExecutor(max_workers=len(batch)) as pool:
        etags = dict(zip(batch, pool.map(put, batch)))
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=PREFIX)["Contents"]
    seconds = {
        item["LastModified"].replace(microsecond=0) for item in listed if item["Key"][len(PREFIX) :] in batch
    }
    assert len(seconds) == 1, f"the batch straddled a second: {seconds}"

    requests, _, cursor = tick_until_quiet(instance, landing, cursor)
    assert sorted((r.tags[KEY_TAG], r.tags[ETAG_TAG]) for r in requests) == sorted(etags.items())


def test_one_tick_then_its_run_loads_the_file(instance, landing, resources, query, put):
    key = "us_states/2020-12.csv"
    etag = put(key, helpers.nyt_states_slice("2020-12-01", "2020-12-31"))

    result, _ = tick(instance, landing, None)
    [request] = result.run_requests
    assert request.job_name == "ingest_us_states"

    run = dg.materialize(
        helpers.ASSETS,
        selection=dg.AssetSelection.assets("raw_us_states").downstream(),
        partition_key=request.partition_key,
        tags=request.tags,
        instance=instance,
        resources=resources,
    )
    assert run.success
    assert query(
        "SELECT key, etag, partition_key, status FROM covid.ingested_files WHERE key = %s", (key,)
    ) == [(key, etag, request.partition_key, "loaded")]
    assert query("SELECT count(*) > 0 FROM covid.state_daily") == [(True,)]


# A failed run and retries. What the platform does:
# - Every step (raw, clean, summaries) has a RetryPolicy (assets/policies.py: 3 retries, exponential backoff
#   from 2 s): an S3 or PostgreSQL hiccup inside a step is retried within the same run. Steps are idempotent:
#   the ledger row stays 'received' until the file is staged, so the retry ingests the file again.
# - A gate that fails is not retried, nor is a vanished object version (both dg.Failure(allow_retries=False)):
#   a newer version of the key has its own partition and run; the daemon's run retry of a quarantined
#   partition fails with the ledger's reason without re-gating (test_ui.py).
# - dagster.yaml's run_retries (max 2) has retry_on_asset_or_op_failure: false: only runs whose worker
#   crashed are re-launched by the daemon.
# - The sensor never requests a file version again, whatever its run's outcome: its run_key `<key>@<etag>`
#   was used (the daemon skips a run_key it has already seen) and its partition exists, so the sweep does not
#   count it as missed. A run that failed for good is re-executed by hand (UI "Re-execute" or a backfill of
#   the partition): with the sensor's tags or without them, the raw step finds the key and ETag (tags, else
#   the ledger row written before the failure).
@pytest.fixture
def flaky_copy(monkeypatch):
    """Make the next `failures[0]` archive copies fail as an unreachable S3 endpoint would."""
    failures = [0]
    copy = LandingZone.copy

    def flaky(self, *args, **kwargs):
        if failures[0]:
            failures[0] -= 1
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3.invalid")
        return copy(self, *args, **kwargs)

    monkeypatch.setattr(LandingZone, "copy", flaky)
    return failures


def step_events(run, event_type: dg.DagsterEventType, step: str = "raw_us_states") -> int:
    return sum(1 for e in run.all_events if e.event_type == event_type and e.step_key == step)


def test_a_transient_s3_failure_is_retried_within_the_run(
    instance, landing, resources, query, put, flaky_copy
):
    key = "us_states/2020-12.csv"
    put(key, helpers.nyt_states_slice("2020-12-01", "2020-12-03"))
    result, cursor = tick(instance, landing, None)
    [request] = result.run_requests

    flaky_copy[0] = 1
    run = dg.materialize(
        helpers.ASSETS,
        selection=dg.AssetSelection.assets("raw_us_states").downstream(),
        partition_key=request.partition_key,
        tags=request.tags,
        instance=instance,
        resources=resources,
    )
    assert run.success
    assert step_events(run, dg.DagsterEventType.STEP_UP_FOR_RETRY) == 1
    assert query("SELECT status FROM covid.ingested_files WHERE key = %s", (key,)) == [("loaded",)]
    requests, _, cursor = tick_until_quiet(instance, landing, cursor)
    assert requests == []


def test_a_failed_run_is_not_requested_again_but_can_be_re_executed(
    instance, landing, resources, query, put, flaky_copy
):
    key = "us_states/2020-12.csv"
    put(key, helpers.nyt_states_slice("2020-12-01", "2020-12-03"))
    result, cursor = tick(instance, landing, None)
    [request] = result.run_requests
    run_args = dict(
        selection=dg.AssetSelection.assets("raw_us_states").downstream(),
        partition_key=request.partition_key,
        tags=request.tags,
        instance=instance,
        resources=resources,
    )

    flaky_copy[0] = 4  # S3 unreachable for longer than the step's retries (1 attempt + 3 retries)
    failed = dg.materialize(helpers.ASSETS, raise_on_error=False, **run_args)
    assert not failed.success
    assert step_events(failed, dg.DagsterEventType.STEP_UP_FOR_RETRY) == 3
    assert query("SELECT status FROM covid.ingested_files WHERE key = %s", (key,)) == [("received",)]

    # The sensor does not ask for this version again: retrying a failed run is the operator's call.
    requests, _, cursor = tick_until_quiet(instance, landing, cursor)
    assert requests == []

    # What "Re-execute" launches: the same partition with the same tags.
    retried = dg.materialize(helpers.ASSETS, **run_args)
    assert retried.success
    assert query("SELECT status FROM covid.ingested_files WHERE key = %s", (key,)) == [("loaded",)]


def test_a_drop_in_a_folder_sorting_before_the_last_key_is_requested_on_the_next_tick(instance, landing, put):
    # More than a page of objects, already requested: the zone as a running platform leaves it.
    keys = [f"us_states/nyt-{i:05d}.csv" for i in range(1100)] + ["us_states/zz.csv"]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, keys))
    requests, _, cursor = tick_until_quiet(instance, landing, None)
    assert len(requests) == len(keys)
    state = json.loads(cursor)
    assert state["after"] == "us_states/zz.csv" == state["folders"]["us_states/"]

    # Each sorts before the last key seen; the sweep is put past them, so only their folders' cursors can
    # find them.
    batch = "us_states/stream/20210101T000000.000000Z-b-000001.csv"
    new = {key: put(key) for key in ("us_counties/2021-01-01.csv", batch, "us_states/nyt-01100a.csv")}
    result, cursor = tick(instance, landing, json.dumps({**state, "sweep": "us_states/zz.csv"}))
    assert sorted((r.tags[KEY_TAG], r.tags[ETAG_TAG], r.job_name) for r in result.run_requests) == sorted([
        ("us_counties/2021-01-01.csv", new["us_counties/2021-01-01.csv"], "ingest_us_counties"),
        (batch, new[batch], "ingest_us_states"),
    ]), "us_states/nyt-01100a.csv sorts before the dataset's last key: the sweep's"
    folders = json.loads(cursor)["folders"]
    assert folders["us_states/stream/"] == batch
    assert folders["us_states/"] == "us_states/zz.csv", "the dataset's folder skips its stream folder"
    assert folders["us_counties/"] == "us_counties/2021-01-01.csv"
    found = []
    for _ in range(4):  # the sweep: from the top again, a page per tick
        result, cursor = tick(instance, landing, cursor)
        found += requested_keys(result)
    assert found == ["us_states/nyt-01100a.csv"]


def test_one_folders_backlog_does_not_delay_another_folders_new_file(instance, landing, put):
    backlog = [f"us_states/f{i:05d}.csv" for i in range(1500)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, backlog))
    put("us_counties/new.csv")

    result, cursor = tick(instance, landing, None)

    assert len(result.run_requests) == 1000
    assert "us_counties/new.csv" in requested_keys(result)
    requests, counts, cursor = tick_until_quiet(instance, landing, cursor)
    assert counts[0] == 501 and sorted(r.tags[KEY_TAG] for r in requests) == backlog[999:]


def test_a_cursor_from_before_folders_had_their_own_still_works(instance, landing, put):
    for key in ("us_counties/a.csv", "us_states/a.csv", "us_states/b.csv"):
        put(key)
    requests, _, _ = tick_until_quiet(instance, landing, None)  # every version has its partition
    assert len(requests) == 3
    old = json.dumps({"after": "us_states/b.csv", "sweep": ""})  # the one-cursor format

    result, cursor = tick(instance, landing, old)
    assert result.run_requests == [], "nothing listed before is requested again"
    late = put("us_counties/b.csv")  # behind the old cursor, in a folder listed from its start
    put("us_states/c.csv")
    result, cursor = tick(instance, landing, cursor)
    assert sorted((r.tags[KEY_TAG], r.tags[ETAG_TAG]) for r in result.run_requests)[0] == ("us_counties/b.csv", late)
    assert sorted(requested_keys(result)) == ["us_counties/b.csv", "us_states/c.csv"]
    state = json.loads(cursor)
    assert "mark" not in state and state["folders"]["us_counties/"] == "us_counties/b.csv"
    assert state["after"] == "us_states/c.csv"
