"""Prometheus metrics of one ingress app, in the app's own registry (no process globals)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# outcome label values of wapipe_ingress_requests_total:
#   published      200, written to wa.webhook.raw and acked
#   dead_lettered  200, signed but malformed: written to wa.webhook.dead and acked
#   bad_signature  401, nothing published
#   too_large      413, nothing published
#   unavailable    503, the broker did not ack in time: Meta retries
#   verified / verify_refused   GET handshake 200 / 403
#   deletion_* / deauthorize_*  signed_request callbacks
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class IngressMetrics:
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("wapipe_ingress_requests", "Requests by endpoint and outcome",
                                ["endpoint", "outcome"], registry=r)
        self.signature_rejects = Counter("wapipe_ingress_signature_rejects",
                                         "Requests refused for a missing or wrong signature",
                                         ["endpoint", "reason"], registry=r)
        self.dead_lettered = Counter("wapipe_ingress_dead_lettered", "Signed webhooks routed to the dead-letter topic",
                                     ["reason"], registry=r)
        self.publish_seconds = Histogram(
            "wapipe_ingress_publish_seconds", "Time from produce() to the broker's ack", ["topic"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0), registry=r)
        # Children bound once: the hot path does not resolve labels per request.
        self.webhook_published = self.requests.labels("webhook", "published")
        self.webhook_dead = self.requests.labels("webhook", "dead_lettered")
        self.webhook_bad_sig = self.requests.labels("webhook", "bad_signature")
        self.webhook_too_large = self.requests.labels("webhook", "too_large")
        self.webhook_unavailable = self.requests.labels("webhook", "unavailable")
        self.publish_raw = self.publish_seconds.labels("raw")

    def render(self) -> bytes:
        return generate_latest(self.registry)
