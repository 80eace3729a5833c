"""The simulated Meta world (entities seeded from JSON or the control API) and the counters a test
or benchmark reads. All of it lives in the sandbox process's memory — it *is* the simulated Meta —
and is only touched from the server's event loop, so no locks are needed.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

from connectors.meta.sandbox.limits import SlidingWindow
from connectors.meta.sandbox.models import TIERS, Seed


@dataclass(slots=True)
class Business:
    id: str
    name: str
    tier: str

    @property
    def limit(self) -> int | None:
        return TIERS[self.tier]


@dataclass(slots=True)
class Waba:
    id: str
    business_id: str
    name: str
    subscribed_apps: list[str] | None = None


@dataclass(slots=True)
class Number:
    id: str
    waba_id: str
    display_phone_number: str
    verified_name: str
    quality_rating: str
    throughput: int
    registered: bool
    platform_type: str
    admitted: SlidingWindow = field(default_factory=SlidingWindow)
    register_calls: deque = field(default_factory=deque)

    def throughput_level(self) -> str:
        return "HIGH" if self.throughput >= 1000 else "STANDARD"


@dataclass(slots=True)
class Template:
    id: str
    name: str
    waba_id: str
    language: str
    status: str
    category: str
    body_params: int
    body_text: str | None = None

    def as_graph(self) -> dict:
        text = self.body_text or " ".join(f"{{{{{i}}}}}" for i in range(1, self.body_params + 1)) or "Hello"
        return {"name": self.name, "language": self.language, "status": self.status, "category": self.category,
                "id": self.id, "components": [{"type": "BODY", "text": text}]}


@dataclass(slots=True)
class Token:
    token: str
    app_id: str | None
    waba_ids: list[str]
    valid: bool = True

    def may_use(self, waba_id: str) -> bool:
        return self.valid and ("*" in self.waba_ids or waba_id in self.waba_ids)


@dataclass(slots=True)
class App:
    id: str
    secret: str
    webhook_url: str | None
    name: str


@dataclass(slots=True)
class SignupCode:
    code: str
    app_id: str
    waba_ids: list[str]
    token: str
    created: float
    used: bool = False


class World:
    def __init__(self) -> None:
        self.businesses: dict[str, Business] = {}
        self.wabas: dict[str, Waba] = {}
        self.numbers: dict[str, Number] = {}
        self.templates: dict[tuple[str, str, str], Template] = {}
        self.tokens: dict[str, Token] = {}
        self.apps: dict[str, App] = {}
        self.codes: dict[str, SignupCode] = {}
        self.invalid_recipients: set[str] = set()
        # (WABA id, wa_id) of users who stopped marketing messages from that business (user_preferences)
        self.marketing_opt_outs: set[tuple[str, str]] = set()
        self.inbound_ids: set[str] = set()
        # wamid of a user's message -> (the number that received it, the user): a number marks
        # only its own received messages read
        self.inbound_to: dict[str, tuple[str, str]] = {}
        # Users with a business-scoped user id: BSUID -> number (None: a username user whose number
        # is withheld), and number -> BSUID (statuses of sends by number carry it, as Meta's do).
        self.users: dict[str, str | None] = {}
        self.bsuid_of: dict[str, str] = {}
        self.read_marked: list[str] = []
        # every accepted read receipt: {message_id, phone_number_id, wa_id, typing_indicator, marks, at};
        # marks: the user's messages it turned read (it and the earlier unread ones), read_ids: all so far
        self.reads: list[dict] = []
        self.read_ids: set[str] = set()
        self._template_seq = 0

    def next_template_id(self) -> str:
        self._template_seq += 1
        return str(9_000_000_000 + self._template_seq)

    def apply(self, seed: Seed, throughput_window: float) -> None:
        for a in seed.apps:
            self.apps[a.id] = App(a.id, a.secret, a.webhook_url, a.name)
        for b in seed.businesses:
            if b.tier not in TIERS:
                raise ValueError(f"unknown tier {b.tier!r}; one of {', '.join(TIERS)}")
            self.businesses[b.id] = Business(b.id, b.name, b.tier)
        for w in seed.wabas:
            if w.business_id not in self.businesses:
                raise ValueError(f"WABA {w.id}: unknown business {w.business_id}")
            self.wabas[w.id] = Waba(w.id, w.business_id, w.name, w.subscribed_apps)
        for n in seed.numbers:
            if n.waba_id not in self.wabas:
                raise ValueError(f"number {n.id}: unknown WABA {n.waba_id}")
            self.numbers[n.id] = Number(n.id, n.waba_id, n.display_phone_number, n.verified_name, n.quality_rating,
                                        n.throughput, n.registered, n.platform_type,
                                        admitted=SlidingWindow(throughput_window))
        for t in seed.templates:
            if t.waba_id not in self.wabas:
                raise ValueError(f"template {t.name}: unknown WABA {t.waba_id}")
            self.templates[(t.waba_id, t.name, t.language)] = Template(
                t.id or self.next_template_id(), t.name, t.waba_id, t.language, t.status, t.category,
                t.body_params, t.body_text)
        for k in seed.tokens:
            self.tokens[k.token] = Token(k.token, k.app_id, list(k.waba_ids), k.valid)
        self.invalid_recipients.update(seed.invalid_recipients)

    def business_of(self, number: Number) -> Business:
        return self.businesses[self.wabas[number.waba_id].business_id]

    def apps_for(self, waba_id: str) -> list[App]:
        """Apps that receive this WABA's webhooks and have a URL to receive them at."""
        waba = self.wabas.get(waba_id)
        if waba is None:
            return []
        ids = waba.subscribed_apps if waba.subscribed_apps is not None else list(self.apps)
        return [a for i in ids if (a := self.apps.get(i)) is not None and a.webhook_url]

    def snapshot(self) -> dict:
        return {
            "businesses": [{"id": b.id, "name": b.name, "tier": b.tier} for b in self.businesses.values()],
            "wabas": [{"id": w.id, "business_id": w.business_id, "subscribed_apps": w.subscribed_apps}
                      for w in self.wabas.values()],
            "numbers": [{"id": n.id, "waba_id": n.waba_id, "quality_rating": n.quality_rating,
                         "throughput": n.throughput, "registered": n.registered} for n in self.numbers.values()],
            "templates": [{"waba_id": t.waba_id, **t.as_graph(), "body_params": t.body_params}
                          for t in self.templates.values()],
            "apps": [{"id": a.id, "webhook_url": a.webhook_url} for a in self.apps.values()],
            "tokens": len(self.tokens),
            "read_marked": list(self.read_marked),
        }


