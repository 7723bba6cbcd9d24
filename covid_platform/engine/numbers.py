"""A count's or value's kind, as its dataset declares it: what text the gates admit, what the gates say
they expected, and the type it is stored as."""

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
