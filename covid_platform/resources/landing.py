"""The landing zone: where users drop files. A local folder (embedded default) or an S3 prefix.

Keys are always relative to the zone's root, e.g. `us_states/2021-03-01.csv`. Keys whose first segment
starts with `_` (`_archive/`, `_quarantine/`) belong to the platform.

An S3 zone may also have a queue (`LANDING_QUEUE_URL`): an SQS queue receiving the bucket's
`s3:ObjectCreated:*` notifications, read by the landing sensor so that a drop is requested without waiting
for a listing to reach it (`receive`, `delete_messages`).
"""

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote_plus, urlparse

import boto3
import botocore.config
import botocore.exceptions
import botocore.handlers
import dagster as dg
import urllib3.exceptions
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

PAGE_SIZE = 1000  # the most S3 returns per ListObjectsV2 page
QUEUE_BATCH = 10  # the most SQS returns per ReceiveMessage, and deletes per DeleteMessageBatch
_SQS_CLIENTS: dict[tuple, object] = {}  # by settings; boto3 clients are thread-safe


class ObjectChanged(Exception):
    def __init__(self, key: str, etag: str):
        super().__init__(f"{key} no longer has ETag {etag}: it was overwritten or deleted after it was listed")


class ObjectReadError(Exception):
    """Reading an object's bytes broke off part-way (a read timeout, a dropped connection): a transient
    failure of the zone, not a defect of the file, so the step is retried. Deliberately not an OSError,
    which file parsers may take for a damaged file."""


class _ObjectBody:
    """An S3 object's body whose read errors name the object and how far the read got."""

    def __init__(self, body, where: str, size: int):
        self._body, self._where, self._size, self._read = body, where, size, 0

    def read(self, size: int = -1) -> bytes:
        try:
            chunk = self._body.read(size if size is not None and size >= 0 else None)
        except (botocore.exceptions.BotoCoreError, urllib3.exceptions.HTTPError, OSError) as error:
            # botocore's wrapper of urllib3's timeout says only 'endpoint URL: "None"'; the wrapped one says more
            inner = getattr(error, "kwargs", {}).get("error", error)
            raise ObjectReadError(
                f"reading {self._where} broke off after {self._read:,} of {self._size:,} bytes: "
                f"{type(inner).__name__}: {inner}"
            ) from error
        self._read += len(chunk)
        return chunk

    def close(self) -> None:
        self._body.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def landing_kinds() -> set[str]:
    """The assets' kind tag for the landing zone this code location is configured with: "s3" for an S3
    prefix, none for a local folder (kinds are fixed when the definitions load, so `LANDING_URL` is read
    then; unset, as under `dg check defs`, no kind is claimed)."""
    return {"s3"} if os.environ.get("LANDING_URL", "").startswith("s3://") else set()


# An object's user metadata naming when its publisher issued it (ISO 8601), for a file landed later than that
# (a past vintage): `aws s3 cp f.csv s3://…/us_states/f.csv --metadata issued-at=2021-03-17T12:00:00Z`.
ISSUED_AT = "issued-at"


def issue_time(text: str) -> datetime:
    """An ISO 8601 time as an issue time: a date alone is its midnight, a time without a zone UTC. Raises
    ValueError."""
    return _utc(datetime.fromisoformat(text.strip()))


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class LandingObject:
    key: str
    etag: str
    size: int
    last_modified: datetime
    issued: str | None = None
    """The object's `issued-at` metadata as written (S3's `describe` only: a folder's file says it by its
    mtime)."""


@dataclass(frozen=True)
class QueueMessage:
    """A message received from the landing queue: the object versions its S3 event records say were
    created in the zone (keys relative to the zone), and `note`, why (some of) it names nothing to ingest:
    an `s3:TestEvent`, a body that is no S3 event, another bucket or prefix, an object already gone."""

    message_id: str
    receipt: str
    objects: list[LandingObject] = field(default_factory=list)
    note: str | None = None
    malformed: bool = False  # the body, or a record of it, is not an S3 event notification


