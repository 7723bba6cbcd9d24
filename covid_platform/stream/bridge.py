"""The bridge: the MQTT client's network thread turns each message into rows of its dataset's open batch (or
a quarantine line), and the flusher writes each batch that is full or old enough as one object in the landing
zone, then acknowledges its messages.

Nothing is lost because nothing is acknowledged early: the session is persistent (clean start off, a session
expiry, the bridge id as client id), so a bridge that dies holding unwritten messages gets them again from the
broker when it reconnects. What the broker keeps meanwhile is bounded by its settings (README, "Streams")."""

import io
import logging
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from covid_platform.datasets import Dataset
from covid_platform.resources.landing import LandingZone
from covid_platform.stream.batch import Batch, Held, object_name, utc_now
from covid_platform.stream.messages import Unloadable, parse

log = logging.getLogger("covid_platform.stream")

# MQTT 5's largest Receive Maximum. The broker sends no more than this many messages before their
# acknowledgements; as those wait for a batch's write, a smaller window (Mosquitto's default for MQTT 3
# clients is 20) would stall every batch until its time runs out.
RECEIVE_MAXIMUM = 65535
UNROUTED = "_unrouted"


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class Settings:
    bridge_id: str
    """MQTT client id (the broker keeps this id's session) and part of every object name."""
    batch_seconds: float = 30
    batch_rows: int = 10_000
    session_expiry_seconds: int = 7 * 24 * 3600
    """How long the broker keeps the session (and queues messages) while the bridge is away."""
    topic_prefix: str = ""
    """Before each declared stream: a deployment's own topics on a shared broker (`staging/` takes
    `staging/covid/us_states/#`)."""


