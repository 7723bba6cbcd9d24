"""The code location as a user sees it: assets, checks, jobs and sensors, `dg check defs`, dagster.yaml."""

import os
import subprocess
from pathlib import Path

import dagster as dg
from dagster_postgres import PostgresRunStorage

from covid_platform.cli import sqlalchemy_url
from covid_platform.datasets import DATASETS
from covid_platform.definitions import defs

REPO = Path(__file__).resolve().parents[1]
GATES = ["csv_readable", "required_columns", "not_empty", "keys_present", "regions_known", "dates_valid", "counts_valid",
         "keys_unique"]
WARNINGS = ["row_count_drop", "dates_ahead"]


def test_asset_graph_snapshot():
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == {
        "raw_us_states": "raw",
        "raw_us_counties": "raw",
        "raw_covidtracking": "raw",
        "raw_jhu_daily_us": "raw",
        "unrouted_files": "raw",
        "state_daily": "clean",
        "county_daily": "clean",
        "testing_daily": "clean",
        "jhu_state_daily": "clean",
        "national_daily": "summaries",
        "testing_state_summary": "summaries",
        "testing_outcome_totals": "summaries",
        "raw_cps_schools": "raw",
        "school_cases": "clean",
        "school_summary": "summaries",
        "pcr_testing_pull": "sources",
        "us_states_pull": "sources",  # CsvDownload pulls (test_csv_download.py)
        "us_counties_pull": "sources",
        "cps_schools_pull": "sources",
        "raw_pcr_testing": "raw",
        "pcr_testing_daily": "clean",
        "pcr_outcome_totals": "summaries",
        "pcr_state_results": "summaries",
        "pcr_smoothed": "summaries",
        "pcr_state_totals": "summaries",
        "source_comparison": "summaries",  # NYT, JHU and COVID Tracking side by side
        "daily_report": "reports",
    }
    parents = {key.to_user_string(): sorted(p.to_user_string() for p in graph.get(key).parent_keys)
               for key in graph.get_all_asset_keys()}
    assert parents["state_daily"] == ["raw_us_states"]
    assert parents["county_daily"] == ["raw_us_counties"]
    assert parents["national_daily"] == ["state_daily"]
    assert parents["testing_state_summary"] == ["testing_daily"]
    assert parents["testing_outcome_totals"] == ["testing_state_summary"]
    assert parents["daily_report"] == ["national_daily", "state_daily", "testing_daily", "testing_state_summary"]


def test_gates_are_blocking_checks_and_warnings_are_not():
    for dataset in ("us_states", "us_counties", "covidtracking", "jhu_daily_us", "cps_schools", "pcr_testing"):
        specs = {spec.name: spec for spec in defs.resolve_assets_def(f"raw_{dataset}").check_specs}
        warnings = WARNINGS + (["wide_total_matches"] if dataset == "cps_schools" else [])
        assert sorted(specs) == sorted(GATES + warnings)
        assert all(specs[name].blocking for name in GATES)
        assert not any(specs[name].blocking for name in warnings)
        (clean,) = defs.resolve_asset_graph().get(dg.AssetKey(f"raw_{dataset}")).child_keys
        revisions = [spec.name for spec in defs.resolve_assets_def(clean).check_specs]
        assert revisions == (["cumulative_revisions"] if DATASETS[dataset].new else [])


def test_clean_and_summary_tables_have_a_26_hour_freshness_policy():
    graph = defs.resolve_asset_graph()
    for name in ("state_daily", "county_daily", "national_daily", "testing_daily", "testing_state_summary"):
        policy = graph.get(dg.AssetKey(name)).freshness_policy
        assert policy.fail_window.to_timedelta().total_seconds() == 26 * 3600


def test_jobs_and_sensors():
    repo = defs.get_repository_def()
    assert {"ingest_us_states", "ingest_us_counties", "ingest_covidtracking", "ingest_jhu_daily_us"} <= {
        job.name for job in repo.get_all_jobs()
    }
    sensors = {sensor.name: sensor for sensor in repo.sensor_defs}
    assert set(sensors) == {"landing_sensor", "ingestion_failure_alert", "freshness_alert", "stream_refusal_alert"}
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in sensors.values())
    assert sensors["landing_sensor"].minimum_interval_seconds <= 10


def test_dg_check_defs(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    dg_cli = Path(os.sys.executable).with_name("dg")
    done = subprocess.run([dg_cli, "check", "defs"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "All definitions loaded successfully" in done.stdout + done.stderr


def test_dg_check_defs_in_the_repo_root_needs_no_environment(tmp_path):
    """As typed in a fresh shell: no DAGSTER_HOME, DAGSTER_PG_URL, DATABASE_URL or LANDING_URL. dg then builds
    a temporary instance from the working directory, which holds no dagster.yaml (it is the package's)."""
    dg_cli = Path(os.sys.executable).with_name("dg")
    env = {"PATH": f"{dg_cli.parent}:/usr/bin:/bin", "HOME": str(tmp_path), "VIRTUAL_ENV": str(dg_cli.parent.parent)}
    done = subprocess.run([dg_cli, "check", "defs"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "All definitions loaded successfully" in done.stdout + done.stderr
    assert not (REPO / "dagster.yaml").exists()


def test_dagster_yaml_stores_runs_in_postgres(database_url, monkeypatch):
    monkeypatch.setenv("DAGSTER_PG_URL", sqlalchemy_url(database_url))
    with dg.DagsterInstance.from_config(str(REPO / "covid_platform")) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_retries_enabled
