"""What the assets share: retries of transient failures, freshness of the tables, the dataset tag."""

from datetime import timedelta

import dagster as dg

from covid_platform.datasets import Dataset

# A dropped connection or an S3 hiccup is retried with backoff; every step is idempotent, so a retry
# picks up from the ledger. A gate that fails is not an error and is never retried.
# Every asset, job and schedule of a dataset carries its name here: the alert sensors read it.
DATASET_TAG = "dataset"

RETRY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def freshness(dataset: Dataset) -> dg.FreshnessPolicy:
    """Stale when the dataset's last successful load is older than its declared lag."""
    return dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=dataset.freshness_hours))
