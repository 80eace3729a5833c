"""Embedded-signup onboarding, step by step, resumable.

Steps, in order; after each one the tenant is written to ``wa.tenants`` with ``onboarding_step`` =
the step just completed, and an AuditEvent ``tenant.onboarding.<step>`` goes to ``wa.audit``:

=============  ===================================================================================
``started``    the tenant exists (status ONBOARDING, no token yet)
``token``      ``GET /oauth/access_token``: the signup code exchanged; the token stored KEK-sealed
``waba``       ``GET /debug_token`` granular scopes -> the WABA; ``GET /{waba}/phone_numbers``
``subscribed`` ``POST /{waba}/subscribed_apps``
``registered`` ``POST /{pnid}/register`` (with the PIN) for each number not yet CONNECTED
``templates``  ``GET /{waba}/message_templates`` -> ``wa.templates``
``limits``     ``GET /{pnid}?fields=...``: quality, throughput, messaging-limit tier
``done``       status ACTIVE
=============  ===================================================================================

A failing step is audited with ``outcome=failed`` and its reason and raises ``OnboardingFailed``;
the tenant stays at the last completed step (never half-written: each write is one whole record),
and ``resume`` continues from there. The signup code is single-use and short-lived, so the token
is sealed and stored right after the exchange, before any other call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from connectors.meta.client import PHONE_NUMBER_FIELDS
from wapipe.log import get_logger
from wapipe.tenants.limits import apply_number_info
from wapipe.tenants.models import PhoneNumber, Tenant, TenantStatus
from wapipe.tenants.service import TenantError, TenantService
from wapipe.tenants.templates import sync_templates

log = get_logger(__name__)

STEPS = ("started", "token", "waba", "subscribed", "registered", "templates", "limits", "done")


class OnboardingFailed(TenantError):
    def __init__(self, tenant_id: str, step: str, reason: str) -> None:
        super().__init__(f"onboarding of {tenant_id} failed at step {step!r}: {reason} "
                         f"(fix it, then `wapipe tenants onboard --resume {tenant_id}`)")
        self.tenant_id, self.step, self.reason = tenant_id, step, reason


@dataclass
class OnboardInput:
    """What a step may need besides the stored tenant. Nothing here is stored except ids."""

    code: str | None = None
    waba_id: str | None = None
    pin: str | None = None


def next_step(done: str | None) -> str:
    if done is None:
        return STEPS[0]
    if done not in STEPS:
        raise TenantError(f"unknown onboarding step {done!r}")
    i = STEPS.index(done)
    if i + 1 >= len(STEPS):
        raise TenantError("onboarding is complete")
    return STEPS[i + 1]


class Onboarder:
    """Runs the steps with one ``GraphClient`` and one ``TenantService``.

    ``apps``: the Meta apps we onboard for, ``{app_id: app_secret}`` (Settings.meta_apps).
    """

    def __init__(self, service: TenantService, graph: Any, apps: dict[str, str]) -> None:
        self.service = service
        self.graph = graph
        self.apps = apps

    # --- entry points -------------------------------------------------------------------------
    async def onboard(self, tenant_id: str, *, code: str, app_id: str | None = None, waba_id: str | None = None,
                      pin: str | None = None, display_name: str = "") -> Tenant:
        existing = self.service.registry.tenant(tenant_id)
        if existing is not None:
            if existing.status == TenantStatus.ONBOARDING:
                raise TenantError(f"tenant {tenant_id} is already onboarding (step {existing.onboarding_step}); "
                                  f"use --resume {tenant_id}")
            if existing.status != TenantStatus.DISCONNECTED:
                raise TenantError(f"tenant {tenant_id} already exists ({existing.status})")
        app_id = self._app(app_id)
        if existing is None:
            tenant = Tenant(tenant_id=tenant_id, status=TenantStatus.ONBOARDING, app_id=app_id,
                            display_name=display_name, onboarding_step="started",
                            retention_days=dict(self.service.settings.retention_defaults))
        else:  # reconnecting a disconnected tenant: keep its settings, start over
            tenant = existing.evolve(status=TenantStatus.ONBOARDING, app_id=app_id, onboarding_step="started",
                                     token=None, display_name=display_name or existing.display_name)
        tenant = await self._save(tenant, "started", {"app_id": app_id})
        return await self._run(tenant, OnboardInput(code=code, waba_id=waba_id, pin=pin))

    async def resume(self, tenant_id: str, *, code: str | None = None, waba_id: str | None = None,
                     pin: str | None = None) -> Tenant:
        tenant = self.service.get(tenant_id)
        if tenant.status != TenantStatus.ONBOARDING:
            raise TenantError(f"tenant {tenant_id} is {tenant.status}, not ONBOARDING: nothing to resume")
        self.service.audit("tenant.onboarding.resumed", tenant_id, target=tenant.waba_id,
                           details={"from_step": tenant.onboarding_step})
        return await self._run(tenant, OnboardInput(code=code, waba_id=waba_id, pin=pin))

    # --- the loop ------------------------------------------------------------------------------
    async def _run(self, tenant: Tenant, inp: OnboardInput) -> Tenant:
        while tenant.onboarding_step != "done":
            step = next_step(tenant.onboarding_step)
            try:
                tenant, details = await getattr(self, f"_step_{step}")(tenant, inp)
            except Exception as exc:  # MetaError, TenantError, validation: audited, tenant kept
                reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, TenantError) else str(exc)
                log.warning("tenant.onboarding.failed", tenant_id=tenant.tenant_id, step=step, reason=reason)
                self.service.audit(f"tenant.onboarding.{step}", tenant.tenant_id, target=tenant.waba_id,
                                   outcome="failed", details={"reason": reason[:500]})
                raise OnboardingFailed(tenant.tenant_id, step, reason) from exc
            tenant = await self._save(tenant, step, details)
        return tenant

    async def _save(self, tenant: Tenant, step: str, details: dict | None) -> Tenant:
        tenant = tenant.evolve(onboarding_step=step) if tenant.onboarding_step != step else tenant
        return await asyncio.to_thread(self.service.save, tenant, f"tenant.onboarding.{step}", details=details)

    def _app(self, app_id: str | None) -> str:
        if app_id:
            if app_id not in self.apps:
                raise TenantError(f"app {app_id} is not configured (WAPIPE_META_APPS)")
            return app_id
        if len(self.apps) != 1:
            raise TenantError("give --app-id: WAPIPE_META_APPS names "
                              + ("no app" if not self.apps else f"{len(self.apps)} apps"))
        return next(iter(self.apps))

    def _token(self, tenant: Tenant) -> str:
        return tenant.open_token(self.service.kek)

    # --- the steps: each returns (new tenant, audit details) -----------------------------------
    async def _step_started(self, tenant: Tenant, inp: OnboardInput):
        return tenant, {}

    async def _step_token(self, tenant: Tenant, inp: OnboardInput):
        if not inp.code:
            raise TenantError("the signup code is needed to get the token: give --code (a new one: codes expire in 30 s)")
        app_id = self._app(tenant.app_id)
        exchanged = await self.graph.exchange_code(app_id, self.apps[app_id], inp.code)
        tenant = tenant.with_token(self.service.kek, exchanged.access_token)
        return tenant, {"app_id": app_id, "token": "sealed"}

    async def _step_waba(self, tenant: Tenant, inp: OnboardInput):
        app_id = self._app(tenant.app_id)
        info = await self.graph.debug_token(self._token(tenant), app_token=f"{app_id}|{self.apps[app_id]}")
        if not info.is_valid:
            raise TenantError("Meta says the token is not valid (debug_token)")
        wabas = info.waba_ids
        waba_id = inp.waba_id or tenant.waba_id
        if waba_id is None:
            if len(wabas) != 1:
                raise TenantError(f"the token grants {len(wabas)} WABAs ({', '.join(wabas) or 'none'}): give --waba-id")
            waba_id = wabas[0]
        elif waba_id not in wabas:
            raise TenantError(f"the token does not grant WABA {waba_id} (it grants {', '.join(wabas) or 'none'})")
        owner = self.service.registry.tenant_for_waba(waba_id)
        if owner is not None and owner.tenant_id != tenant.tenant_id and owner.status != TenantStatus.DISCONNECTED:
            raise TenantError(f"WABA {waba_id} already belongs to tenant {owner.tenant_id}")
        phones = await self.graph.list_phone_numbers(waba_id, token=self._token(tenant), fields=PHONE_NUMBER_FIELDS)
        numbers = tuple(PhoneNumber(phone_number_id=p.id, display_phone_number=p.display_phone_number or "",
                                    quality_rating=p.quality_rating, status=p.status or "PENDING") for p in phones)
        self.service._check_numbers_free(tenant.tenant_id, numbers)
        # The token's user (app-scoped id): Meta's deletion / deauthorize callbacks name them.
        tenant = tenant.evolve(waba_id=waba_id, numbers=numbers, meta_user_id=info.user_id or tenant.meta_user_id)
        return tenant, {"waba_id": waba_id, "numbers": ",".join(n.phone_number_id for n in numbers),
                        "meta_user": "recorded" if info.user_id else "not given by debug_token"}

    async def _step_subscribed(self, tenant: Tenant, inp: OnboardInput):
        ok = await self.graph.subscribe_app(tenant.waba_id, token=self._token(tenant))
        if not ok:
            raise TenantError(f"Meta did not confirm the subscription to WABA {tenant.waba_id}")
        return tenant, {"waba_id": tenant.waba_id}

    async def _step_registered(self, tenant: Tenant, inp: OnboardInput):
        todo = [n for n in tenant.numbers if n.status != "CONNECTED"]
        if todo and not inp.pin:
            raise TenantError(f"number(s) {', '.join(n.phone_number_id for n in todo)} need registering: give --pin "
                              "(the 6-digit two-step verification PIN)")
        for n in todo:
            await self.graph.register_number(n.phone_number_id, inp.pin, token=self._token(tenant))
            # write after each number: a failure on the next one does not redo this one
            tenant = await asyncio.to_thread(
                self.service.save, tenant.with_number(n.model_copy(update={"status": "CONNECTED"})),
                "tenant.number.registered", details={"phone_number_id": n.phone_number_id})
        return tenant, {"registered": ",".join(n.phone_number_id for n in todo) or "none needed"}

    async def _step_templates(self, tenant: Tenant, inp: OnboardInput):
        report = await sync_templates(self.service, self.graph, tenant)
        return tenant, {"templates": len(report.added) + len(report.changed) + report.unchanged}

    async def _step_limits(self, tenant: Tenant, inp: OnboardInput):
        for n in tenant.numbers:
            info = await self.graph.phone_number(n.phone_number_id, token=self._token(tenant))
            tenant = apply_number_info(tenant, info)
        return tenant, {"messaging_limit": tenant.messaging_limit,
                        "throughput": ",".join(f"{n.phone_number_id}={n.throughput_mps}" for n in tenant.numbers)}

    async def _step_done(self, tenant: Tenant, inp: OnboardInput):
        return tenant.evolve(status=TenantStatus.ACTIVE), {"status": "ACTIVE"}
