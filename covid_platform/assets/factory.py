"""Every asset of a dataset, built from its declaration: (API pull →) raw files → clean table → summaries."""

import dagster as dg

from covid_platform.assets.clean import build_clean_asset, build_replay_job
from covid_platform.assets.pulls import build_pull_asset, build_pull_schedule
from covid_platform.assets.raw import build_raw_asset
from covid_platform.assets.summaries import build_summary_assets
from covid_platform.datasets import Dataset


def build_dataset_assets(dataset: Dataset) -> list[dg.AssetsDefinition]:
    pull = [build_pull_asset(dataset)] if dataset.pull else []
    return [*pull, build_raw_asset(dataset), build_clean_asset(dataset), *build_summary_assets(dataset)]


def build_dataset_jobs(dataset: Dataset) -> list:
    """Jobs started by hand (the sensor's ingestion jobs are in sensors/landing.py)."""
    return [build_replay_job(dataset)]


def build_dataset_schedules(dataset: Dataset) -> list[dg.ScheduleDefinition]:
    return [build_pull_schedule(dataset)] if dataset.pull else []
