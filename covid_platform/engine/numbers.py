"""A count's or value's kind, as its dataset declares it: what text the gates admit, what the gates say
they expected, and the type it is stored as."""

from psycopg2 import sql

from covid_platform.datasets import Dataset

WHOLE = r"[0-9]{1,18}(\.0*)?"  # "12" or "12.0": bigint holds 18 digits
DECIMAL = r"([0-9]{1,30}(\.[0-9]{0,30})?|\.[0-9]{1,30})"  # "1.25", "12", ".5"; no exponent, no NaN


def pattern(dataset: Dataset, column: str) -> str:
    """The anchored regular expression a non-empty field of `column` matches."""
    number = DECIMAL if column in dataset.decimals else WHOLE
    return f"^{'-?' if column in dataset.signed else ''}{number}$"


def expected(dataset: Dataset, column: str) -> str:
    sign = "" if column in dataset.signed else "non-negative "
    kind = "decimal number" if column in dataset.decimals else "whole number"
    return f"a {sign}{kind}" + (" or an empty field" if column in dataset.nullable else "")


def sql_type(dataset: Dataset, column: str) -> str:
    """The stored type of a count, value or difference."""
    return "numeric" if dataset.is_decimal(column) else "bigint"


def plain(dataset: Dataset, column: str, v: sql.Composable) -> sql.Composable:
    """True when the non-empty whole-count text `v` is written as bigint's input and the gates both read it:
    only digits (a minus first where the column is signed), at most 18. Otherwise bigint's input may still
    read it ('+5', '-0', ' 5', '1_000' on PostgreSQL 16) where the gates' `pattern` rejects it, or not read
    it ('12.0') where the gates read it: the caller then checks it against `pattern`."""
    if column in dataset.signed:
        return sql.SQL("{} ~ '^-?[0-9]{{1,18}}$'").format(v)
    return sql.SQL("translate({v}, '0123456789', '') = '' AND length({v}) BETWEEN 1 AND 18").format(v=v)  # no regex
