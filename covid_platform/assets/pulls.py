"""Source assets: a scheduled pull writes a source into the landing zone as one CSV file.

Two kinds (`Dataset.pull`): a Socrata API paged into one file (`SocrataPull`), and a file its publisher
updates in place at a URL (`CsvDownload`), landed only when it changed. The pull only lands the file; the
landing sensor ingests it like any dropped file (archive, gates, merge), so a pulled source gets exactly the
same guarantees as a user's upload.
"""

import hashlib
import os
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import BinaryIO

import dagster as dg
import requests

from covid_platform.assets.docs import OWNERS
from covid_platform.assets.policies import DATASET_TAG, RETRY
from covid_platform.datasets import CsvDownload, Dataset
from covid_platform.engine.staging import GZIP_MAGIC
from covid_platform.resources.http_source import RETRIED_STATUSES, HttpSources, NotAFile, Validators
from covid_platform.resources.landing import LandingZone, landing_kinds
from covid_platform.resources.warehouse import Warehouse

SPOOL_BYTES = 64 * 1024 * 1024  # a pull stays in memory up to this size, then spills to a temporary file
# `on`: every pull's schedule runs by default (one also runs when its `<DATASET>_URL` is set)
PULLS_SWITCH = "COVID_PULLS"


def pull_asset_key(dataset: Dataset) -> dg.AssetKey:
    return dg.AssetKey(f"{dataset.name}_pull")


def _pull_asset(dataset: Dataset, description: str):
    """The decorator both kinds share: the key the raw asset depends on (lineage), the dataset tag the
    failure alert reads, retries of a failed landing."""
    return dg.asset(
        key=pull_asset_key(dataset),
        group_name="sources",
        owners=OWNERS,
        kinds={"http", *landing_kinds()},
        tags={DATASET_TAG: dataset.name},
        retry_policy=RETRY,
        # materialized when a file is landed; a download that finds the file unchanged is an observation
        output_required=False,
        description=f"{description} into `{dataset.name}/pull-<time>.csv` in the landing zone, where the "
        "landing sensor loads it.",
    )


@contextmanager
def _failing_clearly(url: str):
    """An HTTP error, after HttpSources' retries with backoff, as a step failure naming the URL (its message
    is the alert's reason). Not retried again by the step's policy: that would only repeat the backoff."""
    try:
        yield
    except requests.RequestException as error:
        status = error.response.status_code if error.response is not None else None
        once = isinstance(error, NotAFile) or (status is not None and status not in RETRIED_STATUSES)
        how = "(not retried: a later try would get the same answer)" if once else "after retries with backoff"
        raise dg.Failure(f"GET {url} failed {how}: {error}", allow_retries=False) from error


def _land(landing: LandingZone, dataset: Dataset, spool: BinaryIO) -> tuple[str, int]:
    """Lands a whole, checked file as `<dataset>/pull-<UTC time>.csv` (`.csv.gz` for gzip bytes): the
    landing zone never sees a part of one. Returns its key and size."""
    size = spool.seek(0, os.SEEK_END)
    spool.seek(0)
    suffix = ".csv.gz" if spool.read(len(GZIP_MAGIC)) == GZIP_MAGIC else ".csv"
    spool.seek(0)
    key = f"{dataset.name}/pull-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}{suffix}"
    landing.put(key, spool)
    return key, size


def build_pull_asset(dataset: Dataset) -> dg.AssetsDefinition:
    if isinstance(dataset.pull, CsvDownload):
        return _build_download_asset(dataset)
    pull = dataset.pull

    @_pull_asset(dataset, f"Pulls {pull.url} (or ${dataset.name.upper()}_URL) page by page")
    def pull_asset(context: dg.AssetExecutionContext, http: HttpSources, landing: LandingZone):
        url = http.url(dataset.name, pull.url)
        rows = pages = 0
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            with _failing_clearly(url):
                for page, count in http.socrata_csv_pages(url, pull.columns):
                    spool.write(page)
                    rows, pages = rows + count, pages + 1
                    context.log.info(f"page {pages}: {count} rows")
            key, size = _land(landing, dataset, spool)
        yield dg.MaterializeResult(
            metadata={"key": key, "rows": dg.MetadataValue.int(rows), "pages": dg.MetadataValue.int(pages),
                      "size": dg.MetadataValue.int(size), "url": dg.MetadataValue.url(url)}
        )

    return pull_asset


