"""A small pool of read-only warehouse connections, handed out on the API's event loop.

Each connection is opened by `Warehouse.connect_read()` (DATABASE_READ_URL, else DATABASE_URL) and kept open
across requests: a new PostgreSQL session per request would cost more than the request's query. Sessions are
in autocommit, read-only (`default_transaction_read_only`) with a `statement_timeout`: each statement is its
own read-only transaction, bounded, and a request costs no BEGIN/COMMIT round trips. A connection that failed
(server restarted, network cut) is closed, not reused.

Taking and returning a connection happen on the event loop (no thread hop: with 50 clients at once, the
hops cost more than the query); only opening one, which may wait for the network, runs in a thread.
"""

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager

import anyio.to_thread
import psycopg2
import psycopg2.extensions

from covid_platform.resources.warehouse import Warehouse

# libpq's connect timeout (seconds) for every connection of this process unless the environment sets one:
# Warehouse.connect_read passes none, and /health must answer 503 quickly when the server does not answer.
CONNECT_TIMEOUT = "3"
LOG = logging.getLogger("covid_platform.api")


class Unavailable(Exception):
    """The warehouse cannot be reached, or every connection stayed busy too long."""


class ReadPool:
    def __init__(self, database_url: str, size: int, statement_timeout_ms: int, wait_seconds: float = 10,
                 read_url_env: str = "DATABASE_READ_URL"):
        os.environ.setdefault("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT)
        self._warehouse = Warehouse(database_url=database_url, read_url_env=read_url_env)
        self._statement_timeout_ms = statement_timeout_ms
        self._slots = asyncio.Semaphore(size)  # bound to the loop that first waits on it: the server's
        self._wait_seconds = wait_seconds
        self._idle: list[tuple[psycopg2.extensions.connection, ExitStack]] = []
        self._lock = threading.Lock()  # close() may come from another thread

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg2.extensions.connection]:
        try:
            await asyncio.wait_for(self._slots.acquire(), self._wait_seconds)
        except TimeoutError:
            raise Unavailable(f"every warehouse connection stayed busy for {self._wait_seconds:g} s") from None
        try:
            conn, closer = self._take() or await anyio.to_thread.run_sync(self._open)
            broken = False
            try:
                yield conn
            except psycopg2.extensions.QueryCanceledError:
                raise  # the statement timeout: the session is fine
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                broken = True
                raise
            finally:
                if broken or conn.closed:
                    closer.close()
                else:
                    with self._lock:
                        self._idle.append((conn, closer))
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, closer in idle:
            closer.close()

    def _take(self):
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _open(self):
        closer = ExitStack()
        try:
            conn = closer.enter_context(self._warehouse.connect_read())
            # connect_read's READ ONLY applies to transactions; in autocommit it must be the session default
            conn.set_session(readonly=True, autocommit=True)
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = %s", (self._statement_timeout_ms,))
        except psycopg2.OperationalError as error:
            closer.close()
            # libpq's message (host, port, never the password) goes to the log, not to the client
            LOG.warning("warehouse not reachable: %s", str(error).strip())
            raise Unavailable("the warehouse is not reachable") from error
        return conn, closer
