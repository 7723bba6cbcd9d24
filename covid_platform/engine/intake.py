"""A landed file's way to its verdict: archived, streamed into staging, gated, and settled as staged for the
merge, quarantined (bytes and reason kept under `_quarantine/`) or a duplicate of a file already loaded.
The raw assets run it for each dropped file, a replay for each archived one."""

import hashlib
import io
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import botocore.exceptions
from psycopg2 import sql

from covid_platform.datasets import Dataset
from covid_platform.engine import ledger
from covid_platform.engine.gates import GateResult, copy_checked, evaluate, measures_swapped, reason_of
from covid_platform.engine.ledger import Status
from covid_platform.engine.staging import (
    CheckedText,
    FileRejected,
    StagedFile,
    copies_typed,
    date_from_file_name,
    stage,
    staging_table,
)
from covid_platform.resources.landing import ISSUED_AT, LandingZone, ObjectChanged, issue_time

S3_KEY_BYTES = 1024
# A file with less than this share of the previous file's rows is reported (non-blocking).
ROW_DROP_RATIO = 0.5
# A file's date this many days after the latest date before it (loaded, or of the file), past the table's latest
# date, is reported (non-blocking): a mistyped month or year (2023-04-23 for 2023-03-23).
DAYS_AHEAD = 14
WARNINGS = {
    "row_count_drop": f"The file has under {ROW_DROP_RATIO:.0%} of the rows of the dataset's previous file.",
    "dates_ahead": f"No date of the file past the table's latest is more than {DAYS_AHEAD} days after the date "
                   "before it (the table's latest, or the file's own), as a mistyped month or year would be "
                   "(or days not loaded yet: per-day files loaded out of order). Not checked on a first load.",
    "wide_total_matches": "Each row's total column equals the sum of its date columns (wide files).",
}


def warnings_of(dataset: Dataset) -> dict[str, str]:
    return {name: text for name, text in WARNINGS.items() if name != "wide_total_matches" or dataset.wide_total}


def platform_key(landing: LandingZone, folder: str, obj_key: str, etag: str) -> str:
    """`<folder>/<key>/<etag>`; for a key so long that this would pass S3's 1,024-byte limit, the key's
    digest stands in for it (the ledger's archive_key records which)."""
    key = f"{folder}/{obj_key}/{etag}"
    if len(f"{landing.prefix}{key}.reason.txt".encode()) > S3_KEY_BYTES:
        digest = hashlib.sha256(obj_key.encode()).hexdigest()
        key = f"{folder}/{obj_key.split('/', 1)[0]}/{digest}/{etag}"
    return key


def issued_at(landing: LandingZone, obj_key: str, etag: str, log=None) -> datetime | None:
    """The version's `issued_at`: its `issued-at` metadata (a past vintage landed now), else its last-modified
    time in the landing zone; None when the key is gone or holds another version by now. Metadata that is no
    ISO 8601 time, or a time after the object's last-modified one, is not taken: `log` is warned why."""
    try:
        current = landing.describe(obj_key)
    except (OSError, botocore.exceptions.ClientError):
        return None
    if current.etag != etag:
        return None
    modified, now = current.last_modified, datetime.now(timezone.utc)
    if modified > now:  # a folder's file modified "later" (a clock ahead, `touch -d`): no vintage ahead of now
        if log:
            log.warning(f"{obj_key}: its last-modified time {modified.isoformat()} is in the future; its issue "
                        "time is now")
        modified = now
    if current.issued is None:
        return modified
    try:
        issued = issue_time(current.issued)
    except ValueError:
        problem = "is not an ISO 8601 time (2021-03-17 or 2021-03-17T12:00:00Z)"
    else:
        if issued <= modified:
            return issued
        problem = f"is later than the object's last-modified time, {modified.isoformat()}"
    if log:
        log.warning(f"{obj_key}: its metadata {ISSUED_AT}={current.issued!r} {problem}; its issue time is "
                    "its last-modified time")
    return modified


def archive(conn, landing: LandingZone, entry: ledger.LedgerEntry) -> str:
    """Copy the listed version (its ETag) under `_archive/` before anything parses it, once: a version an
    earlier run archived is read from there, whatever became of its landing key. Raises ObjectChanged
    (reason in the ledger) when that version is gone."""
    if entry.archive_key:
        return entry.archive_key
    archive_key = platform_key(landing, "_archive", entry.key, entry.etag)
    try:
        landing.copy(entry.key, archive_key, etag=entry.etag)
    except ObjectChanged as gone:
        ledger.update(conn, entry.file_id, reason=str(gone))
        raise
    ledger.update(conn, entry.file_id, archive_key=archive_key)
    return archive_key


