"""What the ``meta_sandbox`` pytest fixture yields: a running sandbox on 127.0.0.1 seeded with a
small standard world (one business, one WABA, two numbers, three templates, one token, one app),
tuned for tests (no added latency, webhook delays of milliseconds, fast retries)."""

from __future__ import annotations

from dataclasses import dataclass, field

from connectors.meta.sandbox.control_client import SandboxControl
from connectors.meta.sandbox.engine import Sandbox
from connectors.meta.sandbox.models import Seed
from connectors.meta.sandbox.server import SandboxThread

BUSINESS_ID = "1000000001"
WABA_ID = "2000000001"
NUMBER_IDS = ("3000000001", "3000000002")
APP_ID = "4000000001"
APP_SECRET = "sandbox-app-secret"
TOKEN = "EAAsandboxTOKEN"


def default_seed() -> Seed:
    return Seed.model_validate({
        "config": {
            "webhooks": {"sent_after": {"kind": "uniform", "a": 5, "b": 20},
                         "delivered_after": {"kind": "uniform", "a": 5, "b": 30},
                         "read_after": {"kind": "uniform", "a": 5, "b": 30},
                         "duplicate_after": {"kind": "uniform", "a": 10, "b": 50},
                         "batch_interval_s": 0.01, "retry_initial_s": 0.05, "retry_max_interval_s": 0.5,
                         "retry_max_age_s": 30.0},
            "limits": {"throttle_429_ratio": 0.0},  # deterministic: throttling answered 400 unless a test asks
            "template_review_s": 0.05,
        },
        "apps": [{"id": APP_ID, "secret": APP_SECRET}],
        "businesses": [{"id": BUSINESS_ID, "name": "Sandbox Co", "tier": "TIER_10K"}],
        "wabas": [{"id": WABA_ID, "business_id": BUSINESS_ID}],
        "numbers": [{"id": NUMBER_IDS[0], "waba_id": WABA_ID, "display_phone_number": "15550001001"},
                    {"id": NUMBER_IDS[1], "waba_id": WABA_ID, "display_phone_number": "15550001002"}],
        "templates": [
            {"waba_id": WABA_ID, "name": "hello_world", "language": "en_US", "category": "UTILITY", "body_params": 0},
            {"waba_id": WABA_ID, "name": "order_update", "language": "en_US", "category": "UTILITY", "body_params": 2,
             "body_text": "Order {{1}} is {{2}}."},
            {"waba_id": WABA_ID, "name": "promo", "language": "en_US", "category": "MARKETING", "body_params": 0},
        ],
        "tokens": [{"token": TOKEN, "app_id": APP_ID, "waba_ids": [WABA_ID]}],
    })


@dataclass
class MetaSandbox:
    """A running sandbox. ``url`` is the GraphClient ``base_url``; ``control`` the control client."""

    url: str
    control: SandboxControl
    sandbox: Sandbox  # the engine, for white-box assertions only; prefer ``control``
    business_id: str = BUSINESS_ID
    waba_id: str = WABA_ID
    number_ids: tuple[str, ...] = NUMBER_IDS
    app_id: str = APP_ID
    app_secret: str = APP_SECRET
    token: str = TOKEN
    _thread: SandboxThread | None = field(default=None, repr=False)

    @property
    def number_id(self) -> str:
        return self.number_ids[0]

    def stop(self) -> None:
        self.control.close()
        if self._thread is not None:
            self._thread.stop()


def start_meta_sandbox(seed: Seed | None = None) -> MetaSandbox:
    thread = SandboxThread(seed if seed is not None else default_seed()).start()
    try:
        return MetaSandbox(url=thread.url, control=SandboxControl(thread.url), sandbox=thread.sandbox, _thread=thread)
    except BaseException:
        thread.stop()
        raise
