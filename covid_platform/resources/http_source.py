"""Pulls from public HTTP sources, with timeouts and retries: Socrata/SODA CSV endpoints page by page, and
files published at a URL (conditional GET, streamed)."""

import csv
import io
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import dagster as dg
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Validators:
    """What a server said identifies the version it sent (`ETag`, `Last-Modified`): sent back as
    `If-None-Match` / `If-Modified-Since`, so an unchanged file is answered 304 with no body."""

    etag: str | None = None
    last_modified: str | None = None


class IncompleteBody(requests.exceptions.RequestException):
    """A response's body ended before all of it was read."""


# Answers a later try may not get again (too many requests, a server's passing fault); any other error
# status (404, 401, 501, …) is the same on each try: it fails at once.
RETRIED_STATUSES = (429, 500, 502, 503, 504)


class NotAFile(requests.exceptions.RequestException):
    """A 200 whose body is a web page (a maintenance or login page, a proxy's error), not the file."""


# Content types of a page, never of a CSV or gzip file: such a body is not landed (its "header" would only
# quarantine it, and its version would pass for the file's).
PAGE_TYPES = ("text/html", "application/xhtml+xml")


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
            status_forcelist=RETRIED_STATUSES,
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

    def download(self, url: str, into: BinaryIO, known: Validators) -> Validators | None:
        """Writes the file at `url` into `into` and returns its validators, or returns None (writing nothing)
        when the server says it is still the version `known` identifies (304 Not Modified, or the same ETag
        from a server that ignores If-None-Match). Errors before the body (refused connection, 429, 500, 502-504)
        are retried by the session; a body that breaks off is fetched again from the start, with the same
        backoff, and after the last try raises `IncompleteBody`: `into` then holds a part, never to be used. A web
        page (`PAGE_TYPES`) instead of the file raises `NotAFile` at once."""
        conditional = {"If-None-Match": known.etag, "If-Modified-Since": known.last_modified}
        headers = {name: value for name, value in conditional.items() if value}
        with self._session() as session:
            for attempt in itertools.count():
                with session.get(url, headers=headers, stream=True, timeout=self.timeout_seconds) as response:
                    if response.status_code == 304:
                        return None
                    response.raise_for_status()
                    got = Validators(response.headers.get("ETag"), response.headers.get("Last-Modified"))
                    if got.etag and got.etag == known.etag:
                        return None
                    kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
                    if kind in PAGE_TYPES:
                        raise NotAFile(f"the server answered {response.status_code} with a web page ({kind}), "
                                       "not the file: nothing landed")
                    try:
                        _read_body(response, into)
                        return got
                    except IncompleteBody as error:
                        if attempt == self.max_retries:
                            raise IncompleteBody(f"{error}; on each of {attempt + 1} tries") from error
                time.sleep(self.backoff_seconds * 2**attempt)


def _read_body(response: requests.Response, into: BinaryIO) -> None:
    """The response's body into `into` (emptied first), chunk by chunk; raises `IncompleteBody` when the
    connection drops or a read times out before its end, including before as many bytes as Content-Length
    announced (urllib3 2 enforces it: test_csv_download's short body)."""
    into.seek(0)
    into.truncate()
    try:
        into.writelines(response.iter_content(CHUNK_BYTES))
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError,
            requests.exceptions.ContentDecodingError) as error:
        raise IncompleteBody(f"the body broke off after {response.raw.tell():,} bytes: {error}") from error
