"""Pulls from public HTTP APIs (Socrata/SODA CSV endpoints), page by page, with timeouts and retries."""

import csv
import io
import os
from collections.abc import Iterator

import dagster as dg
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry


class HttpSources(dg.ConfigurableResource):
    """Reads a dataset's pull URL from `<DATASET>_URL` (e.g. PCR_TESTING_URL) when set, else the declared
    default, so tests and mirrors point elsewhere without code changes."""

    page_size: int = 50_000
    timeout_seconds: float = 60.0
    max_retries: int = 5
    backoff_seconds: float = 1.0

    def url(self, dataset_name: str, default: str) -> str:
        return os.environ.get(f"{dataset_name.upper()}_URL") or default

    def _session(self) -> requests.Session:
        retry = Retry(
            total=self.max_retries,
            backoff_factor=self.backoff_seconds,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=("GET",),
            respect_retry_after_header=True,
        )
        session = requests.Session()
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.mount("https://", HTTPAdapter(max_retries=retry))
        return session

    def socrata_csv_pages(self, url: str, columns: tuple[str, ...]) -> Iterator[tuple[bytes, int]]:
        """Each page as CSV bytes (the header only on the first) and its row count, paged by $limit/$offset
        in a stable order; ends with the first short page."""
        offset = 0
        with self._session() as session:
            while True:
                params = {"$select": ",".join(columns), "$order": ":id", "$limit": self.page_size, "$offset": offset}
                response = session.get(url, params=params, timeout=self.timeout_seconds)
                response.raise_for_status()
                text = response.content.decode("utf-8-sig")
                rows = list(csv.reader(io.StringIO(text)))
                if not rows or [name.strip() for name in rows[0]] != list(columns):
                    raise ValueError(f"{url} answered with header {rows[0] if rows else 'nothing'}, not {columns}")
                out = io.StringIO()
                csv.writer(out, lineterminator="\n").writerows(rows if offset == 0 else rows[1:])
                yield out.getvalue().encode(), len(rows) - 1
                if len(rows) - 1 < self.page_size:
                    return
                offset += self.page_size