def _build_download_asset(dataset: Dataset) -> dg.AssetsDefinition:
    pull = dataset.pull

    @_pull_asset(dataset, f"Downloads {pull.url} (or ${dataset.name.upper()}_URL) when it changed (conditional "
                 "GET against covid.pull_state)")
    def download_asset(context: dg.AssetExecutionContext, http: HttpSources, landing: LandingZone,
                       warehouse: Warehouse):
        url = http.url(dataset.name, pull.url)
        with warehouse.connect() as conn:
            last = _last_landed(conn, dataset.name, url)
            known = Validators(last["etag"], last["last_modified"]) if last else Validators()
            with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
                with _failing_clearly(url):
                    got = http.download(url, spool, known)
                spool.seek(0)
                sha256 = None if got is None else hashlib.file_digest(spool, "sha256").hexdigest()
                if last and (got is None or sha256 == last["sha256"]):
                    # The server said so (304, same ETag), or sent the bytes last landed (a server without
                    # validators): landing them again would only add a duplicate to the ledger.
                    _checked(conn, dataset.name, url, got)
                    why = "the server answered Not Modified" if got is None else "the same bytes (sha256)"
                    context.log.info(f"{url} is unchanged ({why}); last landed as {last['key']}")
                    yield dg.AssetObservation(asset_key=context.asset_key, metadata={
                        "changed": False, "reason": dg.MetadataValue.text(f"{why}: nothing landed"),
                        "last_landed": last["key"], "url": dg.MetadataValue.url(url)})
                    return
                key, size = _land(landing, dataset, spool)
            _landed(conn, dataset.name, url, got, sha256, key)
        yield dg.MaterializeResult(metadata={
            "changed": True, "key": key, "size": dg.MetadataValue.int(size), "url": dg.MetadataValue.url(url),
            "etag": got.etag or "", "last_modified": got.last_modified or "", "sha256": sha256})

    return download_asset


def _last_landed(conn, dataset: str, url: str) -> dict | None:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT etag, last_modified, sha256, key FROM covid.pull_state WHERE dataset = %s AND url = %s",
                    (dataset, url))
        row = cur.fetchone()
    return dict(zip(("etag", "last_modified", "sha256", "key"), row)) if row else None


def _checked(conn, dataset: str, url: str, got: Validators | None) -> None:
    """Checked, nothing landed; the same bytes sent again (200) under new validators: those are kept, so the
    next check is answered 304 rather than with the body again."""
    with conn, conn.cursor() as cur:
        if got is None:
            cur.execute("UPDATE covid.pull_state SET checked_at = now() WHERE dataset = %s AND url = %s",
                        (dataset, url))
        else:
            cur.execute("UPDATE covid.pull_state SET checked_at = now(), etag = %s, last_modified = %s "
                        "WHERE dataset = %s AND url = %s", (got.etag, got.last_modified, dataset, url))


def _landed(conn, dataset: str, url: str, got: Validators, sha256: str, key: str) -> None:
    with conn, conn.cursor() as cur:
        cur.execute(
            """INSERT INTO covid.pull_state (dataset, url, etag, last_modified, sha256, key, landed_at, checked_at)
               VALUES (%s, %s, %s, %s, %s, %s, now(), now())
               ON CONFLICT (dataset, url) DO UPDATE SET etag = EXCLUDED.etag, last_modified = EXCLUDED.last_modified,
                 sha256 = EXCLUDED.sha256, key = EXCLUDED.key, landed_at = now(), checked_at = now()""",
            (dataset, url, got.etag, got.last_modified, sha256, key),
        )


def _runs_by_default(dataset: Dataset) -> bool:
    """Every pull's schedule, a Socrata pull's as a CSV download's, is off until turned on (its
    `<DATASET>_URL` set, or COVID_PULLS=on; or started in the UI), so that no development machine, CI job
    or test instance reaches a public URL by itself. Decided when the definitions load."""
    return bool(os.environ.get(f"{dataset.name.upper()}_URL")) or os.environ.get(PULLS_SWITCH, "").lower() == "on"


def build_pull_schedule(dataset: Dataset) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=f"{dataset.name}_daily_pull",
        target=dg.AssetSelection.assets(pull_asset_key(dataset)),
        tags={DATASET_TAG: dataset.name},
        cron_schedule=dataset.pull.cron,
        default_status=dg.DefaultScheduleStatus.RUNNING if _runs_by_default(dataset)
        else dg.DefaultScheduleStatus.STOPPED,
    )