def quarantine(landing: LandingZone, archive_key: str, obj_key: str, etag: str, reason: str) -> None:
    """Keep the rejected bytes and the reason side by side under `_quarantine/` for the person who fixes it."""
    quarantine_key = platform_key(landing, "_quarantine", obj_key, etag)
    landing.copy(archive_key, quarantine_key)
    landing.put(f"{quarantine_key}.reason.txt", io.BytesIO(f"{reason}\n".encode()))


@dataclass
class Gated:
    """An archived file streamed into staging and gated."""

    staged: StagedFile | None
    """None when the bytes are not a CSV that could be staged."""
    gates: list[GateResult]
    """The gates that were evaluated (an earlier failure leaves the later ones out)."""
    sha256: str
    bytes: int

    @property
    def failed(self) -> bool:
        return any(gate.blocking and not gate.passed for gate in self.gates)

    @property
    def rows(self) -> int | None:
        return self.staged.rows if self.staged else None


def gate_archived(conn, landing: LandingZone, dataset: Dataset, file_id: int, obj_key: str, archive_key: str) -> Gated:
    """Stream the archived copy into staging and run the gates of the day; the typed rows of a file that
    passed are left in `staging_table(file_id)` for the merge. A file whose rows passed is then refused
    whole if its deaths exceed its cases on most rows (`gates.measures_swapped`)."""
    gated = _gate_archived(conn, landing, dataset, file_id, obj_key, archive_key)
    swapped = None if gated.failed else measures_swapped(conn, dataset, gated.staged, file_id)
    if swapped:
        ledger.forget_rejected_rows(conn, file_id)  # a quarantined file sets no row aside
        gated.gates = [_not_set_aside(gate, swapped) for gate in gated.gates]
    return gated


def _not_set_aside(gate: GateResult, swapped: GateResult) -> GateResult:
    """A gate's result once its file is quarantined by `swapped`: the bad rows it found are not set aside."""
    rows = gate.metadata.get("rejected_rows", 0)
    found = f"{rows} row(s) found, not set aside (the file is quarantined): {gate.detail}" if rows else ""
    if gate.name == swapped.name:
        return replace(swapped, reason=f"{swapped.reason}; besides, {found}") if found else swapped
    return replace(gate, reason=found, metadata={**gate.metadata, "rejected_rows": 0}) if found else gate


def _gate_archived(conn, landing: LandingZone, dataset: Dataset, file_id: int, obj_key: str, archive_key: str
                   ) -> Gated:
    """`gate_archived`'s gates of the rows.

    A file whose layout allows it is first COPYed straight into typed columns and checked by one aggregate,
    only the rows that aggregate does not admit gated as text (`gates.copy_checked`): a file is read once.
    A file that cannot be COPYed so takes the text path: the archived copy read again from its first byte
    (its hash and size are then this read's), COPYed as text and gated row by row, which names each problem.
    """
    if copies_typed(dataset):
        with landing.open(archive_key) as body:
            reader = CheckedText(body)
            checked = copy_checked(conn, reader, dataset, file_id, obj_key)
            if checked:
                reader.drain()
                return Gated(*checked, reader.hexdigest, reader.bytes)
    staged: StagedFile | None = None
    with landing.open(archive_key) as body:
        reader = CheckedText(body)
        try:
            staged = stage(conn, reader, file_id, dataset, obj_key)
            gates = evaluate(conn, dataset, staged, file_id, obj_key)
        except FileRejected as rejected:
            gates = [GateResult("csv_readable", False, str(rejected))]
        reader.drain()
    return Gated(staged, gates, reader.hexdigest, reader.bytes)


def same_rows(dataset: Dataset, key: str, same_bytes: tuple[int, str] | None) -> tuple[int, str] | None:
    """`same_bytes` (the file id and key of a loaded file with these bytes): a duplicate, unless the dataset
    dates its rows by the file name and the two names give different days (a publisher posting yesterday's
    snapshot again as today's: today's rows, to load)."""
    fmt = dataset.date_in_file_name
    if same_bytes and fmt and date_from_file_name(same_bytes[1], fmt) != date_from_file_name(key, fmt):
        return None
    return same_bytes


