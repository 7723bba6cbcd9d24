"""A page of a table: the request's parameters checked against the table, and the one statement that reads it.

Identifiers come only from the table's description (`catalog`), quoted with psycopg2.sql; every value of the
request is a bound parameter. Pages are keyset pages: ordered by the table's key, the next page starts after
the last key served (carried in an opaque cursor), so a page costs one index range scan however deep it is.
"""

import base64
import binascii
import csv
import datetime as dt
import io
import json
import re
from dataclasses import dataclass

import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from covid_platform.api.catalog import SCHEMA, Table
from covid_platform.api.errors import BadParameter
from covid_platform.datasets import API_PARAMETERS, DATASETS

# the columns that name a region as covid.regions does (by name or by code: `state`)
REGION_NAMES = {column for dataset in DATASETS.values() for column in dataset.region_names}

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_VALUE_LENGTH = 1000


@dataclass(frozen=True)
class PageRequest:
    table: Table
    columns: tuple[str, ...]
    filters: dict[str, list[str]]
    first: dt.date | None
    last: dt.date | None
    after: tuple | None
    """The key of the previous page's last row."""
    limit: int
    as_of: dt.datetime | None = None
    """The table as it was then (read from its as-of function, `as_of_function`); for a history table, only
    the versions issued by then."""
    as_of_function: str | None = None


def parse_as_of(value: str | None) -> dt.datetime | None:
    """An ISO 8601 date or time; one without a zone is UTC. A date alone is its last moment: the table as it
    was once that day's files were in."""
    if value is None:
        return None
    try:
        return dt.datetime.combine(dt.date.fromisoformat(value.strip()), dt.time.max, tzinfo=dt.timezone.utc)
    except ValueError:
        pass  # not a date alone
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        # a zone's '+' left unencoded in the URL arrives as a space: a time, a space, an offset's digits
        offset_as_space = re.search(r"[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)? [0-9]{2}(:?[0-9]{2})?$", value.strip())
        hint = "; a '+' in a URL's query reads as a space: write it %2B, or give the time in UTC with Z" \
            if offset_as_space else ""
        raise BadParameter("as_of", f"not an ISO 8601 time (e.g. 2021-03-18T00:00:00Z): {value[:40]!r}{hint}")
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def page_request(table: Table, query: list[tuple[str, str]], columns: str | None, first: dt.date | None,
                 last: dt.date | None, cursor: str | None, limit: int, as_of: bool = True) -> PageRequest:
    """The request checked against the table (`as_of`: whether it takes one); a BadParameter names what is
    wrong."""
    filters: dict[str, list[str]] = {}
    for name, value in query:
        if name in API_PARAMETERS:
            continue
        if name not in table.filters:
            known = ", ".join(table.filters) or "none"
            others = [p for p in API_PARAMETERS
                      if (table.has_date or p not in ("from", "to")) and (as_of or p != "as_of")]
            raise BadParameter(name, f"not a parameter of {table.name} (its filters: {known}; "
                                     f"and {', '.join(others)})")
        filters.setdefault(name, []).append(_text(name, value))
    for name, value in (("from", first), ("to", last)):
        if value is not None and not table.has_date:
            raise BadParameter(name, f"{table.name} has no date column")
    if first is not None and last is not None and first > last:
        raise BadParameter("from", f"{first} is after to ({last}): no date is in that range")
    return PageRequest(table, _columns(table, columns), filters, first, last, decode_cursor(table, cursor), limit)


def _text(name: str, value: str) -> str:
    if "\x00" in value or len(value) > MAX_VALUE_LENGTH:
        raise BadParameter(name, f"a value holds a NUL character or is longer than {MAX_VALUE_LENGTH} characters")
    return value


def _columns(table: Table, requested: str | None) -> tuple[str, ...]:
    names = [name.strip() for name in (requested or "").split(",") if name.strip()]
    if requested is not None and not names:
        raise BadParameter("columns", f"names no column: leave it out for all, or name some of {table.name}'s "
                                      f"({', '.join(table.column_names)})")
    unknown = [name for name in names if name not in table.column_names]
    if unknown:
        raise BadParameter("columns", f"{table.name} has no column {unknown[0]!r} (its columns: "
                                      f"{', '.join(table.column_names)})")
    return tuple(dict.fromkeys(names)) or table.column_names


