"""A small synchronous client of the sandbox's control API (``/_sandbox``), for tests,
benchmarks and the demo. Every method raises ``httpx.HTTPStatusError`` on a non-2xx answer."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx

from connectors.meta.sandbox.models import Faults, Seed


class SandboxControl:
    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url + "/_sandbox", timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _do(self, method: str, path: str, json: Any = None, params: dict | None = None) -> Any:
        r = self._http.request(method, path, json=json, params=params)
        r.raise_for_status()
        return r.json()

    # --- world ---------------------------------------------------------------------------------
    def seed(self, seed: Seed | dict) -> dict:
        data = seed.model_dump(mode="json", exclude_unset=True) if isinstance(seed, Seed) else seed
        return self._do("POST", "/seed", data)

    def state(self) -> dict:
        return self._do("GET", "/state")

    def add_business(self, id: str, tier: str = "TIER_250", **kw) -> dict:
        return self.seed({"businesses": [{"id": id, "tier": tier, **kw}]})

    def add_waba(self, id: str, business_id: str, **kw) -> dict:
        return self.seed({"wabas": [{"id": id, "business_id": business_id, **kw}]})

    def add_number(self, id: str, waba_id: str, throughput: int = 80, **kw) -> dict:
        return self.seed({"numbers": [{"id": id, "waba_id": waba_id, "throughput": throughput, **kw}]})

    def add_template(self, waba_id: str, name: str, language: str = "en_US", body_params: int = 0,
                     status: str = "APPROVED", category: str = "UTILITY", **kw) -> dict:
        return self.seed({"templates": [{"waba_id": waba_id, "name": name, "language": language,
                                         "body_params": body_params, "status": status, "category": category, **kw}]})

    def add_token(self, token: str, waba_ids: list[str], app_id: str | None = None) -> dict:
        return self.seed({"tokens": [{"token": token, "waba_ids": waba_ids, "app_id": app_id}]})

    def add_app(self, id: str, secret: str, webhook_url: str | None = None) -> dict:
        return self.seed({"apps": [{"id": id, "secret": secret, "webhook_url": webhook_url}]})

    def revoke_token(self, token: str) -> dict:
        return self._do("POST", f"/tokens/{token}/revoke")

    def set_webhook(self, url: str | None, app_id: str | None = None, app_secret: str | None = None,
                    verify_token: str | None = None) -> dict:
        """Point an app's webhooks at ``url``; with ``verify_token`` the sandbox first runs Meta's
        GET handshake against it (422 when the challenge is not echoed)."""
        return self._do("PUT", "/webhook", {"url": url, "app_id": app_id, "app_secret": app_secret,
                                            "verify_token": verify_token})

    def set_invalid_recipients(self, wa_ids: list[str]) -> dict:
        return self._do("POST", "/invalid_recipients", {"wa_ids": wa_ids})

    # --- config and faults ---------------------------------------------------------------------
    def config(self) -> dict:
        return self._do("GET", "/config")

    def configure(self, **patch: Any) -> dict:
        """Deep-merge ``patch`` into the config, e.g. ``configure(limits={"pair_burst": 2})``."""
        return self._do("PATCH", "/config", patch)

    def set_latency(self, ms: float, kind: str = "fixed", b: float = 0.0) -> dict:
        return self.configure(latency={"kind": kind, "a": ms, "b": b})

    def set_faults(self, faults: Faults | None = None, **kw: Any) -> dict:
        f = faults or Faults(**kw)
        return self._do("PUT", "/faults", f.model_dump(mode="json"))

    def clear_faults(self) -> dict:
        return self._do("DELETE", "/faults")

    # --- events ----------------------------------------------------------------------------------
    def inbound(self, phone_number_id: str, wa_id: str | None, text: str = "hello", **kw: Any) -> str:
        """A user message arriving at ``phone_number_id``: webhook + opens the service window. A
        username user: ``wa_id=None`` and ``user_id=<BSUID>`` (maybe ``username=``, ``parent_user_id=``)."""
        sender = {"from": wa_id} if wa_id else {}
        return self._do("POST", "/inbound", {"phone_number_id": phone_number_id, **sender, "text": text, **kw})["wamid"]

    def add_media(self, phone_number_id: str, mime_type: str, content: bytes) -> dict:
        """A media object of ``phone_number_id`` (as if uploaded): ``{id, sha256, file_size}``."""
        return self._do("POST", "/media", {"phone_number_id": phone_number_id, "mime_type": mime_type,
                                           "content_b64": base64.b64encode(content).decode()})

    def inbound_media(self, phone_number_id: str, wa_id: str, kind: str, mime_type: str, content: bytes,
                      caption: str | None = None, filename: str | None = None) -> str:
        """The user sends a file (image, document, …): the webhook carries its media id."""
        media = {"mime_type": mime_type, "content_b64": base64.b64encode(content).decode(), "caption": caption,
                 "filename": filename}
        return self._do("POST", "/inbound", {"phone_number_id": phone_number_id, "from": wa_id, "type": kind,
                                             "text": None, "media": media})["wamid"]

    def set_template_status(self, waba_id: str, name: str, language: str, status: str,
                            reason: str | None = None) -> dict:
        return self._do("POST", f"/templates/{waba_id}/{name}/{language}/status", {"status": status, "reason": reason})

    def update_number(self, number_id: str, *, quality_rating: str | None = None, throughput: int | None = None,
                      event: str | None = None) -> dict:
        body = {k: v for k, v in {"quality_rating": quality_rating, "throughput": throughput, "event": event}.items()
                if v is not None}
        return self._do("PATCH", f"/numbers/{number_id}", body)

    def set_tier(self, business_id: str, tier: str) -> dict:
        return self._do("PATCH", f"/businesses/{business_id}", {"tier": tier})

    def account_update(self, waba_id: str, event: str, **details: Any) -> dict:
        """An ``account_update`` webhook (PARTNER_REMOVED, ACCOUNT_VIOLATION, …) to the WABA's apps."""
        return self._do("POST", "/account_update", {"waba_id": waba_id, "event": event, "details": details or None})

    def user_preferences(self, phone_number_id: str, wa_id: str, value: str, name: str | None = "Sandbox User") -> dict:
        """The user stops (``value="stop"``) or resumes (``"resume"``) marketing messages from the
        number's business: a signed ``user_preferences`` webhook, and 131050 for MARKETING templates."""
        return self._do("POST", "/user_preferences", {"phone_number_id": phone_number_id, "wa_id": wa_id,
                                                      "value": value, "name": name})

    def signup_code(self, app_id: str, waba_ids: list[str], token: str | None = None) -> str:
        return self._do("POST", "/signup_codes", {"app_id": app_id, "waba_ids": waba_ids, "token": token})["code"]

    # --- reading -----------------------------------------------------------------------------------
    def counters(self, series: bool = False) -> dict:
        """``series=True`` adds each number's ``accepted_per_second`` {unix second: sends}."""
        return self._do("GET", "/counters", params={"series": "1"} if series else None)

    def reset_counters(self) -> dict:
        return self._do("POST", "/counters/reset")

    def messages(self, phone_number_id: str | None = None, offset: int = 0, limit: int = 100_000) -> list[dict]:
        params: dict = {"offset": offset, "limit": limit}
        if phone_number_id:
            params["phone_number_id"] = phone_number_id
        return self._do("GET", "/messages", params=params)["messages"]

    def reads(self, phone_number_id: str | None = None) -> list[dict]:
        """Read receipts accepted: ``{message_id, phone_number_id, wa_id, typing_indicator, at}``."""
        return self._do("GET", "/reads", params={"phone_number_id": phone_number_id} if phone_number_id else None)["reads"]

    def pending_webhooks(self) -> int:
        return self._do("GET", "/webhooks/pending")["pending"]

    def wait_webhooks_idle(self, timeout: float = 10.0, interval: float = 0.02) -> None:
        """Until every scheduled webhook update was delivered or given up."""
        deadline = time.monotonic() + timeout
        while self.pending_webhooks():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.pending_webhooks()} webhook updates still pending after {timeout}s")
            time.sleep(interval)
