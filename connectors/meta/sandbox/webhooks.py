"""Webhook delivery from the simulated Meta to the apps subscribed to a WABA.

Updates (statuses, inbound messages, template and number events) are scheduled with a due time on
one heap. A single loop wakes every ``batch_interval_s``, gathers the due updates, groups them as
Meta does (one envelope per WABA + field + phone number, up to ``max_batch`` updates per POST) and
hands each POST to its own delivery task: signed ``X-Hub-Signature-256`` with the app secret, and
re-sent unchanged with exponential backoff while the receiver answers non-2xx or is unreachable,
until ``retry_max_age_s``. Retrying one POST never holds back the others (so retries also reorder).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from connectors.meta.sandbox.models import SandboxConfig
from connectors.meta.sandbox.state import Counters, World
from connectors.meta.transport import AiohttpTransport
from connectors.meta.signature import sign
from wapipe.log import get_logger

log = get_logger(__name__)


@dataclass(slots=True)
class _Due:
    waba_id: str
    field: str
    number_id: str | None
    item: dict
    app_id: str | None = None  # only this app (e.g. the one that completed a signup), else the WABA's apps
    entry_id: str | None = None  # entry.id when it is not the WABA id


class WebhookDispatcher:
    def __init__(self, world: World, config: Callable[[], SandboxConfig], counters: Counters) -> None:
        self.world = world
        self.config = config
        self.counters = counters
        self._heap: list[tuple[float, int, _Due]] = []  # (due, seq, update): cheap comparisons
        self._seq = itertools.count()
        self._inflight = 0
        self._task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._client: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None

    # --- scheduling (called from request handlers) -----------------------------------------
    def schedule(self, delay: float, waba_id: str, field: str, item: dict, number_id: str | None = None, *,
                 app_id: str | None = None, entry_id: str | None = None) -> None:
        heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq),
                                    _Due(waba_id, field, number_id, item, app_id, entry_id)))

    @property
    def pending(self) -> int:
        """Updates not yet delivered or given up: queued, or inside a POST being (re)tried."""
        return len(self._heap) + self._inflight

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        pol = self.config().webhooks
        self._sem = asyncio.Semaphore(pol.concurrency)
        # aiohttp's pool under httpx's API, like the Graph client: httpx's own pool costs ~2-3 CPU-ms per
        # POST with a few dozen in flight, and the sandbox shares the CPU with the pipeline it serves.
        self._client = httpx.AsyncClient(timeout=pol.timeout_s,
                                         transport=AiohttpTransport(max_connections=pol.concurrency))
        self._task = asyncio.create_task(self._run(), name="sandbox-webhooks")

    async def stop(self) -> None:
        for t in [self._task, *self._tasks]:
            if t is not None:
                t.cancel()
        await asyncio.gather(*[t for t in [self._task, *self._tasks] if t is not None], return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    # --- the loop ----------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config().webhooks.batch_interval_s)
            now = time.monotonic()
            groups: dict[tuple[str, str, str | None, str | None, str | None], list[dict]] = {}
            heap = self._heap
            while heap and heap[0][0] <= now:
                d = heapq.heappop(heap)[2]
                groups.setdefault((d.waba_id, d.field, d.number_id, d.app_id, d.entry_id), []).append(d.item)
            max_batch = self.config().webhooks.max_batch
            for (waba_id, fld, number_id, app_id, entry_id), items in groups.items():
                for i in range(0, len(items), max_batch):
                    try:
                        self._post_all(waba_id, fld, number_id, items[i:i + max_batch], app_id, entry_id)
                    except Exception:  # one bad batch must not stop every later webhook
                        log.exception("webhook batch not sent", waba_id=waba_id, field=fld)

    def _post_all(self, waba_id: str, fld: str, number_id: str | None, items: list[dict], app_id: str | None = None,
                  entry_id: str | None = None) -> None:
        if app_id is not None:
            app = self.world.apps.get(app_id)
            apps = [app] if app is not None and app.webhook_url else []
        else:
            apps = self.world.apps_for(waba_id)
        if not apps:
            return
        envelope = self._envelope(waba_id, fld, number_id, items)
        if entry_id is not None:
            envelope["entry"][0]["id"] = entry_id
        body = json.dumps(envelope, separators=(",", ":")).encode()
        for app in apps:
            self._inflight += len(items)
            t = asyncio.create_task(self._deliver(app.webhook_url, app.secret.encode(), body, len(items)))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    def _envelope(self, waba_id: str, fld: str, number_id: str | None, items: list[dict]) -> dict:
        if fld == "messages":
            num = self.world.numbers.get(number_id or "")
            value: dict = {"messaging_product": "whatsapp",
                           "metadata": {"display_phone_number": num.display_phone_number if num else "",
                                        "phone_number_id": number_id}}
            statuses = [i["status"] for i in items if "status" in i]
            inbound = [i for i in items if "message" in i]
            if inbound:
                contacts: dict[str, dict] = {}
                for i in inbound:
                    c = i["contact"]
                    contacts.setdefault(c.get("wa_id") or c.get("user_id") or "", c)
                value["contacts"] = list(contacts.values())
                value["messages"] = [i["message"] for i in inbound]
            if statuses:
                value["statuses"] = statuses
            changes = [{"value": value, "field": "messages"}]
        else:
            changes = [{"value": i, "field": fld} for i in items]
        return {"object": "whatsapp_business_account", "entry": [{"id": waba_id, "changes": changes}]}

    async def _deliver(self, url: str, secret: bytes, body: bytes, n_updates: int) -> None:
        pol = self.config().webhooks
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(secret, body),
                   "User-Agent": "facebookexternalua"}
        born = time.monotonic()
        delay = pol.retry_initial_s
        w = self.counters.webhooks
        try:
            while True:
                w.posts_attempted += 1
                ok = False
                try:
                    assert self._sem is not None and self._client is not None
                    async with self._sem:
                        resp = await self._client.post(url, content=body, headers=headers,
                                                       timeout=self.config().webhooks.timeout_s)
                    ok = 200 <= resp.status_code < 300
                except (httpx.HTTPError, httpx.InvalidURL, OSError):
                    ok = False  # refused, reset, timed out, bad URL: all a failed delivery to Meta
                if ok:
                    w.posts_delivered += 1
                    w.updates_delivered += n_updates
                    return
                w.posts_failed += 1
                if time.monotonic() - born + delay > pol.retry_max_age_s:
                    w.posts_dropped += 1
                    return
                await asyncio.sleep(delay)
                delay = min(delay * pol.retry_factor, pol.retry_max_interval_s)
        finally:
            self._inflight -= n_updates
