"""What the UI shows is true (tracker issue 10, part 4): a quarantined file's partition is failed, not
materialized, with its reason; a loaded file's partition says `loaded`; a check that was not evaluated is
not reported; the raw assets' kinds name the landing zone in use; an API pull is upstream of its raw asset."""

import dagster as dg
from dagster._core.storage.partition_status_cache import AssetPartitionStatus

from covid_platform.assets.docs import OWNERS
from covid_platform.assets.raw import ETAG_TAG, KEY_TAG, build_raw_asset, files_partitions
from covid_platform.compat import RETRY_NUMBER_TAG
from covid_platform.datasets import DATASETS
from covid_platform.definitions import defs
from covid_platform.engine import intake
from covid_platform.engine.gates import GATES
from covid_platform.engine.ledger import partition_key
from covid_platform_tests.helpers import ASSETS, drop, ingest, negative_cases, nyt_states_slice

STATES = DATASETS["us_states"]
RAW = dg.AssetKey("raw_us_states")
GOOD = nyt_states_slice("2021-01-01", "2021-01-03", {"Ohio", "Utah"})
NEGATIVE = GOOD.replace(b",Ohio,39,", b",Ohio,39,-", 1)  # 1 bad row in 6: quarantined by counts_valid


def partition_status(instance, landing, key: str) -> AssetPartitionStatus:
    partition = partition_key(key, landing.describe(key).etag)
    return instance.get_status_by_partition(RAW, [partition], files_partitions(STATES))[partition]


def step_failure(result, step: str = "raw_us_states"):
    (event,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE and e.step_key == step]
    return event.event_specific_data


def test_a_quarantined_partition_is_failed_with_its_reason_and_never_re_gated(landing, resources, query, monkeypatch):
    key = drop(landing, "us_states/bad.csv", NEGATIVE)
    with dg.instance_for_test() as instance:
        result = ingest(landing, resources, key, instance)
        ((status, reason),) = query("SELECT status, reason FROM covid.ingested_files")
        assert (result.success, status) == (False, "quarantined")
        assert partition_status(instance, landing, key) == AssetPartitionStatus.FAILED
        assert result.get_asset_materialization_events() == []
        failure = step_failure(result)
        assert failure.user_failure_data.description == reason
        assert failure.user_failure_data.metadata["reason"].value == reason
        assert failure.user_failure_data.metadata["status"].value == "quarantined"
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert evaluations["counts_valid"].description == reason and not evaluations["counts_valid"].passed
        # the step's RetryPolicy did not run the gates again
        assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]

        # The daemon's run retry (dagster.yaml: run_retries) fails again with the same reason, without gating
        # the file again. (A run a person starts does gate it again: test_empty_counts.py.)
        gated = []
        monkeypatch.setattr(intake, "gate_archived", lambda *args: gated.append(args))
        etag = landing.describe(key).etag
        again = dg.materialize(
            ASSETS, selection=dg.AssetSelection.assets(RAW).downstream(), partition_key=partition_key(key, etag),
            instance=instance, resources=resources, raise_on_error=False,
            tags={KEY_TAG: key, ETAG_TAG: etag, RETRY_NUMBER_TAG: "1"},
        )
        assert not again.success and gated == []
        assert step_failure(again).user_failure_data.description == reason
        assert again.get_asset_check_evaluations() == []
        assert partition_status(instance, landing, key) == AssetPartitionStatus.FAILED


def test_a_loaded_partition_says_loaded(landing, resources):
    key = drop(landing, "us_states/good.csv", GOOD)
    with dg.instance_for_test() as instance:
        result = ingest(landing, resources, key, instance)
        assert result.success
        assert partition_status(instance, landing, key) == AssetPartitionStatus.MATERIALIZED
        (raw,) = [e.materialization for e in result.get_asset_materialization_events() if e.asset_key == RAW]
        assert raw.metadata["status"].value == "passed the gates; merged into covid.state_daily by the next step"
        records = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=RAW, asset_partitions=[raw.partition]), limit=1
        ).records
        latest = records[0].asset_observation
        assert latest.metadata["status"].value == "loaded"
        assert latest.metadata["rows_loaded"].value == 6


def test_checks_that_were_not_evaluated_are_not_reported(landing, resources):
    with dg.instance_for_test() as instance:
        unreadable = ingest(landing, resources, drop(landing, "us_states/empty.csv", b""), instance)
        assert [e.check_name for e in unreadable.get_asset_check_evaluations()] == ["csv_readable"]

        assert ingest(landing, resources, drop(landing, "us_states/a.csv", GOOD), instance).success
        twin = ingest(landing, resources, drop(landing, "us_states/twin.csv", GOOD), instance)  # duplicate
        assert twin.success
        reported = {e.check_name: e.passed for e in twin.get_asset_check_evaluations()}
        assert "row_count_drop" not in reported  # skipped, not passed: a duplicate is not compared
        assert all(reported.values())


