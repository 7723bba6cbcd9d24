"""GET /health: for load balancers and monitors; 503 when the warehouse cannot be reached."""

from typing import Annotated

import psycopg2.extensions
from fastapi import APIRouter, Depends

from covid_platform.api.deps import read_connection
from covid_platform.api.models import DatasetLoad, Health, Problem
from covid_platform.datasets import DATASETS
from covid_platform.engine import ledger

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health,
            responses={503: {"model": Problem, "description": "Warehouse unreachable"}})
def health(conn: Annotated[psycopg2.extensions.connection, Depends(read_connection)]) -> Health:
    """The warehouse answers; each dataset's last load (null before its first)."""
    loads = ledger.last_loads(conn)
    return Health(status="ok", database="reachable",
                  datasets=[DatasetLoad(dataset=name, last_load=loads.get(name)) for name in DATASETS])
