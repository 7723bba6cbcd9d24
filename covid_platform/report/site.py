"""Where the reports are published: `REPORTS_URL` (`s3://bucket/prefix`, a folder or a `file://` URL), else
`<LANDING_URL>/_reports` (a `_` folder of the landing zone belongs to the platform: the sensor skips it).

Written through a second `LandingZone` (S3 or folder, with the landing zone's S3 settings), so keys are
relative to that root. `REPORTS_URL` and `REPORTS_PUBLIC_URL` are read when a report is built, as the
notifier reads its destinations: a `dg.EnvVar` would fail every run while the variable is unset.

    daily/<day>/index.html    one page per data date; an earlier day's page is never rewritten
    daily/<day>/figures.json  the figures that page was built from
    latest/index.html         the newest report
    latest/figures.json       its figures and fingerprint: what the next build compares with
"""

import io
import json
import os
from dataclasses import dataclass

import botocore.exceptions

from covid_platform.resources.landing import LandingZone

REPORTS_URL_ENV = "REPORTS_URL"
PUBLIC_URL_ENV = "REPORTS_PUBLIC_URL"
LATEST_PAGE, LATEST_FIGURES = "latest/index.html", "latest/figures.json"
MISSING = ("NoSuchKey", "404", "NotFound")


def daily_page(day: str) -> str:
    return f"daily/{day}/index.html"


def daily_figures(day: str) -> str:
    return f"daily/{day}/figures.json"


@dataclass(frozen=True)
class Site:
    zone: LandingZone
    public_url: str | None = None
    """Base URL readers open the reports at (e.g. a CloudFront or S3 website address), for links; unset:
    the zone's own URL (s3://… or file://…)."""

    @classmethod
    def of(cls, landing: LandingZone) -> "Site":
        url = os.environ.get(REPORTS_URL_ENV) or f"{landing.url.rstrip('/')}/_reports"
        zone = LandingZone(url=url, s3=landing.s3, connect_timeout_seconds=landing.connect_timeout_seconds,
                           read_timeout_seconds=landing.read_timeout_seconds)
        return cls(zone, os.environ.get(PUBLIC_URL_ENV) or None)

    def link(self, key: str) -> str:
        if self.public_url:
            return f"{self.public_url.rstrip('/')}/{key}"
        if self.zone.is_s3:
            return f"{self.zone.url.rstrip('/')}/{key}"
        return (self.zone.root / key).resolve().as_uri()

    def exists(self, key: str) -> bool:
        try:
            self.zone.describe(key)
            return True
        except FileNotFoundError:
            return False
        except botocore.exceptions.ClientError as error:
            if error.response["Error"]["Code"] in MISSING:
                return False
            raise

    def read_json(self, key: str) -> dict | None:
        try:
            with self.zone.open(key) as body:
                return json.loads(body.read())
        except FileNotFoundError:
            return None
        except botocore.exceptions.ClientError as error:
            if error.response["Error"]["Code"] in MISSING:
                return None
            raise

    def write(self, key: str, text: str, content_type: str) -> None:
        self.zone.put(key, io.BytesIO(text.encode()), content_type=f"{content_type}; charset=utf-8")
