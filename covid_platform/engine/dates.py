"""A date column read in its declared `strptime` format by set-based SQL.

PostgreSQL 15 has no pg_input_is_valid, and one bad cast aborts the whole scan: a value is matched by a
regular expression first (its fields captured), checked to name a real day, and only then built with
make_date, so a bad date is a bad row with a reason, never an error. Without a declared format a date is
written YYYY-MM-DD (or as Socrata's midnight timestamps), read by the cheaper expressions below.
"""

import re
from datetime import date, datetime

from psycopg2 import sql

# strptime directive → (field, regular expression of its text)
DIRECTIVES = {
    "%Y": ("year", "([0-9]{4})"),
    "%y": ("year2", "([0-9]{2})"),
    "%m": ("month", "([0-9]{1,2})"),
    "%d": ("day", "([0-9]{1,2})"),
    "%b": ("month_name", "([A-Za-z]{3})"),
}
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
EXAMPLE = date(2020, 1, 22)

# A YYYY-MM-DD string (optionally at midnight, as Socrata's floating timestamps are) that names a real day.
# CASE guarantees the regex is tested before the arithmetic.
ISO_OK = """CASE WHEN {v} ~ '^[1-9][0-9][0-9][0-9]-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])(T00:00:00(\\.0+)?)?$'
  THEN substr({v}, 9, 2)::int <= extract(day FROM make_date(substr({v}, 1, 4)::int, substr({v}, 6, 2)::int, 1)
                                                  + interval '1 month - 1 day')
  ELSE false END"""
# What the gates admitted (PostgreSQL's own date input would also take 01/05/2021: the gates say which).
ISO_VALUE = ("CASE WHEN length({v}) = 10 AND substr({v}, 5, 1) = '-' AND substr({v}, 8, 1) = '-' THEN {v}::date "
             r"WHEN {v} ~ '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}T00:00:00(\.0+)?$' THEN left({v}, 10)::date END")


class DateFormatError(ValueError):
    pass


def pattern(fmt: str) -> tuple[str, list[str]]:
    """The anchored regular expression of a format and the field each of its groups captures.

    Raises DateFormatError for a directive other than %Y %y %m %d %b (and %%), or a format without exactly
    one year, one month and one day."""
    regex, groups = "", []
    for literal, directive in re.findall(r"([^%]*)(%.?)?", fmt):
        regex += re.escape(literal)
        if not directive:
            continue
        if directive == "%%":
            regex += "%"
        elif directive in DIRECTIVES:
            name, text = DIRECTIVES[directive]
            regex += text
            groups.append(name)
        else:
            raise DateFormatError(f"{directive!r} is not supported (use {', '.join(DIRECTIVES)} and literal text)")
    parts = [g.removesuffix("2").removesuffix("_name") for g in groups]
    if sorted(parts) != ["day", "month", "year"]:
        raise DateFormatError("the format needs exactly one year (%Y or %y), one month (%m or %b) and one day (%d)")
    try:
        datetime.strptime(EXAMPLE.strftime(fmt), fmt)
    except ValueError as error:  # e.g. fields run together, ambiguous to strptime itself
        raise DateFormatError(f"strptime cannot read back {EXAMPLE.strftime(fmt)!r}: {error}") from error
    return f"^{regex}$", groups


def expected(fmt: str | None) -> str:
    """What the dates_valid gate says it expected."""
    return f"a date written like {EXAMPLE.strftime(fmt)} ({fmt})" if fmt else "a date written YYYY-MM-DD"


def _fields(fmt: str, v: sql.Composable) -> dict[str, sql.Composable]:
    regex, groups = pattern(fmt)
    match = sql.SQL("(regexp_match({}, {}))").format(v, sql.Literal(regex))
    fields = {}
    for i, name in enumerate(groups, start=1):
        text = sql.SQL("{}[{}]").format(match, sql.Literal(i))
        if name == "year2":  # as strptime reads %y: 69-99 are 1969-1999, 00-68 are 2000-2068
            fields["year"] = sql.SQL("(CASE WHEN {t}::int < 69 THEN 2000 ELSE 1900 END + {t}::int)").format(t=text)
        elif name == "month_name":
            fields["month"] = sql.SQL("coalesce(array_position({}::text[], lower({})), 0)").format(
                sql.Literal(list(MONTH_NAMES)), text)
        else:
            fields[name] = sql.SQL("{}::int").format(text)
    return fields


def date_ok(fmt: str | None, v: sql.Composable) -> sql.Composable:
    """True when the text `v` is a real day written in the format (false, never an error, otherwise)."""
    if not fmt:
        return sql.SQL(ISO_OK).format(v=v)
    f = _fields(fmt, v)
    return sql.SQL(
        "CASE WHEN {v} IS NULL OR {v} !~ {regex} THEN false WHEN {year} < 1 OR {month} NOT BETWEEN 1 AND 12 THEN false "
        "ELSE {day} BETWEEN 1 AND extract(day FROM make_date({year}, {month}, 1) + interval '1 month - 1 day') END"
    ).format(v=v, regex=sql.Literal(pattern(fmt)[0]), **f)


def no_such_day(fmt: str | None, v: sql.Composable) -> sql.Composable:
    """For a text that is not a date: ': written so, but no such day' where it has the format's shape
    ('2021-02-30', '13/01/2021' in %m/%d/%Y), else ''."""
    shape = pattern(fmt)[0] if fmt else r"^[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}(T00:00:00(\.0+)?)?$"
    return sql.SQL("CASE WHEN {v} ~ {shape} THEN ': written so, but no such day' ELSE '' END").format(
        v=v, shape=sql.Literal(shape))


def date_value(fmt: str | None, v: sql.Composable) -> sql.Composable:
    """The date the text `v` names, null where it names none."""
    if not fmt:
        return sql.SQL(ISO_VALUE).format(v=v)
    f = _fields(fmt, v)
    return sql.SQL("CASE WHEN {ok} THEN make_date({year}, {month}, {day}) END").format(ok=date_ok(fmt, v), **f)
