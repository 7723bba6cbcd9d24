"""The ledger `covid.ingested_files`: what happened to every object version seen in the landing zone."""

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extras import Json


class Status(StrEnum):
    """A file's ledger status (the CHECK of `covid.ingested_files.status`)."""

    RECEIVED = "received"
    """Seen, being archived and gated."""
    STAGED = "staged"
    """Passed the gates; its typed rows wait for the merge."""
    LOADED = "loaded"
    QUARANTINED = "quarantined"
    DUPLICATE = "duplicate"
    """The same bytes as the dataset's previous file, loaded: nothing to change (`loaded_with_same_content`)."""


def partition_key(obj_key: str, etag: str) -> str:
    """A Dagster partition key for one version of one object.

    Readable, but free of commas, spaces and brackets (they break UI backfills) and short; the hash keeps
    two keys that normalise alike, or two versions of one key, apart.
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", obj_key).strip("_")[-80:]
    digest = hashlib.sha1(f"{obj_key}\0{etag}".encode()).hexdigest()[:10]
    return f"{slug}-{digest}"


@contextmanager
def transaction(conn: psycopg2.extensions.connection) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor whose statements are committed together at the end, or rolled back on an error.

    Unlike `with conn`, it does not roll back a connection the server has already dropped: psycopg2 would
    raise "connection already closed" and hide the error that says what happened."""
    try:
        with conn.cursor() as cur:
            yield cur
        conn.commit()
    except BaseException:
        if not conn.closed:
            conn.rollback()
        raise


@dataclass
class LedgerEntry:
    file_id: int
    key: str
    etag: str
    status: Status
    archive_key: str | None = None
    """Where the version was archived (None until it is): a rerun reads it from there, not the landing key."""


def register(
    conn: psycopg2.extensions.connection, key: str, etag: str, partition: str, dataset: str, run_id: str,
    issued_at: datetime | None = None,
) -> LedgerEntry:
    """The ledger row for this object version, created on first sight (committed at once). `issued_at`: the
    version's last-modified time in the landing zone; None when the key no longer holds that version (then
    the time of first sight: an archived copy's own time is not the original's). Kept from the first sight."""
    with transaction(conn) as cur:
        cur.execute(
            """
            INSERT INTO covid.ingested_files (key, etag, partition_key, dataset, status, run_id, issued_at)
            VALUES (%s, %s, %s, %s, %s, %s, coalesce(%s, now()))
            ON CONFLICT (partition_key) DO UPDATE SET run_id = EXCLUDED.run_id,
                issued_at = coalesce(ingested_files.issued_at, EXCLUDED.issued_at)
            RETURNING file_id, key, etag, status, archive_key
            """,
            (key, etag, partition, dataset, Status.RECEIVED, run_id, issued_at),
        )
        return _entry(cur.fetchone())


def lookup(conn: psycopg2.extensions.connection, partition: str) -> LedgerEntry | None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT file_id, key, etag, status, archive_key FROM covid.ingested_files WHERE partition_key = %s",
            (partition,),
        )
        row = cur.fetchone()
    return _entry(row) if row else None


def _entry(row: tuple) -> LedgerEntry:
    file_id, key, etag, status, archive_key = row
    return LedgerEntry(file_id, key, etag, Status(status), archive_key)


def gates_of(gates) -> dict:
    """A file's gate results (`gates.GateResult`s) as the ledger keeps them."""
    return {g.name: {"passed": g.passed, "blocking": g.blocking, "reason": g.reason} for g in gates}


def gate_results(conn: psycopg2.extensions.connection, file_id: int) -> dict:
    """{gate: {"passed", "blocking", "reason"}} as the file was gated (empty for a file gated before they were
    kept)."""
    with conn.cursor() as cur:
        cur.execute("SELECT gates FROM covid.ingested_files WHERE file_id = %s", (file_id,))
        return cur.fetchone()[0] or {}


