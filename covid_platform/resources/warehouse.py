"""The PostgreSQL warehouse that holds the `covid` schema."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

import dagster as dg
import psycopg2
import psycopg2.extensions

_migrated: set[str] = set()
_migrate_lock = threading.Lock()


class Warehouse(dg.ConfigurableResource):
    """Connections to the warehouse; the schema is created on first use (idempotent DDL)."""

    database_url: str

    @contextmanager
    def connect(self) -> Iterator[psycopg2.extensions.connection]:
        """A connection with the schema in place; the caller commits, close() rolls back the rest."""
        conn = psycopg2.connect(self.database_url, application_name="covid_platform")
        try:
            self._migrate(conn)
            yield conn
        finally:
            conn.close()

    def _migrate(self, conn: psycopg2.extensions.connection) -> None:
        with _migrate_lock:
            if self.database_url in _migrated:
                return
            ddl = resources.files("covid_platform.sql").joinpath("schema.sql").read_text()
            with conn, conn.cursor() as cur:
                # Several run workers may start at once: one migrates, the others wait.
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('covid_platform.schema'))")
                cur.execute(ddl)
            _migrated.add(self.database_url)