class Bridge:
    def __init__(self, landing: LandingZone, datasets: list[Dataset], broker: Broker, settings: Settings):
        self.landing, self.datasets, self.broker, self.settings = landing, datasets, broker, settings
        self._lock = threading.Lock()
        self._full = threading.Event()
        self._batches: dict[str, Batch] = {}
        self._full_batches: list[Batch] = []  # closed as they filled, in order: none grows past batch_rows
        # Bumped on every disconnect: a message is acknowledged only on the connection it came on. After a
        # reconnect the broker resends what was unacknowledged with the same message ids, or (no session) has
        # forgotten them and may give their ids to other messages; an old id acknowledged then could be
        # another message's, not yet written.
        self._generation = 0
        self._sequence = 0
        self._connected = False
        self._stopping = False
        self._last_message_at: str | None = None
        self._counts = {"messages_batched": 0, "rows_written": 0, "objects_written": 0, "quarantined": 0}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=settings.bridge_id, protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        if broker.username:
            self.client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            self.client.tls_set()  # the system's CA certificates
        self.client.reconnect_delay_set(1, 30)  # paho's default backs off to 2 minutes
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # --- the network thread -------------------------------------------------------------------------

    def topic(self, dataset: Dataset) -> str:
        """The topic filter the bridge subscribes to for `dataset`."""
        return self.settings.topic_prefix + dataset.stream

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error(f"broker {self.broker.host}:{self.broker.port} refused the connection: {reason_code}")
            return
        session = "resumed" if flags.session_present else "new (nothing was kept for this bridge id)"
        log.info(f"connected to {self.broker.host}:{self.broker.port} as {self.settings.bridge_id}; "
                 f"session {session}")
        # Each message is taken once, as it is published: never the broker's retained copy of a topic's last
        # message, which it would send again at each subscription, this one of every reconnect included, and
        # which would then win over the corrections published after it.
        client.subscribe([(self.topic(d), SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND))
                          for d in self.datasets])
        with self._lock:
            self._connected = True

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self._lock:
            self._generation += 1
            self._connected = False
        if not self._stopping:
            log.warning(f"disconnected from the broker ({reason_code}); reconnecting")

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage):
        topic = message.topic
        matches = [d for d in self.datasets if mqtt.topic_matches_sub(self.topic(d), topic)]
        dataset, rows, reason = (matches or [None])[0], [], None
        if len(matches) > 1:
            names = ", ".join(d.name for d in matches)
            reason = f"the topic matches the streams of {names}: declare ones that do not overlap"
        elif dataset is None:
            reason = "no dataset declares a stream matching this topic"
        else:
            try:
                rows = parse(dataset, message.payload)
            except Unloadable as error:
                reason = str(error)
        name = dataset.name if dataset else UNROUTED
        with self._lock:
            batch = self._batches.setdefault(name, Batch(name, dataset))
            held = Held(message.mid, message.qos, self._generation)
            if reason:
                batch.quarantine(topic, message.payload, reason, held)
            else:
                batch.add(rows, held)
            self._last_message_at = utc_now().isoformat()
            if self._is_full(batch):
                self._full_batches.append(self._batches.pop(name))
                self._full.set()

    # --- the flusher (the caller's thread) ----------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Connect, then write batches as they fill or age until `stop` is set; then write what is held,
        and disconnect (the session stays: messages published meanwhile wait at the broker)."""
        connect = Properties(PacketTypes.CONNECT)
        connect.SessionExpiryInterval = self.settings.session_expiry_seconds
        connect.ReceiveMaximum = RECEIVE_MAXIMUM
        if self.settings.batch_rows * len(self.datasets) > RECEIVE_MAXIMUM:
            log.warning(f"{len(self.datasets)} streams of {self.settings.batch_rows:,} rows exceed the "
                        f"broker's window of {RECEIVE_MAXIMUM:,} unacknowledged messages: batches may "
                        "fill by time only")
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=30, clean_start=False,
                                  properties=connect)
        self.client.loop_start()
        tick = max(0.05, min(0.5, self.settings.batch_seconds / 10))
        try:
            while not stop.is_set():
                self._full.wait(tick)
                self._full.clear()
                for batch in self._take(everything=False):
                    self._write(batch, stop)
            for batch in self._take(everything=True):
                self._write(batch, stop)
        finally:
            self._stopping = True
            self.client.disconnect()
            self.client.loop_stop()

    def _is_full(self, batch: Batch) -> bool:
        return max(len(batch.rows) + len(batch.quarantined), batch.size) >= self.settings.batch_rows

    def _take(self, everything: bool) -> list[Batch]:
        """The batches to write now: the full ones, and the open ones older than batch_seconds."""
        now = time.monotonic()
        with self._lock:
            due = [name for name, batch in self._batches.items()
                   if everything or now - batch.started >= self.settings.batch_seconds]
            taken, self._full_batches = self._full_batches + [self._batches.pop(name) for name in due], []
            return taken

    def _write(self, batch: Batch, stop: threading.Event) -> None:
        self._sequence += 1
        name = object_name(utc_now(), self.settings.bridge_id, self._sequence)
        started = time.monotonic()
        written = []
        if batch.rows:
            written.append(self._put(f"{batch.dataset.stream_folder}{name}.csv", batch.csv_body(), stop))
        if batch.quarantined:
            key = f"_quarantine/stream/{batch.name}/{name}.jsonl"
            written.append(self._put(key, batch.quarantine_body(), stop))
        if None in written:
            log.error(f"stopped before {batch.name}'s batch {name} was written: its {batch.size} message(s) "
                      "stay unacknowledged; the broker delivers them again to the next bridge with this id")
            return
        with self._lock:
            acks = {h.mid: h.qos for h in batch.held if h.generation == self._generation and h.qos}
            for mid, qos in acks.items():
                self.client.ack(mid, qos)
            self._counts["messages_batched"] += batch.messages
            self._counts["rows_written"] += len(batch.rows)
            self._counts["objects_written"] += len(written)
            self._counts["quarantined"] += len(batch.quarantined)
        replaced = f" ({batch.replaced} replaced by a later message's)" if batch.replaced else ""
        log.info(f"{batch.name}: wrote {', '.join(written)}: {len(batch.rows)} row(s) from {batch.messages} "
                 f"message(s){replaced}, {len(batch.quarantined)} quarantined; acknowledged {len(acks)} "
                 f"in {time.monotonic() - started:.2f} s")

    def _put(self, key: str, body: bytes, stop: threading.Event) -> str | None:
        """Write the object, retrying with backoff while the zone fails; None if stopped first."""
        backoff = 1.0
        while True:
            try:
                self.landing.put(key, io.BytesIO(body))
                return key
            except Exception as error:  # any failure of the zone: the batch is kept and written later
                log.warning(f"writing {key} failed ({type(error).__name__}: {error}); "
                            f"retrying in {backoff:.0f} s")
            if stop.wait(backoff):
                return None
            backoff = min(backoff * 2, 30)

    def status(self) -> dict:
        with self._lock:
            return {
                "bridge_id": self.settings.bridge_id,
                "connected": self._connected,
                "last_message_at": self._last_message_at,
                **self._counts,
                "pending": sum(batch.size for batch in [*self._batches.values(), *self._full_batches]),
            }
