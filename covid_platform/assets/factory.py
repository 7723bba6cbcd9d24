"""Every asset of a dataset, built from its declaration: raw files → clean table → summaries."""

import dagster as dg

from covid_platform.assets.clean import build_clean_asset
from covid_platform.assets.raw import build_raw_asset
from covid_platform.assets.summaries import build_summary_assets
from covid_platform.datasets import Dataset


def build_dataset_assets(dataset: Dataset) -> list[dg.AssetsDefinition]:
    return [build_raw_asset(dataset), build_clean_asset(dataset), *build_summary_assets(dataset)]
