"""The ledger `covid.ingested_files`: what happened to every object version seen in the landing zone."""

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extras import Json


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
    status: str


def register(
    conn: psycopg2.extensions.connection, key: str, etag: str, partition: str, dataset: str, run_id: str
) -> LedgerEntry:
    """The ledger row for this object version, created on first sight (committed at once)."""
    with transaction(conn) as cur:
        cur.execute(
            """
            INSERT INTO covid.ingested_files (key, etag, partition_key, dataset, status, run_id)
            VALUES (%s, %s, %s, %s, 'received', %s)
            ON CONFLICT (partition_key) DO UPDATE SET run_id = EXCLUDED.run_id
            RETURNING file_id, key, etag, status
            """,
            (key, etag, partition, dataset, run_id),
        )
        return LedgerEntry(*cur.fetchone())


def lookup(conn: psycopg2.extensions.connection, partition: str) -> LedgerEntry | None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT file_id, key, etag, status FROM covid.ingested_files WHERE partition_key = %s", (partition,)
        )
        row = cur.fetchone()
    return LedgerEntry(*row) if row else None


def update(conn: psycopg2.extensions.connection, file_id: int, **fields) -> None:
    """Set ledger columns of one file (names come from this module's callers, never from input)."""
    if "columns" in fields:
        fields["columns"] = Json(fields["columns"])
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in fields
    )
    with transaction(conn) as cur:
        cur.execute(
            sql.SQL("UPDATE covid.ingested_files SET {}, processed_at = now() WHERE file_id = %(file_id)s")
            .format(assignments),
            {**fields, "file_id": file_id},
        )


def loaded_with_same_content(conn, dataset: str, sha256: str, file_id: int) -> tuple[int, str] | None:
    """An earlier file of the dataset with these exact bytes that was (or is being) loaded."""
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT file_id, key FROM covid.ingested_files
            WHERE dataset = %s AND sha256 = %s AND status IN ('loaded', 'staged') AND file_id <> %s
            ORDER BY file_id LIMIT 1
            """,
            (dataset, sha256, file_id),
        )
        return cur.fetchone()


def previous_rows(conn, dataset: str, file_id: int) -> int | None:
    """Rows of the last file of the dataset loaded before this one."""
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT rows FROM covid.ingested_files
            WHERE dataset = %s AND status = 'loaded' AND file_id < %s
            ORDER BY file_id DESC LIMIT 1
            """,
            (dataset, file_id),
        )
        row = cur.fetchone()
    return row[0] if row else None


def rejected_rows(conn, file_id: int) -> int:
    """Rows of the file set aside in covid.rejected_rows."""
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM covid.rejected_rows WHERE file_id = %s", (file_id,))
        return cur.fetchone()[0]