class LandingZone(dg.ConfigurableResource):
    """`url` is `file:///path/to/folder` or `s3://bucket/prefix`; S3 credentials and endpoint come from the
    usual AWS environment (`AWS_ENDPOINT_URL`, keys or an IAM role) through dagster-aws's S3Resource.

    `queue_url` (default: `LANDING_QUEUE_URL`; "" for none): an SQS queue receiving the bucket's
    `s3:ObjectCreated:*` notifications for the zone's prefix, with the S3Resource's credentials and profile;
    its region is the queue URL's, and a queue URL off amazonaws.com (moto, LocalStack) is its own endpoint.
    Ignored for a folder zone."""

    url: str
    s3: S3Resource
    # botocore waits 60 s by default for a connection and for each read. A stalled S3 connection fails
    # sooner and is retried ('standard' mode: throttling, 5xx, timeouts; `s3.max_attempts` tries in all).
    connect_timeout_seconds: float = 10
    read_timeout_seconds: float = 30
    queue_url: str | None = None
    # A received message stays invisible to other receives this long: past it, one not yet deleted comes
    # back (the sensor deletes a message on the tick after the one that requested its object, seconds later).
    queue_visibility_timeout_seconds: int = 60

    _client = PrivateAttr(default=None)
    _backend = PrivateAttr(default=None)
    _sqs = PrivateAttr(default=None)

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
        """The S3Resource's client (same settings and AWS environment), with this zone's timeouts."""
        if self._client is None:
            s3 = self.s3
            client = boto3.session.Session(profile_name=s3.profile_name).client(
                "s3",
                region_name=s3.region_name,
                endpoint_url=s3.endpoint_url,
                use_ssl=s3.use_ssl,
                verify=s3.verify,
                aws_access_key_id=s3.aws_access_key_id,
                aws_secret_access_key=s3.aws_secret_access_key,
                aws_session_token=s3.aws_session_token,
                config=botocore.config.Config(
                    connect_timeout=self.connect_timeout_seconds,
                    read_timeout=self.read_timeout_seconds,
                    # S3Resource.max_attempts counts the first call (botocore's `max_attempts` would not)
                    retries={"mode": "standard", "total_max_attempts": s3.max_attempts},
                ),
            )
            if s3.use_unsigned_session:
                client.meta.events.register("choose-signer.s3.*", botocore.handlers.disable_signing)
            self._client = client
        return self._client

    @property
    def _store(self) -> "_Store":
        if self._backend is None:
            self._backend = _S3Store(self.client(), self.bucket, self.prefix) if self.is_s3 else _FolderStore(self.root)
        return self._backend

    def list_after(self, start_after: str, limit: int = PAGE_SIZE, within: str = "") -> list[LandingObject]:
        """Up to `limit` objects whose key sorts after `start_after`, in key order (S3's own order); with
        `within` (a folder such as `us_states/`), only the keys under it."""
        return self._store.list_after(start_after, limit, within)

    def folders(self, within: str) -> list[str]:
        """The folders directly under the folder `within` (`a/` → `a/x/`, `a/y/`), in key order."""
        return self._store.folders(within)

    def describe(self, key: str) -> LandingObject:
        return self._store.describe(key)

    def open(self, key: str) -> BinaryIO:
        """A stream of the object's bytes; nothing is read ahead beyond what the caller reads."""
        return self._store.open(key)

    def copy(self, key: str, dest_key: str, etag: str | None = None) -> None:
        """Copy inside the zone (server-side on S3: the bytes never pass through this process).

        With `etag`, copy only that version of the object: raises `ObjectChanged` if it was overwritten."""
        self._store.copy(key, dest_key, etag)

    def put(self, key: str, body: BinaryIO, content_type: str | None = None, issued_at: datetime | None = None
            ) -> None:
        """`content_type`: the S3 object's Content-Type (a published web page must be served as text/html,
        not S3's default binary/octet-stream); a folder has none. `issued_at`: when the publisher issued the
        file, if earlier than now (S3: its `issued-at` metadata; a folder: the file's mtime)."""
        self._store.put(key, body, content_type, issued_at)

    @property
    def queue(self) -> str:
        """The queue URL this zone's drops are announced on ("" when none: unset, or a folder zone)."""
        url = os.environ.get("LANDING_QUEUE_URL", "") if self.queue_url is None else self.queue_url
        return url.strip() if self.is_s3 else ""

    def queue_client(self):
        """An SQS client for `queue`, with the S3Resource's credentials and this zone's timeouts. Kept for the
        process: the sensor's resources are built again for every tick, and a new client costs ~0.1 s."""
        if self._sqs is None:
            s3 = self.s3
            host = urlparse(self.queue).netloc
            on_aws = host.endswith((".amazonaws.com", ".amazonaws.com.cn"))
            # sqs.<region>.amazonaws.com, or the legacy <region>.queue.amazonaws.com
            parts = host.split(".")
            region = (parts[1] if parts[0] == "sqs" else parts[0]) if on_aws else None
            settings = dict(
                region_name=region or s3.region_name,
                # off AWS the queue URL names the service's endpoint; on AWS botocore finds it (or
                # AWS_ENDPOINT_URL_SQS / AWS_ENDPOINT_URL, as for any client)
                endpoint_url=None if on_aws else f"{urlparse(self.queue).scheme}://{host}",
                verify=s3.verify,
                aws_access_key_id=s3.aws_access_key_id,
                aws_secret_access_key=s3.aws_secret_access_key,
                aws_session_token=s3.aws_session_token,
            )
            key = (s3.profile_name, self.connect_timeout_seconds, self.read_timeout_seconds, s3.max_attempts,
                   *sorted(settings.items()))
            if key not in _SQS_CLIENTS:
                _SQS_CLIENTS[key] = boto3.session.Session(profile_name=s3.profile_name).client(
                    "sqs", **settings, config=botocore.config.Config(
                        connect_timeout=self.connect_timeout_seconds,
                        read_timeout=self.read_timeout_seconds,  # above any long poll (20 s at most)
                        retries={"mode": "standard", "total_max_attempts": s3.max_attempts},
                    ),
                )
            self._sqs = _SQS_CLIENTS[key]
        return self._sqs

    def receive(self, wait_seconds: int, max_batches: int) -> list[QueueMessage]:
        """Messages of the queue, each hidden from other receives for `queue_visibility_timeout_seconds`
        until deleted: the first ReceiveMessage waits up to `wait_seconds` (SQS long polling: it answers as
        soon as a message is there), then, while batches come back full, up to `max_batches` in all without
        waiting."""
        client, messages = self.queue_client(), []
        for batch in range(max_batches):
            page = client.receive_message(
                QueueUrl=self.queue, MaxNumberOfMessages=QUEUE_BATCH,
                WaitTimeSeconds=0 if batch else wait_seconds,
                VisibilityTimeout=self.queue_visibility_timeout_seconds,
            ).get("Messages", [])
            messages += [self._read_message(message) for message in page]
            if len(page) < QUEUE_BATCH:
                break
        return messages

    def delete_messages(self, receipts: list[str]) -> list[str]:
        """Delete received messages by their receipt handles; returns what failed (empty when all went)."""
        client, failed = self.queue_client(), []
        for start in range(0, len(receipts), QUEUE_BATCH):
            batch = receipts[start:start + QUEUE_BATCH]
            try:
                answer = client.delete_message_batch(
                    QueueUrl=self.queue,
                    Entries=[{"Id": str(i), "ReceiptHandle": receipt} for i, receipt in enumerate(batch)],
                )
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
                failed += [f"{len(batch)} message(s): {error}"]
                continue
            failed += [f"{item.get('Code')}: {item.get('Message')}" for item in answer.get("Failed", [])]
        return failed

    def _read_message(self, message: dict) -> QueueMessage:
        """What a message says. Never raises: a message no tick could read would come back forever."""
        message_id, receipt = message.get("MessageId", "?"), message["ReceiptHandle"]
        try:
            event = _s3_event(message.get("Body", ""))
            if event.get("Event") == "s3:TestEvent":
                return QueueMessage(message_id, receipt, note="an s3:TestEvent (sent when a bucket's "
                                    f"notifications are configured) for bucket {event.get('Bucket')!r}")
            objects, notes = [], []
            for record in event["Records"]:
                found, note = self._record_object(record)
                objects += [found] if found else []
                notes += [note] if note else []
        except Exception as error:  # noqa: BLE001 - whatever the body: the message is dropped, with why
            return QueueMessage(message_id, receipt, note=str(error), malformed=True)
        return QueueMessage(message_id, receipt, objects, "; ".join(notes) or None)

    def _record_object(self, record) -> tuple[LandingObject | None, str | None]:
        """The object version an S3 event record says was created in this zone, or why there is none."""
        try:
            name, obj = str(record["eventName"]), record["s3"]["object"]
            bucket = record["s3"]["bucket"]["name"]
            # S3 URL-encodes the key in events, a space as '+'
            key, size = unquote_plus(obj["key"]), int(obj.get("size") or 0)
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"an S3 event record without eventName, bucket or key: {str(record)[:200]}") from None
        if not name.startswith("ObjectCreated:"):
            return None, None  # a removal, a restore…: nothing to ingest
        if bucket != self.bucket or not key.startswith(self.prefix):
            return None, f"{name} of s3://{bucket}/{key}, outside this zone s3://{self.bucket}/{self.prefix}"
        key = key[len(self.prefix):]
        etag = str(obj.get("eTag") or "").strip('"')
        if not etag:  # every ObjectCreated event has one; should one not, the object says
            try:
                return self.describe(key), None
            except botocore.exceptions.ClientError:
                return None, f"{name} of {key}, which no longer exists"
        try:
            when = datetime.fromisoformat(record["eventTime"])
        except (KeyError, TypeError, ValueError):
            when = datetime.now(timezone.utc)
        return LandingObject(key, etag, size, when), None


