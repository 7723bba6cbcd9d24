"""The request's read-only connection, from the app's pool (see pool.py: read-only autocommit sessions whose
every statement is bounded by the statement timeout)."""

from collections.abc import AsyncIterator

import psycopg2.extensions
from fastapi import Request


async def read_connection(request: Request) -> AsyncIterator[psycopg2.extensions.connection]:
    async with request.app.state.pool.connection() as conn:
        yield conn
