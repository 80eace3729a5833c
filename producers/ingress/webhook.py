"""``/webhook``: Meta's subscription handshake (GET) and webhook deliveries (POST).

This is the hot path, written as a plain ASGI callable (no framework objects per request):

1. ``Content-Length`` over the limit → 413 before reading; the body is counted while it streams
   and refused (413) as soon as it passes the limit.
2. ``X-Hub-Signature-256`` checked on the raw bytes against every configured app secret → 401,
   nothing published.
3. The body parsed once (orjson) for the partition key; not a JSON object → a ``DeadLetter`` on
   ``wa.webhook.dead`` with the reason, acked 200 (Meta would only retry it forever).
4. A ``RawWebhook`` (the raw bytes, received-at, app id, signature-verified) on ``wa.webhook.raw``
   keyed by phone_number_id; the 200 goes out only after the broker acknowledged it. No ack within
   the deadline → 503, so Meta retries. A record the producer or the topic refuses as too large
   → 413: it can never be stored, and a "retry later" would have Meta resend it for 7 days. (The
   limits agree by construction — wapipe/topics.py sizes the topic from the same body limit — so
   this answers only a cluster whose topics were not applied.)

Kept headers are cut to ``HEADER_MAX`` characters each, so the record's envelope stays bounded.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Mapping
from urllib.parse import parse_qs

from connectors.meta.signature import verify_any
from producers.ingress.envelope import Malformed, routing_key
from producers.ingress.metrics import IngressMetrics
from wapipe.avro import AvroSerde
from wapipe.log import get_logger
from wapipe.publisher import KafkaPublisher, PublishFailed
from wapipe.topics import WEBHOOK_DEAD, WEBHOOK_RAW

log = get_logger(__name__)

_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
_KEPT_HEADERS = (b"content-type", b"user-agent", b"x-hub-signature-256", b"x-forwarded-for")
HEADER_MAX = 1024
_TOO_LARGE = b"payload too large"
_TOO_LARGE_FOR_TOPIC = b"payload too large for the webhook topic (max.message.bytes)"


class WebhookEndpoint:
    def __init__(self, *, secrets: Mapping[str, bytes], verify_token: str | None, publisher: KafkaPublisher,
                 serde: AvroSerde, metrics: IngressMetrics, max_body_bytes: int) -> None:
        self._secrets = dict(secrets)
        self._verify_token = verify_token
        self._publisher = publisher
        self._serde = serde
        self._metrics = metrics
        self._max = max_body_bytes

    @property
    def max_body_bytes(self) -> int:
        return self._max

    def lower_limit(self, max_body_bytes: int) -> None:
        """Refuse (413) bodies over ``max_body_bytes`` too: what the webhook topics can store
        (producers/ingress/limits.py). Never raises the limit."""
        self._max = min(self._max, max_body_bytes)

    async def __call__(self, scope, receive, send) -> None:
        method = scope["method"]
        if method == "POST":
            await self._deliver(scope, receive, send)
        elif method in ("GET", "HEAD"):
            await self._handshake(scope, send)
        else:
            await _answer(send, 405, b"method not allowed", extra=[(b"allow", b"GET, POST")])

    # --- GET: hub.mode=subscribe&hub.verify_token=...&hub.challenge=... ----------------------
    async def _handshake(self, scope, send) -> None:
        q = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        mode = q.get("hub.mode", [""])[0]
        token = q.get("hub.verify_token", [""])[0]
        challenge = q.get("hub.challenge", [""])[0]
        ok = (mode == "subscribe" and challenge and self._verify_token is not None
              and hmac.compare_digest(token.encode(), self._verify_token.encode()))
        self._metrics.requests.labels("webhook", "verified" if ok else "verify_refused").inc()
        if ok:
            await _answer(send, 200, challenge.encode())
        else:
            await _answer(send, 403, b"verification refused")

    # --- POST: a delivery -----------------------------------------------------------------
    async def _deliver(self, scope, receive, send) -> None:
        received_at = int(time.time() * 1000)
        m = self._metrics
        signature: bytes | None = None
        kept: dict[str, str] = {}
        declared = -1
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
            elif name == b"x-hub-signature-256":
                signature = value
            if name in _KEPT_HEADERS:
                kept[name.decode()] = value[:HEADER_MAX].decode("latin-1")
        if declared > self._max:
            m.webhook_too_large.inc()
            await _answer(send, 413, _TOO_LARGE, close=True)
            return

        body = await self._read(receive)
        if body is None:
            m.webhook_too_large.inc()
            await _answer(send, 413, _TOO_LARGE, close=True)
            return

        app_id = verify_any(self._secrets, body, signature)
        if app_id is None:
            reason = "missing" if not signature else "mismatch"
            m.signature_rejects.labels("webhook", reason).inc()
            m.webhook_bad_sig.inc()
            await _answer(send, 401, b"invalid signature")
            return

        ingress_id = os.urandom(12).hex()
        try:
            routing = routing_key(body)
        except Malformed as exc:
            await self._dead_letter(send, body, str(exc), ingress_id, app_id, received_at, kept)
            return

        kept["x-wapipe-key-kind"] = routing.key_kind
        value = self._serde.encode("RawWebhook", {
            "ingress_id": ingress_id, "received_at": received_at, "app_id": app_id,
            "signature_verified": True, "headers": kept, "body": body,
        }, topic=WEBHOOK_RAW)
        started = time.perf_counter()
        try:
            await self._publisher.publish(WEBHOOK_RAW, value, routing.key)
        except PublishFailed as exc:
            if exc.too_large:
                await self._too_large_for_topic(send, exc, ingress_id, len(body))
                return
            m.webhook_unavailable.inc()
            log.warning("webhook not acked, answering 503", reason=str(exc), ingress_id=ingress_id)
            await _answer(send, 503, b"temporarily unavailable", extra=[(b"retry-after", b"1")])
            return
        m.publish_raw.observe(time.perf_counter() - started)
        m.webhook_published.inc()
        await _answer(send, 200, b"OK")

    async def _read(self, receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self._max:
                    return None
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _too_large_for_topic(self, send, exc: PublishFailed, ingress_id: str, size: int) -> None:
        self._metrics.webhook_too_large.inc()
        log.error("webhook refused by Kafka as too large, answering 413 (apply the topics: wapipe topics apply)",
                  reason=str(exc), ingress_id=ingress_id, body_bytes=size, limit=self._max)
        await _answer(send, 413, _TOO_LARGE_FOR_TOPIC)

    async def _dead_letter(self, send, body: bytes, reason: str, ingress_id: str, app_id: str,
                           received_at: int, kept: dict[str, str]) -> None:
        value = self._serde.encode("DeadLetter", {
            "source_topic": WEBHOOK_RAW, "partition": -1, "offset": -1, "key": None, "value": body,
            "reason": reason, "error_type": "MalformedWebhook", "tenant_id": None, "subject_id": None,
            "headers": {**kept, "ingress_id": ingress_id, "app_id": app_id, "received_at": str(received_at),
                        "signature_verified": "true"},
            "failed_at": int(time.time() * 1000),
        }, topic=WEBHOOK_DEAD)
        try:
            await self._publisher.publish(WEBHOOK_DEAD, value, ingress_id.encode())
        except PublishFailed as exc:
            if exc.too_large:
                await self._too_large_for_topic(send, exc, ingress_id, len(body))
                return
            self._metrics.webhook_unavailable.inc()
            log.warning("dead letter not acked, answering 503", reason=str(exc), ingress_id=ingress_id)
            await _answer(send, 503, b"temporarily unavailable", extra=[(b"retry-after", b"1")])
            return
        self._metrics.dead_lettered.labels("malformed_json").inc()
        self._metrics.webhook_dead.inc()
        log.info("signed but malformed webhook dead-lettered", ingress_id=ingress_id, reason=reason)
        await _answer(send, 200, b"OK")


async def _answer(send, status: int, body: bytes, *, extra: list | None = None, close: bool = False) -> None:
    headers = [*_TEXT, (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
