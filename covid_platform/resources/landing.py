"""The landing zone: where users drop files. A local folder (embedded default) or an S3 prefix.

Keys are always relative to the zone's root, e.g. `us_states/2021-03-01.csv`. Keys whose first segment
starts with `_` (`_archive/`, `_quarantine/`) belong to the platform.
"""

import hashlib
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

import botocore.exceptions
import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

PAGE_SIZE = 1000  # the most S3 returns per ListObjectsV2 page


class ObjectChanged(Exception):
    def __init__(self, key: str, etag: str):
        super().__init__(f"{key} no longer has ETag {etag}: it was overwritten or deleted after it was listed")


@dataclass(frozen=True)
class LandingObject:
    key: str
    etag: str
    size: int
    last_modified: datetime


class LandingZone(dg.ConfigurableResource):
    """`url` is `file:///path/to/folder` or `s3://bucket/prefix`; S3 credentials and endpoint come from the
    usual AWS environment (`AWS_ENDPOINT_URL`, keys or an IAM role) through dagster-aws's S3Resource."""

    url: str
    s3: S3Resource

    _client = PrivateAttr(default=None)

    @property
    def is_s3(self) -> bool:
        return urlparse(self.url).scheme == "s3"

    @property
    def bucket(self) -> str:
        return urlparse(self.url).netloc

    @property
    def prefix(self) -> str:
        path = urlparse(self.url).path.strip("/")
        return f"{path}/" if path else ""

    @property
    def root(self) -> Path:
        parsed = urlparse(self.url)
        if parsed.scheme not in ("", "file"):
            raise ValueError(f"LANDING_URL must be file:///folder or s3://bucket/prefix, got {self.url!r}")
        return Path(parsed.path)

    def client(self):
        if self._client is None:
            self._client = self.s3.get_client()
        return self._client

    def list_after(self, start_after: str, limit: int = PAGE_SIZE) -> list[LandingObject]:
        """Up to `limit` objects whose key sorts after `start_after`, in key order (S3's own order)."""
        if not self.is_s3:
            return self._list_local(start_after, limit)
        found: list[LandingObject] = []
        token = None
        while len(found) < limit:
            args = {"Bucket": self.bucket, "Prefix": self.prefix, "MaxKeys": min(PAGE_SIZE, limit - len(found))}
            if token:
                args["ContinuationToken"] = token
            elif start_after:
                args["StartAfter"] = self.prefix + start_after
            page = self.client().list_objects_v2(**args)
            found += [
                LandingObject(
                    key=item["Key"][len(self.prefix) :],
                    etag=item["ETag"].strip('"'),
                    size=item["Size"],
                    last_modified=item["LastModified"],
                )
                for item in page.get("Contents", [])
            ]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated"):
                break
        return found

    def _list_local(self, start_after: str, limit: int) -> list[LandingObject]:
        keys = sorted(
            p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()
        )
        return [self.describe(key) for key in keys if key > start_after][:limit]

    def describe(self, key: str) -> LandingObject:
        if self.is_s3:
            head = self.client().head_object(Bucket=self.bucket, Key=self.prefix + key)
            return LandingObject(key, head["ETag"].strip('"'), head["ContentLength"], head["LastModified"])
        stat = (self.root / key).stat()
        # A local file has no ETag: size and mtime identify a version well enough for a dev folder.
        etag = hashlib.md5(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
        modified = datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc)
        return LandingObject(key, etag, stat.st_size, modified)

    def open(self, key: str) -> BinaryIO:
        """A stream of the object's bytes; nothing is read ahead beyond what the caller reads."""
        if self.is_s3:
            return self.client().get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
        return open(self.root / key, "rb")

    def copy(self, key: str, dest_key: str, etag: str | None = None) -> None:
        """Copy inside the zone (server-side on S3: the bytes never pass through this process).

        With `etag`, copy only that version of the object: raises `ObjectChanged` if it was overwritten."""
        if self.is_s3:
            source = {"Bucket": self.bucket, "Key": self.prefix + key}
            extra = {"CopySourceIfMatch": f"\"{etag}\""} if etag else None
            try:
                self.client().copy(source, self.bucket, self.prefix + dest_key, ExtraArgs=extra)
            except botocore.exceptions.ClientError as error:
                if error.response["Error"]["Code"] in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                    raise ObjectChanged(key, etag) from error
                raise
            return
        if etag and (not (self.root / key).exists() or self.describe(key).etag != etag):
            raise ObjectChanged(key, etag)
        dest = self.root / dest_key
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.root / key, dest)

    def put(self, key: str, body: BinaryIO) -> None:
        if self.is_s3:
            self.client().upload_fileobj(body, self.bucket, self.prefix + key)
            return
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        with open(tmp, "wb") as out:
            shutil.copyfileobj(body, out)
        # Rename so the sensor never sees a half-written file.
        os.replace(tmp, dest)