def settle(landing: LandingZone, gated: Gated, obj_key: str, etag: str, archive_key: str,
           duplicate_of: tuple[int, str] | None) -> tuple[Status, str | None]:
    """The file's ledger status and reason: quarantined (its bytes and reason copied under `_quarantine/`),
    a duplicate of an earlier loaded file, or staged for the merge."""
    if gated.failed:
        reason = reason_of(gated.gates)
        quarantine(landing, archive_key, obj_key, etag, reason)
        return Status.QUARANTINED, reason
    if duplicate_of:
        return Status.DUPLICATE, f"same bytes as file {duplicate_of[0]} ({duplicate_of[1]}), already loaded"
    return Status.STAGED, None


def warnings(conn, dataset: Dataset, file_id: int, staged: StagedFile) -> list[GateResult]:
    """The non-blocking checks of a staged file."""
    results = [_row_drop(conn, dataset, file_id, staged), _dates_ahead(conn, dataset, file_id)]
    if dataset.wide_total:
        results.append(_wide_total(conn, dataset, staged))
    return results


# The first of the file's dates after the table's latest that is more than DAYS_AHEAD days after the date before
# it (of the table or the file), that date, and the file's rows from it on (its typed rows: a date column).
DATES_AHEAD = """
WITH loaded AS (SELECT max(date) AS date FROM {table}),
dates AS (SELECT DISTINCT date FROM {staged} UNION SELECT date FROM loaded),
gaps AS (SELECT date, lag(date) OVER (ORDER BY date) AS before FROM dates WHERE date IS NOT NULL)
SELECT g.date, g.before, (SELECT count(*) FROM {staged} AS s WHERE s.date >= g.date)
FROM gaps AS g, loaded AS l
WHERE g.before >= l.date AND g.date - g.before > {days}
ORDER BY g.date LIMIT 1
"""


def _dates_ahead(conn, dataset: Dataset, file_id: int) -> GateResult:
    table = f"covid.{dataset.table}"
    with conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        found = None
        if cur.fetchone()[0]:  # a first load has nothing to be ahead of
            cur.execute(sql.SQL(DATES_AHEAD).format(table=sql.Identifier("covid", dataset.table),
                                                    staged=staging_table(file_id), days=sql.Literal(DAYS_AHEAD)))
            found = cur.fetchone()
    if found is None:
        return GateResult("dates_ahead", True, "", {"days_ahead": 0}, blocking=False)
    date, before, rows = found
    return GateResult(
        "dates_ahead", False,
        f"{rows} row(s) dated {date} or later, {(date - before).days} days after the latest date before it "
        f"({before}): a mistyped month or year, or the days between not loaded yet? Loaded as written (no file "
        "removes a row)",
        {"days_ahead": (date - before).days, "rows": rows}, blocking=False)


def _row_drop(conn, dataset: Dataset, file_id: int, staged: StagedFile) -> GateResult:
    previous = ledger.previous_rows(conn, dataset.name, file_id)
    dropped = previous is not None and staged.rows < ROW_DROP_RATIO * previous
    return GateResult(
        "row_count_drop",
        not dropped,
        f"{staged.rows} rows, the previous file had {previous}" if dropped else "",
        {"rows": staged.rows, "previous_rows": previous or 0},
        blocking=False,
    )


def _wide_total(conn, dataset: Dataset, staged: StagedFile) -> GateResult:
    """Rows whose total column disagrees with the sum of their date columns."""
    total = staged.positions.get(dataset.wide_total)
    if total is None:
        return GateResult("wide_total_matches", False, f"no {dataset.wide_total!r} column to compare with",
                          blocking=False)
    cells = sql.SQL(" + ").join(
        sql.SQL("coalesce(nullif(btrim({}), ''), '0')::numeric").format(sql.Identifier(f"c{p}"))
        for p in staged.wide_dates.values()
    )
    region = sql.SQL(" || '/' || ").join(
        sql.SQL("btrim({})").format(sql.Identifier(f"c{staged.positions[c]}")) for c in dataset.region
    )
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT {region}, btrim({total}), {cells} FROM {table} "
                "WHERE btrim({total})::numeric <> {cells} ORDER BY line"
            ).format(region=region, total=sql.Identifier(f"c{total}"), cells=cells, table=staged.table)
        )
        disagree = cur.fetchall()
    listed = ", ".join(f"{region} ({total} vs {int(summed)})" for region, total, summed in disagree[:10])
    return GateResult(
        "wide_total_matches",
        not disagree,
        f"{len(disagree)} row(s) whose {dataset.wide_total} differs from the sum of the date columns: {listed}"
        if disagree else "",
        {"rows_disagreeing": len(disagree)},
        blocking=False,
    )
