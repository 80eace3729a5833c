"""Which SendCommand sent a message: ``(tenant_id, wamid ref) -> CommandLink``, read from ``wa.send.results``.

The send worker publishes a ``SendResult`` with the keyed ref of Meta's wamid (``wref.…``,
wapipe/privacy/wamids.py) for every command Meta accepted. A user's reply names our message by its
wamid (``context.id``), a reaction by ``reaction.message_id``, a status by ``id``: the normaliser
and this processor turn those into the same ref, so the ref is the join key and no wamid is kept.

A background thread reads every partition of ``wa.send.results`` from the beginning (no consumer
group, nothing committed) into memory. A lookup that misses reads the topic up to its current end
first (the result of a command is published before its wamid can reach a user), so a miss is an
answer: not a message a command of this tenant sent. Lookups are scoped by tenant: a ref named by
one tenant's webhook never finds another tenant's command.

Memory: one entry per accepted command within the topic's retention (``retention_ms``, 7 days by
default), about 300 bytes each.
"""

from __future__ import annotations

import threading

from confluent_kafka import Message

from wapipe.avro import AvroSerde, SerdeError
from wapipe.edge.endpoint import Endpoint
from wapipe.edge.follow import TopicFollower
from wapipe.log import get_logger
from wapipe.messages.erp import CommandLink
from wapipe.topics import SEND_RESULTS

log = get_logger(__name__)

# Results that carry the wamid Meta gave the command's message. Not DUPLICATE: it repeats the first
# command's wamid under the second command's id, and the message is the first's.
_SENT = frozenset({"ACCEPTED", "UNKNOWN"})


class CommandLinks:
    def __init__(self, bootstrap: Endpoint, *, serde: AvroSerde | None = None, topic: str = SEND_RESULTS,
                 catch_up_timeout: float = 10.0) -> None:
        self._serde = serde or AvroSerde()
        self._catch_up_timeout = catch_up_timeout
        self._lock = threading.Lock()
        self._links: dict[tuple[str, str], CommandLink] = {}
        # A timeout is the broker not answering: the caller retries the record (erp_inbound/app.py).
        self._follower = TopicFollower(bootstrap, topic, self._on_record, name="erp-links", error=TimeoutError)
        self.unreadable = 0  # results that did not decode (the send worker's dead letters hold them)

    def start(self) -> "CommandLinks":
        self._follower.start()
        return self

    def close(self) -> None:
        self._follower.close()

    def __enter__(self) -> "CommandLinks":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_record(self, m: Message) -> None:
        self.apply(m.value())

    def apply(self, value: bytes | None) -> None:
        """Take one wa.send.results record into the index."""
        if not value:
            return
        try:
            r = self._serde.decode(value, "SendResult")
        except SerdeError:
            self.unreadable += 1
            return
        ref = r.get("wamid")
        if not ref or r.get("outcome") not in _SENT:
            return
        # the first result naming the wamid wins: a repeated final result changes nothing
        with self._lock:
            self._links.setdefault((r["tenant_id"], ref), CommandLink(
                idempotency_key=r["idempotency_key"], command_id=r.get("command_id"),
                campaign_id=r.get("campaign_id"), message_ref=ref))

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until every result published before this call has been read."""
        self._follower.wait_ready(timeout)

    def get(self, tenant_id: str, ref: str | None, *, wait: bool = True) -> CommandLink | None:
        """The command of ``tenant_id`` whose message has this wamid ref, or None (with ``wait``,
        read up to the end of ``wa.send.results`` before saying so)."""
        if not ref or not tenant_id:
            return None
        with self._lock:
            found = self._links.get((tenant_id, ref))
        if found is None and wait:
            self._follower.wait_ready(self._catch_up_timeout)
            with self._lock:
                found = self._links.get((tenant_id, ref))
        return found