def encode_cursor(table: Table, key: tuple) -> str:
    values = [value.isoformat() if isinstance(value, dt.date) else value for value in key]
    text = json.dumps({"table": table.name, "after": values}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(table: Table, cursor: str | None) -> tuple | None:
    """The key a cursor of this table carries; anything else (another table's, edited, truncated) is a 400."""
    if cursor is None:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        values = data["after"]
        if data["table"] != table.name or not isinstance(values, list) or len(values) != len(table.key):
            raise ValueError
        return tuple(_key_value(table, column, value) for column, value in zip(table.key, values))
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError):
        raise BadParameter("cursor", f"not a cursor of {table.name}: pass next_cursor of its previous page")


def _key_value(table: Table, column: str, value):
    kind = table.column(column).type
    if kind == "date" and isinstance(value, str):
        return dt.date.fromisoformat(value)
    if kind in ("bigint", "integer", "smallint") and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "text" and isinstance(value, str) and "\x00" not in value:
        return value
    raise ValueError(column)


def statement(page: PageRequest, as_json: bool) -> tuple[sql.Composed, list]:
    """SELECT the key, then either one JSON object per row (written by PostgreSQL: to_json of a row of the
    requested columns, the cheapest way measured, and no per-value work in Python) or the requested columns;
    one row more than the limit tells whether a next page exists."""
    def column(name: str) -> sql.Identifier:
        return sql.Identifier("s", name)

    conditions, params = [], []
    for name, values in page.filters.items():
        conditions.append(sql.SQL("{} = ANY (%s::text[])").format(column(name)))
        params.append(values)
    if page.first is not None:
        conditions.append(sql.SQL("{} >= %s").format(column("date")))
        params.append(page.first)
    if page.last is not None:
        conditions.append(sql.SQL("{} <= %s").format(column("date")))
        params.append(page.last)
    if page.as_of is not None and page.as_of_function is None:  # a history table: the versions issued by then
        conditions.append(sql.SQL("{} <= %s").format(column("issued_at")))
        params.append(page.as_of)
    key = sql.SQL(", ").join(map(column, page.table.key))
    if page.after is not None:
        conditions.append(sql.SQL("({}) > ({})").format(key, sql.SQL(", ").join([sql.Placeholder()] * len(page.after))))
        params.extend(page.after)
    columns = sql.SQL(", ").join(map(column, page.columns))
    if as_json:
        payload, lateral = sql.SQL("to_json(r)::text"), sql.SQL(", LATERAL (SELECT {}) AS r").format(columns)
    else:
        payload, lateral = columns, sql.SQL("")
    params.append(page.limit + 1)
    if page.as_of_function is not None:  # its argument comes first in the statement
        source = sql.SQL("{}(%s)").format(sql.Identifier(SCHEMA, page.as_of_function))
        params.insert(0, page.as_of)
    else:
        source = sql.Identifier(SCHEMA, page.table.name)
    return sql.SQL(
        "SELECT {key}, {payload} FROM {table} AS s{lateral} WHERE {conditions} ORDER BY {key} LIMIT %s"
    ).format(
        key=key, payload=payload, table=source, lateral=lateral,
        conditions=sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("TRUE"),
    ), params


@dataclass(frozen=True)
class Page:
    rows: list[tuple]
    """Each row's requested values: (json text,) or the columns' values."""
    next_cursor: str | None