def reason(conn: psycopg2.extensions.connection, file_id: int) -> str | None:
    with conn.cursor() as cur:
        cur.execute("SELECT reason FROM covid.ingested_files WHERE file_id = %s", (file_id,))
        return cur.fetchone()[0]


def update(conn: psycopg2.extensions.connection, file_id: int, **fields) -> None:
    """Set ledger columns of one file (names come from this module's callers, never from input)."""
    with transaction(conn) as cur:
        set_fields(cur, file_id, **fields)


def set_fields(cur: psycopg2.extensions.cursor, file_id: int, **fields) -> None:
    """`update` in the caller's transaction."""
    for name in ("columns", "gates"):
        if name in fields:
            fields[name] = Json(fields[name])
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in fields
    )
    cur.execute(
        sql.SQL("UPDATE covid.ingested_files SET {}, processed_at = now() WHERE file_id = %(file_id)s")
        .format(assignments),
        {**fields, "file_id": file_id},
    )


def note_failure(conn: psycopg2.extensions.connection, file_id: int, reason: str, log) -> None:
    """A file still `received` whose step failed for a reason no gate names (a fault, a bug) keeps that reason:
    listed with the quarantined files, not in flight for ever; a run that settles it later clears it.
    Best effort: the connection may be what failed."""
    try:
        if not conn.closed:
            conn.rollback()
        with transaction(conn) as cur:
            cur.execute("UPDATE covid.ingested_files SET reason = %s, processed_at = now() "
                        "WHERE file_id = %s AND status = %s", (reason, file_id, Status.RECEIVED))
    except psycopg2.Error as error:
        log.warning(f"File {file_id}'s failure not recorded in the ledger ({error}): {reason}")


def loaded_with_same_content(conn, dataset: str, sha256: str, file_id: int) -> tuple[int, str] | None:
    """The dataset's previous file in ledger order (quarantined files and duplicates left out), when it has
    these exact bytes and was loaded: loading them again would change nothing. Bytes loaded before another
    file changed some of their values load again, and win as any later file does (a publisher back to an
    earlier version, a user restoring a good file); so does a file whose previous one is still in flight or
    staged, its merge to come (loading identical bytes twice is harmless, where a duplicate's coverage would
    keep that merge from the keys it repeats). A replay decides as a fresh load does (`replay`)."""
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT file_id, key FROM (
                SELECT file_id, key, sha256, status FROM covid.ingested_files
                WHERE dataset = %(dataset)s AND file_id < %(file_id)s AND status NOT IN %(left_out)s
                ORDER BY file_id DESC LIMIT 1
            ) AS previous
            WHERE sha256 = %(sha256)s AND status = %(loaded)s
            """,
            {"dataset": dataset, "sha256": sha256, "file_id": file_id,
             "left_out": (Status.QUARANTINED, Status.DUPLICATE), "loaded": Status.LOADED},
        )
        return cur.fetchone()


def previous_rows(conn, dataset: str, file_id: int) -> int | None:
    """Rows of the last file of the dataset loaded before this one."""
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT rows FROM covid.ingested_files
            WHERE dataset = %s AND status = %s AND file_id < %s
            ORDER BY file_id DESC LIMIT 1
            """,
            (dataset, Status.LOADED, file_id),
        )
        row = cur.fetchone()
    return row[0] if row else None


def rejected_rows(conn, file_id: int) -> int:
    """Rows of the file set aside in covid.rejected_rows."""
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM covid.rejected_rows WHERE file_id = %s", (file_id,))
        return cur.fetchone()[0]


def claim_staged(cur: psycopg2.extensions.cursor, dataset: str) -> list[int]:
    """The dataset's staged files in ledger order, locked until the caller's transaction ends (its merge)."""
    cur.execute(
        "SELECT file_id FROM covid.ingested_files WHERE dataset = %s AND status = %s ORDER BY file_id FOR UPDATE",
        (dataset, Status.STAGED),
    )
    return [file_id for (file_id,) in cur.fetchall()]


