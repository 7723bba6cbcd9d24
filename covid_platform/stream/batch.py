"""One dataset's messages between two writes: its rows (one per key, the latest message's), the messages it
quarantines, and the acknowledgements owed once both are written."""

import base64
import csv
import io
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from covid_platform.datasets import Dataset
from covid_platform.stream.messages import Row, key_of


@dataclass(frozen=True)
class Held:
    """A message the broker waits for us to acknowledge: `generation` is the connection it came on."""

    mid: int
    qos: int
    generation: int


@dataclass
class Batch:
    name: str
    """The dataset's name; `_unrouted` for messages on a topic no dataset declares."""
    dataset: Dataset | None
    rows: dict[Row, Row] = field(default_factory=dict)
    """key → row. The same key twice in one batch (a redelivery, a correction) would be two conflicting rows
    for the keys_unique gate, which sets both aside: the later message's row replaces the earlier one."""
    quarantined: list[str] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    messages: int = 0
    """Messages whose rows are in `rows`."""
    replaced: int = 0
    """Rows replaced by a later message's row for the same key."""
    started: float | None = None
    """time.monotonic() of the first message."""

    def add(self, rows: list[Row], held: Held) -> None:
        for row in rows:
            key = key_of(self.dataset, row)
            if self.rows.pop(key, None) is not None:  # re-inserted last: the file keeps arrival order
                self.replaced += 1
            self.rows[key] = row
        self.messages += 1
        self._hold(held)

    def quarantine(self, topic: str, payload: bytes, reason: str, held: Held) -> None:
        line = {"topic": topic, "reason": reason, "received_at": utc_now().isoformat()}
        try:
            line["payload"] = payload.decode("utf-8")
        except UnicodeDecodeError:
            line["payload_base64"] = base64.b64encode(payload).decode()
        self.quarantined.append(json.dumps(line))
        self._hold(held)

    def _hold(self, held: Held) -> None:
        self.held.append(held)
        if self.started is None:
            self.started = time.monotonic()

    @property
    def size(self) -> int:
        """Messages held: what the broker's in-flight window counts."""
        return len(self.held)

    def csv_body(self) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.dataset.source_columns)
        writer.writerows(self.rows.values())
        return out.getvalue().encode()

    def quarantine_body(self) -> bytes:
        return "".join(f"{line}\n" for line in self.quarantined).encode()


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def object_name(when: datetime, bridge_id: str, sequence: int) -> str:
    """`<UTC time>-<bridge id>-<sequence>`: one bridge's objects sort in the order written, so each lands
    after its folder's sensor cursor."""
    return f"{name_time(when)}-{bridge_id}-{sequence:06d}"


def name_time(when: datetime) -> str:
    """The time an object's name starts with: names written later sort after it."""
    return f"{when:%Y%m%dT%H%M%S.%fZ}"
