"""GET /v1/datasets: what can be read, what each column means, and how fresh it is."""

import datetime as dt
from typing import Annotated

import psycopg2.extensions
from fastapi import APIRouter, Depends
from pydantic import BaseModel

from covid_platform.api import catalog
from covid_platform.api.deps import read_connection
from covid_platform.api.models import ColumnInfo, DatasetInfo, Freshness, Problem, TableInfo
from covid_platform.datasets import DATASETS
from covid_platform.engine import ledger
from covid_platform.engine.tables import summary_description

router = APIRouter(prefix="/v1", tags=["datasets"])


class DatasetList(BaseModel):
    datasets: list[DatasetInfo]


@router.get("/datasets", response_model=DatasetList, responses={503: {"model": Problem}})
def datasets(conn: Annotated[psycopg2.extensions.connection, Depends(read_connection)]) -> DatasetList:
    """Each dataset: its clean table and summaries (columns, key, filters), its last load and freshness."""
    loads = ledger.last_loads(conn)
    summaries = catalog.summary_tables(conn, [name for d in DATASETS.values() for name in d.summaries])
    with conn.cursor() as cur:
        cur.execute(
            "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(%s || '.' || name) IS NOT NULL",
            ([d.table for d in DATASETS.values()], catalog.SCHEMA),
        )
        created = {row[0] for row in cur.fetchall()}
    now = dt.datetime.now(dt.UTC)
    answer = []
    for dataset in DATASETS.values():
        tables = [_info(catalog.clean_table(dataset), dataset.table in created)]
        for name in dataset.summaries:
            built = summaries.get(name)
            tables.append(_info(built, True) if built else TableInfo(
                name=name, kind="summary", description=summary_description(name), built=False,
                key=[], filters=[], columns=[]))
        last = loads.get(dataset.name)
        stale = last is None or now - last > dt.timedelta(hours=dataset.freshness_hours)
        answer.append(DatasetInfo(name=dataset.name, landing_prefix=f"{dataset.name}/", tables=tables,
                                  freshness=Freshness(last_load=last, freshness_hours=dataset.freshness_hours,
                                                      stale=stale)))
    return DatasetList(datasets=answer)


def _info(table: catalog.Table, built: bool) -> TableInfo:
    return TableInfo(
        name=table.name, kind=table.kind, description=table.description, built=built, key=list(table.key),
        filters=list(table.filters),
        columns=[ColumnInfo(name=c.name, type=c.type, nullable=c.nullable, description=c.description)
                 for c in table.columns],
    )
