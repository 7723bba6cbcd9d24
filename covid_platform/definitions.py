import dagster as dg
from dagster_aws.s3 import S3Resource

from covid_platform.assets.comparison import build_comparison_asset
from covid_platform.assets.factory import build_dataset_assets, build_dataset_jobs, build_dataset_schedules
from covid_platform.assets.report import daily_report
from covid_platform.assets.unrouted import unrouted_files
from covid_platform.datasets import DATASETS
from covid_platform.resources.http_source import HttpSources
from covid_platform.resources.landing import LandingZone
from covid_platform.resources.notifier import Notifier
from covid_platform.resources.warehouse import Warehouse
from covid_platform.sensors.alerts import freshness_alert, ingestion_failure_alert, stream_refusal_alert
from covid_platform.sensors.landing import landing_sensor

defs = dg.Definitions(
    assets=[*(asset for dataset in DATASETS.values() for asset in build_dataset_assets(dataset)), unrouted_files,
            daily_report, build_comparison_asset(DATASETS.values())],
    jobs=[job for dataset in DATASETS.values() for job in build_dataset_jobs(dataset)],
    schedules=[schedule for dataset in DATASETS.values() for schedule in build_dataset_schedules(dataset)],
    sensors=[landing_sensor, ingestion_failure_alert, freshness_alert, stream_refusal_alert],
    resources={
        # S3 endpoint, region and credentials come from the standard AWS environment variables.
        "landing": LandingZone(url=dg.EnvVar("LANDING_URL"), s3=S3Resource()),
        "warehouse": Warehouse(database_url=dg.EnvVar("DATABASE_URL")),
        "notifier": Notifier(),
        "http": HttpSources(),
    },
)