def _s3_event(body: str) -> dict:
    """The S3 event notification in a message's body (directly, or in an SNS envelope's `Message` when the
    bucket notifies an SNS topic the queue subscribes to): a test event or a dict with `Records`."""
    try:
        event = json.loads(body)
        if isinstance(event, dict) and event.get("Type") == "Notification" and "Message" in event:
            event = json.loads(event["Message"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"not JSON ({error}): {str(body)[:200]!r}") from None
    if not isinstance(event, dict) or not (
        event.get("Event") == "s3:TestEvent" or isinstance(event.get("Records"), list)
    ):
        raise ValueError(f"not an S3 event notification: {str(body)[:200]!r}")
    return event


class _Store(Protocol):
    """What a landing zone does, for an S3 prefix or a local folder."""

    def list_after(self, start_after: str, limit: int, within: str) -> list[LandingObject]: ...
    def folders(self, within: str) -> list[str]: ...
    def describe(self, key: str) -> LandingObject: ...
    def open(self, key: str) -> BinaryIO: ...
    def copy(self, key: str, dest_key: str, etag: str | None) -> None: ...
    def put(self, key: str, body: BinaryIO, content_type: str | None, issued_at: datetime | None) -> None: ...


@dataclass
class _S3Store:
    client: object
    bucket: str
    prefix: str

    def list_after(self, start_after: str, limit: int, within: str) -> list[LandingObject]:
        found: list[LandingObject] = []
        token = None
        while len(found) < limit:
            args = {"Bucket": self.bucket, "Prefix": self.prefix + within,
                    "MaxKeys": min(PAGE_SIZE, limit - len(found))}
            if token:
                args["ContinuationToken"] = token
            elif start_after:
                args["StartAfter"] = self.prefix + start_after
            page = self.client.list_objects_v2(**args)
            found += [
                LandingObject(item["Key"][len(self.prefix):], item["ETag"].strip('"'), item["Size"],
                              item["LastModified"])
                for item in page.get("Contents", [])
            ]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated"):
                break
        return found

    def folders(self, within: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + within, Delimiter="/")
        return [common["Prefix"][len(self.prefix):] for page in pages for common in page.get("CommonPrefixes", [])]

    def describe(self, key: str) -> LandingObject:
        head = self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        issued = next((v for k, v in head.get("Metadata", {}).items() if k.lower() == ISSUED_AT), None)
        return LandingObject(key, head["ETag"].strip('"'), head["ContentLength"], head["LastModified"],
                             issued)

    def open(self, key: str) -> BinaryIO:
        response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        return _ObjectBody(response["Body"], f"s3://{self.bucket}/{self.prefix}{key}", response["ContentLength"])

    def copy(self, key: str, dest_key: str, etag: str | None) -> None:
        source = {"Bucket": self.bucket, "Key": self.prefix + key}
        extra = {"CopySourceIfMatch": f"\"{etag}\""} if etag else None
        try:
            self.client.copy(source, self.bucket, self.prefix + dest_key, ExtraArgs=extra)
        except botocore.exceptions.ClientError as error:
            if error.response["Error"]["Code"] in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                raise ObjectChanged(key, etag) from error
            raise

    def put(self, key: str, body: BinaryIO, content_type: str | None, issued_at: datetime | None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        if issued_at:
            extra["Metadata"] = {ISSUED_AT: _utc(issued_at).isoformat()}
        self.client.upload_fileobj(body, self.bucket, self.prefix + key, ExtraArgs=extra or None)


@dataclass
class _FolderStore:
    root: Path

    def list_after(self, start_after: str, limit: int, within: str) -> list[LandingObject]:
        # A name starting with "." is a file being written (`put`'s temporary), never an object yet.
        keys = sorted(
            p.relative_to(self.root).as_posix() for p in (self.root / within).rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
        found = []
        for key in (key for key in keys if key > start_after and key.startswith(within)):
            try:
                found.append(self.describe(key))
            except FileNotFoundError:  # removed since it was listed
                continue
            if len(found) == limit:
                break
        return found

    def folders(self, within: str) -> list[str]:
        folder = self.root / within
        return sorted(f"{within}{p.name}/" for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def describe(self, key: str) -> LandingObject:
        stat = (self.root / key).stat()
        # A local file has no ETag: size and mtime identify a version well enough for a dev folder.
        etag = hashlib.md5(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
        return LandingObject(key, etag, stat.st_size, datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc))

    def open(self, key: str) -> BinaryIO:
        return open(self.root / key, "rb")

    def copy(self, key: str, dest_key: str, etag: str | None) -> None:
        if etag and (not (self.root / key).exists() or self.describe(key).etag != etag):
            raise ObjectChanged(key, etag)
        dest = self.root / dest_key
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.root / key, dest)

    def put(self, key: str, body: BinaryIO, content_type: str | None, issued_at: datetime | None) -> None:
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        with open(tmp, "wb") as out:
            shutil.copyfileobj(body, out)
        if issued_at:
            # A version is told apart by its size and mtime (`describe`): a corrected file of the same size
            # issued at the same time is made a microsecond later, or it would pass for the one it replaces.
            when = _utc(issued_at)
            mtime = int(when.timestamp()) * 10**9 + when.microsecond * 1000
            size = tmp.stat().st_size
            while dest.is_file() and (dest.stat().st_size, dest.stat().st_mtime_ns) == (size, mtime):
                mtime += 1000
            os.utime(tmp, ns=(mtime, mtime))
        # Rename so the sensor never sees a half-written file.
        os.replace(tmp, dest)