def test_a_loaded_partition_run_again_reports_its_gates_as_they_were(landing, resources):
    """Not gated again, a loaded file's partition run again (a backfill, a re-execution) reports each gate as
    its first run did: the row gate that set a row aside warns again, never "passed"."""
    rows = nyt_states_slice("2021-01-01", "2021-01-05")
    assert rows.count(b"\n") > 100  # one bad row of more than 100 is set aside, not a quarantine
    key = drop(landing, "us_states/one-bad.csv", negative_cases(rows, [3]))
    with dg.instance_for_test() as instance:
        first = ingest(landing, resources, key, instance)
        again = ingest(landing, resources, key, instance)
    assert first.success and again.success
    then = {e.check_name: (e.passed, e.severity) for e in first.get_asset_check_evaluations() if e.check_name in GATES}
    now = {e.check_name: (e.passed, e.severity) for e in again.get_asset_check_evaluations() if e.check_name in GATES}
    assert then["counts_valid"] == (False, dg.AssetCheckSeverity.WARN)
    assert now == then
    (counts,) = [e for e in again.get_asset_check_evaluations() if e.check_name == "counts_valid"]
    assert counts.description.startswith("as when the file was first loaded: ") and "line 3" in counts.description


def test_a_partition_run_again_reports_its_warnings_as_they_were(landing, resources):
    """A file whose warnings warned (a day 15 days past the table's latest, a fifth of the previous file's
    rows) run again reports them as they were, not skipped, and not compared again with what loaded since."""
    first = nyt_states_slice("2021-01-01", "2021-01-05")
    late = nyt_states_slice("2021-01-20", "2021-01-20")
    with dg.instance_for_test() as instance:
        assert ingest(landing, resources, drop(landing, "us_states/first.csv", first), instance).success
        key = drop(landing, "us_states/late.csv", late)
        then = ingest(landing, resources, key, instance)
        again = ingest(landing, resources, key, instance)

    def warnings(result):
        return {e.check_name: (e.passed, e.severity, e.description) for e in result.get_asset_check_evaluations()
                if e.asset_key == RAW and e.check_name not in GATES}

    assert {name for name, (passed, _, _) in warnings(then).items() if not passed} == {"row_count_drop", "dates_ahead"}
    assert {name: (passed, severity) for name, (passed, severity, _) in warnings(again).items()} == {
        name: (passed, severity) for name, (passed, severity, _) in warnings(then).items()}
    for name, (_, _, description) in warnings(again).items():
        said = warnings(then)[name][2]
        assert description == (f"as when the file was first loaded: {said}" if said else
                               "checked when the file was first loaded")


def test_raw_assets_carry_the_kind_of_the_landing_zone_in_use(monkeypatch):
    monkeypatch.setenv("LANDING_URL", "file:///tmp/landing")
    assert build_raw_asset(STATES).specs_by_key[RAW].kinds == {"postgres"}
    monkeypatch.setenv("LANDING_URL", "s3://bucket/drops")
    assert build_raw_asset(STATES).specs_by_key[RAW].kinds == {"postgres", "s3"}


def test_an_api_pull_is_upstream_of_its_raw_asset_but_not_in_the_sensors_runs():
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("raw_pcr_testing")).parent_keys == {dg.AssetKey("pcr_testing_pull")}
    ingest_job = defs.resolve_job_def("ingest_pcr_testing")
    assert dg.AssetKey("pcr_testing_pull") not in ingest_job.asset_layer.selected_asset_keys
    assert dg.AssetKey("raw_pcr_testing") in ingest_job.asset_layer.selected_asset_keys


def test_the_lineage_reads_as_the_data_dictionary(landing, resources, query):
    """Every asset says what it is, who owns it and which layer it is; a clean table's column schema names
    each column PostgreSQL has, with its meaning; a materialization carries the table's row count."""
    layers = {"sources", "raw", "clean", "summaries", "reports"}
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description and node.owners == OWNERS and node.group_name in layers, key

    key = drop(landing, "us_states/good.csv", GOOD)
    with dg.instance_for_test() as instance:
        result = ingest(landing, resources, key, instance)
    assert result.success
    schema = graph.get(dg.AssetKey("state_daily")).metadata["dagster/column_schema"]
    in_postgres = query("SELECT column_name FROM information_schema.columns WHERE table_schema = 'covid' "
                        "AND table_name = 'state_daily' ORDER BY ordinal_position")
    assert [c.name for c in schema.columns] == [name for (name,) in in_postgres]
    assert all(c.description for c in schema.columns)
    materialized = {e.materialization.asset_key.to_user_string(): e.materialization.metadata
                    for e in result.get_asset_materialization_events()}
    for table in ("state_daily", "national_daily"):
        rows = query(f"SELECT count(*) FROM covid.{table}")[0][0]
        assert materialized[table]["dagster/row_count"].value == rows > 0
    assert materialized["national_daily"]["dashboard"].value == "http://127.0.0.1:8501/"
    assert materialized["state_daily"]["dashboard"].value == "http://127.0.0.1:8501/states"