def mark_loaded(cur: psycopg2.extensions.cursor, won: dict[int, int]) -> list[tuple[int, str, str, int]]:
    """The merged files `loaded`, each with its rows that the table now holds (file_id → rows won: new,
    revised or repeating the table's values); returns (file_id, key, partition_key, rows_loaded) by file_id."""
    cur.execute(
        """
        UPDATE covid.ingested_files AS f
        SET status = %s, processed_at = now(), rows_loaded = coalesce(won.rows, 0)
        FROM (SELECT unnest(%s::bigint[]) AS file_id, unnest(%s::bigint[]) AS rows) AS won
        WHERE f.file_id = won.file_id
        RETURNING f.file_id, f.key, f.partition_key, f.rows_loaded
        """,
        (Status.LOADED, list(won), list(won.values())),
    )
    return sorted(cur.fetchall())


def archived_files(conn: psycopg2.extensions.connection, dataset: str) -> list[tuple]:
    """(file_id, key, etag, partition_key, status, archive_key) of the dataset's files that have a verdict
    and an archived copy, in ledger order (what a replay gates again)."""
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT file_id, key, etag, partition_key, status, archive_key FROM covid.ingested_files
            WHERE dataset = %s AND status IN (%s, %s, %s) AND archive_key IS NOT NULL
            ORDER BY file_id
            """,
            (dataset, Status.LOADED, Status.QUARANTINED, Status.DUPLICATE),
        )
        return [(*row[:4], Status(row[4]), row[5]) for row in cur.fetchall()]


def forget_rejected_rows(conn: psycopg2.extensions.connection, file_id: int) -> None:
    """Before a file is gated again: the rows it sets aside are the new gates' (see gates._set_aside)."""
    with transaction(conn) as cur:
        cur.execute("DELETE FROM covid.rejected_rows WHERE file_id = %s", (file_id,))


# Each dataset's files by outcome and its rows set aside: the data status the dashboard and the daily
# report show (both read it with their read-only connections), and what its rows_loaded is, as both say it.
ROWS_LOADED = ("each loaded file's rows the table took when it was merged (new, revised or repeating its values), "
               "summed over the files: a row several files sent counts once per file.")
STATUS_BY_DATASET = sql.SQL("""
    SELECT files.*, coalesce(set_aside.rows, 0) AS rows_set_aside
    FROM (
        SELECT dataset,
               max(processed_at) FILTER (WHERE status = {loaded}) AS last_load,
               count(*) FILTER (WHERE status = {loaded}) AS loaded,
               count(*) FILTER (WHERE status = {quarantined}) AS quarantined,
               count(*) FILTER (WHERE status = {duplicate}) AS duplicates,
               -- a version gone before it was archived stays `received`, with its reason: not in progress
               count(*) FILTER (WHERE status IN ({received}, {staged}) AND reason IS NULL) AS in_progress,
               coalesce(sum(rows_loaded) FILTER (WHERE status = {loaded}), 0)::bigint AS rows_loaded
        FROM covid.ingested_files GROUP BY dataset
    ) AS files
    LEFT JOIN (
        SELECT f.dataset, count(*) AS rows
        FROM covid.rejected_rows AS r JOIN covid.ingested_files AS f USING (file_id)
        GROUP BY f.dataset
    ) AS set_aside USING (dataset)
""").format(**{status.name.lower(): sql.Literal(status.value) for status in Status})


def last_loads(conn: psycopg2.extensions.connection) -> dict[str, object]:
    """Each dataset's latest successful load (max processed_at of its loaded files); none before the ledger
    exists."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('covid.ingested_files') IS NOT NULL")
        if not cur.fetchone()[0]:
            return {}
        cur.execute("SELECT dataset, max(processed_at) FROM covid.ingested_files WHERE status = %s GROUP BY dataset",
                    (Status.LOADED,))
        return dict(cur.fetchall())
