"""The PostgreSQL warehouse that holds the `covid` schema."""

import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib import resources

import dagster as dg
import psycopg2
import psycopg2.errors
import psycopg2.extensions

from covid_platform.engine import regions

_migrated: set[str] = set()
_migrate_lock = threading.Lock()


def _sql(name: str) -> str:
    return resources.files("covid_platform.sql").joinpath(name).read_text()


class Warehouse(dg.ConfigurableResource):
    """Connections to the warehouse; the schema and its roles are created on first use (idempotent DDL).

    `connect()` is the loader's connection (DATABASE_URL, the owner of the schema). `connect_read()` is for
    reports and dashboards: a read-only session as the user of the environment variable `read_url_env`
    (DATABASE_READ_URL, a member of covid_reader), or as DATABASE_URL when it is unset. That URL is read when
    used, like the alert webhook, because a `dg.EnvVar` fails every run when its variable is unset, even for
    an optional field."""

    database_url: str
    read_url_env: str = "DATABASE_READ_URL"

    @contextmanager
    def connect(self) -> Iterator[psycopg2.extensions.connection]:
        """A connection with the schema in place; the caller commits, close() rolls back the rest."""
        conn = psycopg2.connect(self.database_url, application_name="covid_platform", options="-c work_mem=128MB")
        try:
            self._migrate(conn)
            yield conn
        finally:
            conn.close()

    @contextmanager
    def connect_read(self) -> Iterator[psycopg2.extensions.connection]:
        """A connection whose transactions are all READ ONLY; it does not migrate (a reader cannot)."""
        url = os.environ.get(self.read_url_env) or self.database_url
        # a server that does not answer (not one that refuses) fails in seconds, not at TCP's timeout: an alert
        # sensor reading the ledger must still send its alert within its tick
        conn = psycopg2.connect(url, application_name="covid_platform_read", connect_timeout=10)
        try:
            conn.set_session(readonly=True)
            yield conn
        finally:
            conn.close()

    def _migrate(self, conn: psycopg2.extensions.connection) -> None:
        with _migrate_lock:
            if self.database_url in _migrated:
                return
            with conn, conn.cursor() as cur:
                # Most starts find this version's schema in place and run no DDL: its locks would conflict with
                # the runs at work (a worker holding the ledger's rows, waiting on the migration's CREATE INDEX,
                # while the migration waits on it). Several run workers may start at once: one migrates, the
                # others wait, then find it done.
                if not _migrated_here(cur):
                    cur.execute("SELECT pg_advisory_xact_lock(hashtext('covid_platform.schema'))")
                    if not _migrated_here(cur):
                        _run_migration(cur)
            _migrated.add(self.database_url)


@cache
def _digest() -> str:
    """This version's schema, roles and regions, read once per process."""
    files = resources.files("covid_platform")
    paths = (("sql", "schema.sql"), ("sql", "roles.sql"), regions.REGIONS_CSV)
    return hashlib.sha256(b"".join(files.joinpath(*path).read_bytes() for path in paths)).hexdigest()


def _migrated_here(cur) -> bool:
    """Whether this version's schema, regions and roles are in place: the roles' privileges unless they could
    not be granted and no role has been created since."""
    cur.execute("SELECT to_regclass('covid.migrated') IS NOT NULL")
    if not cur.fetchone()[0]:
        return False
    cur.execute("SELECT EXISTS (SELECT FROM covid.migrated WHERE digest = %s AND (roles_granted OR"
                " (SELECT count(*) FROM pg_roles WHERE rolname IN ('covid_loader', 'covid_reader')) <= roles_found))",
                (_digest(),))
    return cur.fetchone()[0]


def _run_migration(cur) -> None:
    cur.execute("SELECT count(*) FROM pg_roles WHERE rolname IN ('covid_loader', 'covid_reader')")
    (roles_found,) = cur.fetchone()
    cur.execute(_sql("schema.sql"))
    regions.load(cur)  # the packaged geography, as this version ships it
    cur.execute("SAVEPOINT roles")
    try:
        cur.execute(_sql("roles.sql"))
        granted = True
    except psycopg2.errors.InsufficientPrivilege as error:
        # A user without CREATEROLE still loads; only the reader/loader split is missing.
        cur.execute("ROLLBACK TO SAVEPOINT roles")
        granted = False
        dg.get_dagster_logger("covid_platform.warehouse").warning(
            "Roles covid_loader / covid_reader not set up (%s). Create them as an administrator "
            "(CREATE ROLE covid_loader NOLOGIN; CREATE ROLE covid_reader NOLOGIN); the platform "
            "grants their privileges on its next start.",
            error.diag.message_primary,
        )
    # one row per version: a version started again after another (a rollback, two versions deployed side by
    # side) finds its own and does not migrate at every start
    cur.execute("INSERT INTO covid.migrated (digest, roles_granted, roles_found) VALUES (%s, %s, %s)"
                " ON CONFLICT (digest) DO UPDATE SET roles_granted = EXCLUDED.roles_granted,"
                " roles_found = EXCLUDED.roles_found, migrated_at = now()", (_digest(), granted, roles_found))
