"""The API's response bodies; FastAPI publishes them as the OpenAPI description (/openapi.json)."""

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field


class Problem(BaseModel):
    """Every error answer (400, 404, 503)."""

    detail: str = Field(description="What was wrong, naming the parameter or table.")
    parameter: str | None = Field(None, description="The request parameter at fault (400 only).")


class DatasetLoad(BaseModel):
    dataset: str
    last_load: dt.datetime | None = Field(description="When its latest file finished loading; null before any.")


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["reachable"]
    datasets: list[DatasetLoad]


class ColumnInfo(BaseModel):
    name: str
    type: str = Field(description="PostgreSQL type: text, date, bigint or double precision.")
    nullable: bool = Field(description="Whether the column may be empty (null: not reported).")
    description: str | None = Field(description="Its definition (clean tables; a summary is described as a whole).")


class TableInfo(BaseModel):
    name: str
    kind: Literal["clean", "summary"]
    description: str
    built: bool = Field(description="False for a summary not built yet (its columns are then unknown).")
    key: list[str] = Field(description="The row key: rows are served in its order.")
    filters: list[str] = Field(description="Query parameters that filter on a column (repeatable).")
    columns: list[ColumnInfo]


class Freshness(BaseModel):
    last_load: dt.datetime | None
    freshness_hours: float = Field(description="The longest age of the last load before the tables are stale.")
    stale: bool = Field(description="No load yet, or the last one is older than freshness_hours.")


class DatasetInfo(BaseModel):
    name: str
    landing_prefix: str = Field(description="Where its files are dropped: <LANDING_URL>/<landing_prefix>")
    tables: list[TableInfo]
    freshness: Freshness


class TablePage(BaseModel):
    """One page of a table's rows in key order; `next_cursor` asks for the next one."""

    table: str
    columns: list[str]
    rows: list[dict[str, Any]] = Field(description="Objects keyed by column; dates as YYYY-MM-DD, empty as null.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the following page; null on the last page.")