@dataclass(slots=True)
class NumberCounters:
    requests: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    requests_window: SlidingWindow = field(default_factory=SlidingWindow)
    accepted_window: SlidingWindow = field(default_factory=SlidingWindow)
    first_accepted_at: float | None = None  # wall clock
    last_accepted_at: float | None = None
    per_second: Counter = field(default_factory=Counter)  # int(wall second) -> accepted sends

    def accept(self, mono: float, wall: float) -> None:
        self.accepted += 1
        self.accepted_window.add(mono)
        if self.first_accepted_at is None:
            self.first_accepted_at = wall
        self.last_accepted_at = wall
        self.per_second[int(wall)] += 1

    def as_dict(self, series: bool = False) -> dict:
        d = {"requests": self.requests, "accepted": self.accepted,
             "rejected": {str(k): v for k, v in self.rejected.items()},
             "max_requests_1s": self.requests_window.max_seen,
             "max_accepted_1s": self.accepted_window.max_seen,
             "first_accepted_at": self.first_accepted_at, "last_accepted_at": self.last_accepted_at}
        if series:
            d["accepted_per_second"] = {str(k): v for k, v in sorted(self.per_second.items())}
        return d


@dataclass(slots=True)
class WebhookCounters:
    posts_attempted: int = 0
    posts_delivered: int = 0
    posts_failed: int = 0  # attempts answered non-2xx or not answered
    posts_dropped: int = 0  # given up after the max age
    updates_delivered: int = 0
    statuses: Counter = field(default_factory=Counter)  # status name -> scheduled count
    user_preferences: Counter = field(default_factory=Counter)  # stop / resume -> scheduled count


class Counters:
    def __init__(self) -> None:
        self.started = time.time()
        self.numbers: dict[str, NumberCounters] = {}
        self.by_callback: Counter = Counter()
        self.by_payload: Counter = Counter()
        self.webhooks = WebhookCounters()
        self.messages: list[dict] = []
        self.faults: Counter = Counter()
        self.failed_async: Counter = Counter()  # code -> messages accepted then failed by status webhook

    def number(self, number_id: str) -> NumberCounters:
        c = self.numbers.get(number_id)
        if c is None:
            c = self.numbers[number_id] = NumberCounters()
        return c

    def snapshot(self, series: bool = False) -> dict:
        w = self.webhooks
        return {
            "numbers": {k: v.as_dict(series) for k, v in self.numbers.items()},
            "requests": sum(c.requests for c in self.numbers.values()),
            "accepted": sum(c.accepted for c in self.numbers.values()),
            "unique_callbacks": len(self.by_callback),
            "duplicates_by_callback": {k: v for k, v in self.by_callback.items() if v > 1},
            "unique_payloads": len(self.by_payload),
            "duplicates_by_payload": {k: v for k, v in self.by_payload.items() if v > 1},
            "failed_async": {str(k): v for k, v in self.failed_async.items()},
            "faults": dict(self.faults),
            "webhooks": {"posts_attempted": w.posts_attempted, "posts_delivered": w.posts_delivered,
                         "posts_failed": w.posts_failed, "posts_dropped": w.posts_dropped,
                         "updates_delivered": w.updates_delivered, "statuses_scheduled": dict(w.statuses),
                         "user_preferences_scheduled": dict(w.user_preferences)},
        }
