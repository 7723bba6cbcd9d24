"""GET /v1/tables/{table}: a declared table's rows, filtered, in key order, a page at a time, JSON or CSV."""

import datetime as dt
import re
from dataclasses import dataclass, replace
from typing import Annotated, Literal

import psycopg2.extensions
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BeforeValidator

from covid_platform.api import catalog
from covid_platform.api.deps import read_connection
from covid_platform.api.errors import BadParameter, NotFound
from covid_platform.api.models import Problem, TablePage
from covid_platform.api.tables import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    PageRequest,
    csv_body,
    json_body,
    page_request,
    parse_as_of,
    read_page,
)
from covid_platform.datasets import API_PARAMETERS

router = APIRouter(prefix="/v1", tags=["tables"])

# The filters differ by table (its region columns, see /v1/datasets), so they are one free-form, exploded
# parameter in the description: `?state=Ohio&state=Texas`.
FILTERS = {
    "name": "filters", "in": "query", "required": False, "style": "form", "explode": True,
    "description": "One parameter per filter column of the table (`filters` in /v1/datasets: its region "
                   "columns), e.g. `state=Ohio`; repeat it for several values (`state=Ohio&state=Texas`). "
                   "Values match exactly, case included (an empty page for a value the table holds in "
                   "another case, or a region it writes otherwise (`OH` for `Ohio`), is a 400 naming it). Any other "
                   "name is a 400.",
    "schema": {"type": "object", "additionalProperties": {"type": "string"}},
}
AS_OF = ("The table as it was at this time (ISO 8601, e.g. 2021-03-18T00:00:00Z; UTC when no zone is given): "
         "each key's values from the latest file issued by then, derived columns recomputed (clean tables and "
         "national_daily); for /revisions, only the versions issued by then.")
CSV = {"text/csv": {"schema": {"type": "string"}, "example": "state,date,cases\nOhio,2021-01-01,712767\n"}}
LINK = {"Link": {"description": 'The next page: `<url>; rel="next"` (absent on the last page).',
                 "schema": {"type": "string"}}}


TABLE = Path(description="A clean or summary table (see /v1/datasets).",
             json_schema_extra={"enum": sorted(catalog.declared())})  # described, not validated: 404, not 400


async def declared_table(table: Annotated[str, TABLE]) -> str:
    """404 for a name no declaration gives, before a connection is taken."""
    if table not in catalog.declared():
        raise NotFound(f"no table {table!r}; the tables are listed by /v1/datasets")
    return table


@dataclass(frozen=True)
class Params:
    """The parameters both table endpoints take, each at most once (the filters may repeat)."""

    columns: str | None
    format: str
    limit: int
    cursor: str | None
    first: dt.date | None
    last: dt.date | None
    as_of: str | None


def _iso_date(value):
    """A date written YYYY-MM-DD: pydantic would also read a number as a Unix time (`from=0` as 1970-01-01)."""
    if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError(f"expected a date written YYYY-MM-DD, found {value!r}")
    return value


IsoDate = Annotated[dt.date, BeforeValidator(_iso_date)]


def table_params(
    request: Request,
    columns: Annotated[str | None, Query(description="Comma-separated columns to return (default: all).")] = None,
    format: Annotated[Literal["json", "csv"], Query(
        description="json (a TablePage) or csv (a header line, then rows; the next page in the Link header)")] = "json",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Rows per page.")] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page (opaque).")] = None,
    first: Annotated[IsoDate | None, Query(alias="from", description="First date, YYYY-MM-DD (inclusive).")] = None,
    last: Annotated[IsoDate | None, Query(alias="to", description="Last date, YYYY-MM-DD (inclusive).")] = None,
    as_of: Annotated[str | None, Query(description=AS_OF)] = None,
) -> Params:
    # FastAPI keeps the last of a repeated scalar parameter: a request that says two things is refused instead
    repeated = [name for name in API_PARAMETERS if len(request.query_params.getlist(name)) > 1]
    if repeated:
        raise BadParameter(repeated[0], "given more than once")
    return Params(columns, format, limit, cursor, first, last, as_of)


def _described(what: str, not_found: str) -> dict:
    """The OpenAPI description both table endpoints share: a page of `what`, JSON or CSV; their errors."""
    return {
        "response_model": TablePage,
        "responses": {
            200: {"content": CSV, "headers": LINK, "description": f"A page of {what} (JSON, or CSV with `format=csv`)"},
            400: {"model": Problem, "description": "A bad parameter, named"},
            404: {"model": Problem, "description": not_found},
            503: {"model": Problem, "description": "Warehouse unreachable, or the statement timeout"},
        },
        "openapi_extra": {"parameters": [FILTERS]},
    }


@router.get(
    "/tables/{table}",
    **_described("rows", "No such table, or a summary not built yet"),
)
def read_table(
    request: Request,
    table: Annotated[str, Depends(declared_table)],
    conn: Annotated[psycopg2.extensions.connection, Depends(read_connection)],
    params: Annotated[Params, Depends(table_params)],
) -> Response:
    """Rows ordered by the table's key; only declared tables and columns; a summary is served once built.
    With `as_of`, the table as it was then (clean tables and national_daily)."""
    described = catalog.table(conn, table)
    if described is None:
        raise NotFound(f"{table} is declared but not built yet (its dataset has loaded nothing)")
    function = catalog.as_of_function(conn, described)
    page = _page(request, described, params, as_of=function is not None)
    when = parse_as_of(params.as_of)
    if when is not None:
        if function is None:
            raise BadParameter("as_of", f"{table} keeps no past versions (clean tables and national_daily do)")
        page = replace(page, as_of=when, as_of_function=function)
    return _respond(request, conn, page, params.format)


@router.get(
    "/tables/{table}/revisions",
    **_described("versions", "No such table, or a summary (summaries keep no history)"),
)
def read_revisions(
    request: Request,
    table: Annotated[str, Depends(declared_table)],
    conn: Annotated[psycopg2.extensions.connection, Depends(read_connection)],
    params: Annotated[Params, Depends(table_params)],
) -> Response:
    """Every version of a clean table's values (`covid.<table>_history`): a row where a file's values for a key
    were new or differed from the version before it, with the file (`file_id`) and its `issued_at`; ordered by
    key, then ledger order."""
    dataset, kind = catalog.declared()[table]
    if kind != catalog.CLEAN:
        raise NotFound(f"{table} is a summary: summaries keep no history (its clean table does)")
    described = catalog.history_table(dataset)
    page = replace(_page(request, described, params), as_of=parse_as_of(params.as_of))
    return _respond(request, conn, page, params.format)


def _page(request: Request, described: catalog.Table, params: Params, as_of: bool = True) -> PageRequest:
    return page_request(described, request.query_params.multi_items(), params.columns, params.first, params.last,
                        params.cursor, params.limit, as_of)


def _respond(request: Request, conn, page: PageRequest, format: str) -> Response:
    result = read_page(conn, page, as_json=format == "json")
    headers = {}
    if result.next_cursor:
        headers["Link"] = f'<{request.url.include_query_params(cursor=result.next_cursor)}>; rel="next"'
    if format == "csv":
        return Response(csv_body(page, result), media_type="text/csv; charset=utf-8", headers=headers)
    return Response(json_body(page, result), media_type="application/json", headers=headers)
