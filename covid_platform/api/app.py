"""The FastAPI application and `covid-platform api`'s server (uvicorn)."""

import os
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from covid_platform.api import errors
from covid_platform.api.pool import ReadPool
from covid_platform.api.routers import datasets, health, tables

STATEMENT_TIMEOUT_MS = 5000
POOL_SIZE = 8
DESCRIPTION = """The platform's tables, read-only: each dataset's clean table and summaries (`/v1/datasets`
describes them and their columns), a page of rows at a time (`/v1/tables/{table}`), JSON or CSV."""


def create_app(database_url: str | None = None, *, pool_size: int = POOL_SIZE,
               statement_timeout_ms: int = STATEMENT_TIMEOUT_MS, read_url_env: str = "DATABASE_READ_URL") -> FastAPI:
    """The API on `read_url_env`'s login (read-only sessions), else `database_url` (default DATABASE_URL)."""
    pool = ReadPool(database_url or os.environ.get("DATABASE_URL", ""), size=pool_size,
                    statement_timeout_ms=statement_timeout_ms, read_url_env=read_url_env)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        pool.close()

    app = FastAPI(title="covid_platform read API", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.state.pool = pool
    errors.install(app)
    for router in (health.router, datasets.router, tables.router):
        app.include_router(router)
    app.openapi = lambda: _openapi(app)
    app.add_middleware(HeadAsGet)
    return app


class HeadAsGet:
    """A HEAD request answered as its GET (monitors, `curl -I`): the same status and headers; the server
    sends no body in answer to a HEAD. FastAPI's routes, unlike Starlette's own, answer only the methods
    they declare."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)


def _openapi(app: FastAPI) -> dict:
    """FastAPI's description, less the 422 it adds to every operation: bad parameters are 400s here."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation["responses"].pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def serve(port: int, address: str, workers: int = 1) -> None:
    # an import string, so that each of several worker processes builds its own app and pool
    uvicorn.run("covid_platform.api.app:create_app", factory=True, host=address, port=port, workers=workers,
                log_level="info")
