"""Source assets for API datasets: a scheduled pull written into the landing zone as one CSV file.

The pull only lands the file; the landing sensor ingests it like any dropped file (archive, gates, merge),
so an API source gets exactly the same guarantees as a user's upload.
"""

import tempfile
from datetime import datetime, timezone

import dagster as dg

from covid_platform.assets.policies import RETRY
from covid_platform.datasets import Dataset
from covid_platform.resources.http_source import HttpSources
from covid_platform.resources.landing import LandingZone, landing_kinds

SPOOL_BYTES = 64 * 1024 * 1024  # pages stay in memory up to this size, then spill to a temporary file


def pull_asset_key(dataset: Dataset) -> dg.AssetKey:
    return dg.AssetKey(f"{dataset.name}_pull")


def build_pull_asset(dataset: Dataset) -> dg.AssetsDefinition:
    pull = dataset.pull

    @dg.asset(
        key=pull_asset_key(dataset),
        group_name="sources",
        kinds={"http", *landing_kinds()},
        retry_policy=RETRY,
        description=f"Pulls {pull.url} (or ${dataset.name.upper()}_URL) page by page into "
        f"`{dataset.name}/pull-<time>.csv` in the landing zone, where the landing sensor loads it.",
    )
    def pull_asset(context: dg.AssetExecutionContext, http: HttpSources, landing: LandingZone):
        url = http.url(dataset.name, pull.url)
        key = f"{dataset.name}/pull-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.csv"
        rows = pages = 0
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            for page, count in http.socrata_csv_pages(url, pull.columns):
                spool.write(page)
                rows, pages = rows + count, pages + 1
                context.log.info(f"page {pages}: {count} rows")
            size = spool.tell()
            spool.seek(0)
            landing.put(key, spool)
        return dg.MaterializeResult(
            metadata={"key": key, "rows": dg.MetadataValue.int(rows), "pages": dg.MetadataValue.int(pages),
                      "size": dg.MetadataValue.int(size), "url": dg.MetadataValue.url(url)}
        )

    return pull_asset


def build_pull_schedule(dataset: Dataset) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=f"{dataset.name}_daily_pull",
        target=dg.AssetSelection.assets(pull_asset_key(dataset)),
        cron_schedule=dataset.pull.cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
