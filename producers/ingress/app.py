"""The ingress ASGI application.

``/webhook`` is dispatched straight to :class:`WebhookEndpoint` (the hot path, plain ASGI);
everything else — health, readiness, metrics, Meta's signed_request callbacks and the
deletion-status page — is a small Starlette app, which also runs the lifespan: start the Kafka
poll thread and the privacy-status view, and on shutdown (after the server drained its requests)
flush the producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from producers.ingress.callbacks import MetaCallbacks
from producers.ingress.limits import body_limit, topic_max_bytes
from producers.ingress.metrics import CONTENT_TYPE, IngressMetrics
from producers.ingress.privacy_status import PrivacyStatusView
from producers.ingress.webhook import WebhookEndpoint
from wapipe.avro import AvroSerde
from wapipe.config import Settings
from wapipe.log import get_logger
from wapipe.publisher import KafkaPublisher
from wapipe.edge.clients import admin_client
from wapipe.topics import AUDIT, PRIVACY_REQUESTS, WEBHOOK_DEAD, WEBHOOK_RAW, webhook_dead_max_bytes

log = get_logger(__name__)

WEBHOOK_PATH = "/webhook"
_READY_TOPICS = (WEBHOOK_RAW, WEBHOOK_DEAD, PRIVACY_REQUESTS, AUDIT)


def app_secrets(settings: Settings) -> dict[str, bytes]:
    return {app_id: s.get_secret_value().encode() for app_id, s in settings.meta_apps.items()}


@dataclass
class _Readiness:
    publisher: KafkaPublisher
    ttl: float = 1.0
    _at: float = 0.0
    _last: tuple[bool, str] = (False, "not checked")

    async def check(self) -> tuple[bool, str]:
        if time.monotonic() - self._at > self.ttl:
            self._last = await asyncio.to_thread(self.publisher.metadata_ok, _READY_TOPICS, 2.0)
            self._at = time.monotonic()
        return self._last


class IngressApp:
    """The ASGI callable uvicorn serves."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        if not settings.meta_apps:
            log.warning("no Meta app configured (WAPIPE_META_APPS): every webhook will be refused")
        self.settings = settings
        self.bootstrap = bootstrap
        self.metrics = IngressMetrics()
        self.serde = AvroSerde.from_settings(settings)
        self.publisher = KafkaPublisher(
            bootstrap, message_timeout_ms=settings.ingress_publish_timeout_ms,
            deadline_ms=settings.ingress_deadline_ms, linger_ms=settings.ingress_linger_ms,
            poll_mode=settings.ingress_poll_mode,
            # Its largest record, a dead letter around a body of the largest accepted size, from the
            # same setting as the body limit and the topics' max.message.bytes (wapipe/topics.py).
            message_max_bytes=webhook_dead_max_bytes(settings),
        )
        self.view = PrivacyStatusView(bootstrap, self.serde)
        secrets = app_secrets(settings)
        token = settings.verify_token.get_secret_value() if settings.verify_token else None
        self.webhook = WebhookEndpoint(secrets=secrets, verify_token=token, publisher=self.publisher,
                                       serde=self.serde, metrics=self.metrics,
                                       max_body_bytes=settings.ingress_max_body_bytes)
        callbacks = MetaCallbacks(secrets=secrets, publisher=self.publisher, serde=self.serde, view=self.view,
                                  metrics=self.metrics, public_base_url=settings.public_base_url,
                                  max_age_s=settings.signed_request_max_age_s)
        self._readiness = _Readiness(self.publisher)
        self.router = Starlette(
            routes=[
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/metrics", self.metrics_endpoint, methods=["GET"]),
                Route("/meta/data-deletion", callbacks.data_deletion, methods=["POST"]),
                Route("/meta/deauthorize", callbacks.deauthorize, methods=["POST"]),
                Route("/meta/deletion-status/{code}", callbacks.status, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == WEBHOOK_PATH:
            try:
                await self.webhook(scope, receive, send)
            except Exception:
                log.exception("webhook handler failed")
                raise  # the server answers 500 (Meta retries) if nothing was sent yet
            return
        await self.router(scope, receive, send)

    def check_topic_limits(self) -> None:
        """Lower the body limit to what the webhook topics store (their max.message.bytes), and say
        so: they were not applied with this ingress's setting. Best effort: a broker that does not
        answer leaves the setting (and a too-large record is still a 413 when Kafka refuses it)."""
        try:
            limits = topic_max_bytes(admin_client(self.bootstrap))
        except Exception as exc:
            log.warning("webhook topic limits not read; body limit stays the setting", error=str(exc))
            return
        want = self.settings.ingress_max_body_bytes
        got = body_limit(self.settings, limits)
        if got < want:
            self.webhook.lower_limit(got)
            log.error("webhook topics take smaller records than WAPIPE_INGRESS_MAX_BODY_BYTES allows: bodies over "
                      "the topics' size are refused (413); run `wapipe topics apply`", setting=want, limit=got,
                      topics=limits)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app):
        self.publisher.start(asyncio.get_running_loop())
        self.view.start()
        limits = asyncio.create_task(asyncio.to_thread(self.check_topic_limits), name="topic-limits")
        log.info("ingress started", apps=sorted(self.settings.meta_apps))
        try:
            yield
        finally:
            await limits
            unacked = await asyncio.to_thread(self.publisher.close, 10.0)
            self.view.close()
            log.info("ingress stopped", unacked=unacked)

    async def healthz(self, _request: Request) -> Response:
        return JSONResponse({"status": "live"})

    async def readyz(self, _request: Request) -> Response:
        ok, why = await self._readiness.check()
        body = {"ready": ok, "kafka": why, "privacy_view": "ready" if self.view.ready else "catching up"}
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics_endpoint(self, _request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)
