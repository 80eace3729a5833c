"""The erasure backlog for Prometheus, read from the privacy registry when scraped (`wapipe privacy run`).

``wapipe_erasure_open_requests``          erasure requests not yet final (COMPLETED, FAILED, REJECTED)
``wapipe_erasure_oldest_age_seconds``     age of the oldest open one (0: none open)
``wapipe_erasure_deadline_seconds``       seconds left until the oldest open one's legal deadline
                                          (``privacy_legal_deadline_s``, GDPR Art. 12(3): one month);
                                          negative once it has passed; no sample when none is open
``wapipe_erasure_overdue_requests``       open ones past the processor's own completion deadline
                                          (compaction lag, raw retention: ``PrivacyProcessor.deadline_ms``)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily

from wapipe.messages.privacy import PrivacyKind, PrivacyRequest


@dataclass(frozen=True)
class Backlog:
    open: int
    oldest_age_s: float
    deadline_left_s: float | None
    overdue: int


def erasure_backlog(requests: Iterable[PrivacyRequest], *, now_s: float, legal_deadline_s: float,
                    completion_deadline_s: float) -> Backlog:
    """The open erasures among ``requests`` (PrivacyRequest records) at ``now_s`` (epoch seconds)."""
    started = sorted(r.requested_ms / 1000 for r in requests if r.kind == PrivacyKind.ERASURE and not r.final)
    if not started:
        return Backlog(0, 0.0, None, 0)
    oldest = started[0]
    return Backlog(open=len(started), oldest_age_s=max(0.0, now_s - oldest),
                   deadline_left_s=oldest + legal_deadline_s - now_s,
                   overdue=sum(1 for t in started if now_s - t > completion_deadline_s))


@dataclass(eq=False)  # a registry keys collectors by identity
class ErasureMetrics:
    requests: Callable[[], list[PrivacyRequest]]  # PrivacyRegistry.requests
    legal_deadline_s: float
    completion_deadline_s: float
    clock: Callable[[], float] = field(default=time.time)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return self._families()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        fams = self._families()
        b = erasure_backlog(self.requests(), now_s=self.clock(), legal_deadline_s=self.legal_deadline_s,
                            completion_deadline_s=self.completion_deadline_s)
        open_, age, left, overdue = fams
        open_.add_metric([], b.open)
        age.add_metric([], b.oldest_age_s)
        if b.deadline_left_s is not None:
            left.add_metric([], b.deadline_left_s)
        overdue.add_metric([], b.overdue)
        return fams

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily("wapipe_erasure_open_requests", "Erasure requests not yet final"),
            GaugeMetricFamily("wapipe_erasure_oldest_age_seconds", "Age of the oldest open erasure request"),
            GaugeMetricFamily("wapipe_erasure_deadline_seconds",
                              "Seconds until the oldest open erasure request's legal deadline (negative: late)"),
            GaugeMetricFamily("wapipe_erasure_overdue_requests",
                              "Open erasure requests past the processor's completion deadline"),
        ]
