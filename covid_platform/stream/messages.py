"""What one stream message holds: rows of a dataset, in its CSV columns, or the reason it cannot be loaded.

Only what would stop a whole batch is refused here (not JSON, no key, a field that breaks the CSV gates for
the entire file); a bad value (a negative count, a date that does not exist) is left to the platform's
row gates, which set the row aside with its line and reason like any file's."""

import json
from collections import Counter

from covid_platform.datasets import Dataset
from covid_platform.engine import regions
from covid_platform.engine.gates import MAX_FIELD_CHARS

Row = tuple[str, ...]


class Unloadable(ValueError):
    """The message cannot become rows; the text says why."""


def _text(value) -> str:
    """A JSON value as its CSV field: absent or null is an empty field (not reported), numbers as JSON wrote
    them, anything else as JSON text (which the gates then reject as a count, with the line)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)


class _Object(dict):
    """A JSON object, and the names it repeats (of which JSON keeps the last value)."""

    repeated: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, object]]) -> _Object:
    found = _Object(pairs)
    if len(found) < len(pairs):
        found.repeated = tuple(name for name, count in Counter(name for name, _ in pairs).items() if count > 1)
    return found


def parse(dataset: Dataset, payload: bytes) -> list[Row]:
    """The message's rows in `dataset.source_columns` order; raises Unloadable."""
    try:
        text = payload.decode("utf-8-sig")  # a BOM, as a CSV file's; json.loads would also read UTF-16 and 32
    except UnicodeDecodeError as error:
        raise Unloadable(f"not UTF-8 text: {error}") from None
    try:
        document = json.loads(text, object_pairs_hook=_object)
    except json.JSONDecodeError as error:
        raise Unloadable(f"not JSON: {error}") from None
    if not isinstance(document, list):
        return [_row(dataset, document, "")]
    if not document:  # refused rather than dropped without a word: every message is loaded or says why not
        raise Unloadable("an empty JSON array: no rows")
    return [_row(dataset, item, f"element {i}: ") for i, item in enumerate(document)]


def _row(dataset: Dataset, item, where: str) -> Row:
    if not isinstance(item, dict):
        raise Unloadable(f"{where}a JSON {type(item).__name__}, not an object with the columns "
                         f"{', '.join(dataset.source_columns)}")
    fields = {name.lower(): value for name, value in item.items()}  # names match as a CSV header's do
    row = []
    for column in dataset.source_columns:
        names = dataset.header_names(column)  # the declared name, then its aliases in order
        name = next((name for name in names if name in fields), None)
        naming = [key for key in (*item, *getattr(item, "repeated", ())) if key.lower() == name] if name else []
        if len(naming) > 1:
            # as a file's two header fields of the name read: whichever were read, the other's value is lost
            keys = " and ".join(map(repr, naming))
            raise Unloadable(f"{where}column {column!r}: two keys name it, whatever their case ({keys}); "
                             "keep one")
        text = _text(fields[name] if name else None)
        if column in dataset.key and not text.strip():
            raise Unloadable(f"{where}no value for key column {' or '.join(map(repr, names))}")
        problem = _field_problem(text)
        if problem:
            raise Unloadable(f"{where}column {column!r}: {problem}")
        row.append(text)
    return tuple(row)


def _field_problem(text: str) -> str | None:
    """What in a field would make the gates quarantine the whole batch file (every other message with it)."""
    if "\0" in text:
        return "a NUL character"
    if len(text) > MAX_FIELD_CHARS:
        return f"{len(text):,} characters (at most {MAX_FIELD_CHARS:,})"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a lone surrogate (\\ud800-\\udfff), not text UTF-8 can hold"
    return None


def key_of(dataset: Dataset, row: Row) -> Row:
    """The row's key as the keys_unique gate compares it: trimmed text, the region as covid.regions knows it
    (a correction writing 'TEXAS' replaces the row of 'Texas')."""
    key = [row[dataset.source_columns.index(column)].strip() for column in dataset.key]
    return tuple(regions.key_text(dataset, value) if column in dataset.region_names else value
                 for column, value in zip(dataset.key, key))