def read_page(conn: psycopg2.extensions.connection, page: PageRequest, as_json: bool) -> Page:
    statement_, params = statement(page, as_json)
    with conn.cursor() as cur:
        try:
            cur.execute(statement_, params)
        except (psycopg2.errors.UndefinedTable, psycopg2.errors.UndefinedFunction):
            return Page([], None)  # a declared clean table its dataset has not created yet: no rows
        rows = cur.fetchall()
        if not rows and page.after is None and page.filters:
            _refuse_other_case(cur, page)
    width = len(page.table.key)
    more = len(rows) > page.limit
    rows = rows[:page.limit]
    cursor = encode_cursor(page.table, rows[-1][:width]) if more else None
    return Page([row[width:] for row in rows], cursor)


def _refuse_other_case(cur, page: PageRequest) -> None:
    """An empty first page where a filter's value is in the table only in another case (`ohio`): a 400 naming
    the value the table has, rather than no rows and no hint. Filters stay exact. Where some row has the
    filters' values (the page is empty for its dates or time), one index lookup says so; else one scan per
    filter column looks for the values in any case, and a scan the statement timeout stops leaves the page
    empty (the session is in autocommit: the next statement runs)."""
    table = sql.Identifier(SCHEMA, page.table.name)
    matches = sql.SQL(" AND ").join(sql.SQL("{} = ANY (%s::text[])").format(sql.Identifier(name))
                                    for name in page.filters)
    try:
        cur.execute(sql.SQL("SELECT EXISTS (SELECT FROM {} WHERE {})").format(table, matches),
                    list(page.filters.values()))
        if cur.fetchone()[0]:
            return
        for name, values in page.filters.items():
            cur.execute(sql.SQL("SELECT DISTINCT {c} FROM {t} WHERE lower({c}) = ANY (%s::text[])").format(
                c=sql.Identifier(name), t=table), (sorted({value.lower() for value in values}),))
            found = [value for value, in cur.fetchall()]
            held = {value.lower(): value for value in found}
            for value in values:
                if value not in found and value.lower() in held:
                    held_value = held[value.lower()]
                    raise BadParameter(name, f"no row has {name} {value!r}; the table has {held_value!r} "
                                             "(filters match exactly, case included)")
            if name in REGION_NAMES:
                _refuse_other_spelling(cur, page, name, [value for value in values if value not in found])
    except psycopg2.extensions.QueryCanceledError:
        return


def _refuse_other_spelling(cur, page: PageRequest, name: str, values: list[str]) -> None:
    """A region named as the table does not write it (`New York` where testing_daily has `NY`, or the other
    way): a 400 naming the table's spelling."""
    for value in values:
        # the region by its name or any of its codes, normalised as covid.region_keys keeps them
        cur.execute("SELECT ARRAY[r.name, r.code] FROM covid.region_keys AS k JOIN covid.regions AS r USING (fips) "
                    "WHERE (k.naming = 'name' AND k.key = lower(%s)) OR (k.naming = 'code' AND k.key = upper(%s))",
                    (value, value))
        spellings = [spelling for (row,) in cur.fetchall() for spelling in row if spelling and spelling != value]
        if not spellings:
            continue
        cur.execute(sql.SQL("SELECT {c} FROM {t} WHERE {c} = ANY (%s::text[]) LIMIT 1").format(
            c=sql.Identifier(name), t=sql.Identifier(SCHEMA, page.table.name)), (spellings,))
        held = cur.fetchone()
        if held:
            raise BadParameter(name, f"no row has {name} {value!r}; the table writes that region {held[0]!r} "
                                     "(filters match exactly)")


def json_body(page: PageRequest, result: Page) -> str:
    """The TablePage object, the rows spliced in as PostgreSQL wrote them."""
    head = json.dumps({"table": page.table.name, "columns": list(page.columns)})[:-1]
    rows = ",".join(row[0] for row in result.rows)
    return f'{head},"rows":[{rows}],"next_cursor":{json.dumps(result.next_cursor)}}}'


def csv_body(page: PageRequest, result: Page) -> str:
    """A header of the columns, then one line per row; an empty field is null (not reported), dates ISO."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(page.columns)
    # a time as the JSON pages write it (ISO 8601, 'T'), not as str() does
    writer.writerows([value.isoformat() if isinstance(value, dt.datetime) else value for value in row]
                     for row in result.rows)
    return out.getvalue()
