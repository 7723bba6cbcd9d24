"""Every error the API answers, as a `Problem` body: 400 naming the parameter, 404, 503 with Retry-After."""

import psycopg2
import psycopg2.extensions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from covid_platform.api.pool import Unavailable

RETRY_AFTER_SECONDS = "5"


class BadParameter(Exception):
    def __init__(self, parameter: str, detail: str):
        super().__init__(detail)
        self.parameter = parameter
        self.detail = detail


class NotFound(Exception):
    pass


def problem(status: int, detail: str, parameter: str | None = None) -> JSONResponse:
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
    return JSONResponse({"detail": detail, "parameter": parameter}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(BadParameter)
    def bad_parameter(request: Request, error: BadParameter):
        return problem(400, f"{error.parameter}: {error.detail}", error.parameter)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, error: RequestValidationError):
        # FastAPI answers 422 by default; a wrong query parameter is a plain bad request, named like ours.
        first = error.errors()[0]
        name = str(first["loc"][-1]) if first.get("loc") else "request"
        return problem(400, f"{name}: {first['msg']}", name)

    @app.exception_handler(NotFound)
    def not_found(request: Request, error: NotFound):
        return problem(404, str(error))

    @app.exception_handler(Unavailable)
    def unavailable(request: Request, error: Unavailable):
        return problem(503, str(error))

    @app.exception_handler(psycopg2.extensions.QueryCanceledError)
    def too_slow(request: Request, error: Exception):
        return problem(503, "the query ran past the API's statement timeout; ask for fewer rows (limit)")

    @app.exception_handler(psycopg2.OperationalError)
    @app.exception_handler(psycopg2.InterfaceError)
    def lost(request: Request, error: Exception):
        return problem(503, "the warehouse connection failed; try again")
