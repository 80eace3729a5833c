"""Operator actions on tenants, shared by the CLI and the admin HTTP API.

Every change is: read the current tenant from the registry, build the new immutable ``Tenant``,
publish it (acks=all), publish an AuditEvent, and wait until the registry reads it back, so the
next action (and the caller) sees its own write. ``wa.tenants`` has one partition and one writer
per action; concurrent writers to the same tenant are last-writer-wins (the follower only touches
number fields and limits).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable

from wapipe.avro import AvroSerde
from wapipe.config import Settings
from wapipe.edge.clients import producer as make_producer
from wapipe.log import get_logger
from wapipe.tenants.audit import publish_audit
from wapipe.tenants.models import PhoneNumber, Template, Tenant, TenantStatus
from wapipe.tenants.registry import TenantRegistry
from wapipe.tenants.store import delete_template, write_template, write_tenant
from wapipe.topics import TEMPLATES, TENANTS

log = get_logger(__name__)


class TenantError(ValueError):
    """A refused operator action; the message says why."""


def parse_number(spec: str) -> PhoneNumber:
    """``PNID[:DISPLAY[:MPS]]`` -> PhoneNumber."""
    parts = spec.split(":")
    if not parts[0].strip() or len(parts) > 3:
        raise TenantError(f"--number {spec!r}: expected PHONE_NUMBER_ID[:DISPLAY[:MPS]]")
    pnid = parts[0].strip()
    if not pnid.isdigit():
        raise TenantError(f"--number {spec!r}: the phone number id must be digits")
    display = parts[1].strip() if len(parts) > 1 else ""
    try:
        mps = int(parts[2]) if len(parts) > 2 and parts[2].strip() else 80
    except ValueError:
        raise TenantError(f"--number {spec!r}: MPS must be a whole number") from None
    if mps < 1:
        raise TenantError(f"--number {spec!r}: MPS must be at least 1")
    return PhoneNumber(phone_number_id=pnid, display_phone_number=display, throughput_mps=mps)


def parse_pairs(items: Iterable[str], what: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise TenantError(f"{what} {item!r}: expected NAME=NUMBER")
        try:
            out[k.strip()] = int(v)
        except ValueError:
            raise TenantError(f"{what} {item!r}: {v!r} is not a whole number") from None
    return out


class TenantService:
    def __init__(self, settings: Settings, bootstrap: str, *, actor: str = "operator:cli",
                 registry: TenantRegistry | None = None, ready_timeout: float = 30.0) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.actor = actor
        self.serde = AvroSerde.from_settings(settings)
        self.producer = make_producer(bootstrap)
        self._own_registry = registry is None
        self.registry = registry or TenantRegistry(settings, bootstrap).start()
        if not self.registry.wait_ready(ready_timeout):
            raise TenantError(f"could not read wa.tenants within {ready_timeout:.0f}s")
        self._kek = None

    @property
    def kek(self):
        if self._kek is None:
            from wapipe.privacy.kek import load_kek

            self._kek = load_kek(self.settings)
        return self._kek

    def as_actor(self, actor: str) -> "TenantService":
        """The same service (registry, producer, KEK) whose audit events name ``actor``."""
        view = copy.copy(self)
        view.actor = actor
        view._own_registry = False
        return view

    def close(self) -> None:
        self.producer.flush(10)
        if self._own_registry:
            self.registry.close()

    def __enter__(self) -> "TenantService":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- reads ----------------------------------------------------------------------------
    def get(self, tenant_id: str) -> Tenant:
        t = self.registry.tenant(tenant_id)
        if t is None:
            raise TenantError(f"no tenant {tenant_id!r}")
        return t

    # --- writes ---------------------------------------------------------------------------
    def save(self, tenant: Tenant, action: str, *, outcome: str = "ok", details: dict | None = None,
             wait: float = 15.0) -> Tenant:
        """Publish ``tenant``, audit ``action``, and wait until the registry has it."""
        partition, offset = write_tenant(self.producer, tenant, serde=self.serde)
        publish_audit(self.producer, actor=self.actor, action=action, tenant_id=tenant.tenant_id,
                      target=tenant.waba_id, outcome=outcome, details=details, serde=self.serde)
        self._await(lambda: self.registry.has_read(TENANTS, partition, offset), wait)
        log.info("tenant.saved", tenant_id=tenant.tenant_id, action=action, status=str(tenant.status),
                 version=tenant.version)
        return tenant

    def save_template(self, template: Template, *, wait: float = 15.0) -> Template:
        partition, offset = write_template(self.producer, template, serde=self.serde)
        self._await(lambda: self.registry.has_read(TEMPLATES, partition, offset), wait)
        return template

    def remove_template(self, waba_id: str, name: str, language: str, *, wait: float = 15.0) -> None:
        """Tombstone a template and wait until the registry dropped it."""
        partition, offset = delete_template(self.producer, waba_id, name, language)
        self._await(lambda: self.registry.has_read(TEMPLATES, partition, offset), wait)

    def audit(self, action: str, tenant_id: str | None, *, target: str | None = None, outcome: str = "ok",
              details: dict | None = None) -> None:
        publish_audit(self.producer, actor=self.actor, action=action, tenant_id=tenant_id, target=target,
                      outcome=outcome, details=details, serde=self.serde)

    @staticmethod
    def _await(cond, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TenantError("the change was written but the registry did not read it back in time")
            time.sleep(0.02)

    def _check_numbers_free(self, tenant_id: str, numbers: Iterable[PhoneNumber]) -> None:
        for n in numbers:
            owner = self.registry.tenant_for_number(n.phone_number_id)
            if owner is not None and owner.tenant_id != tenant_id and owner.status != TenantStatus.DISCONNECTED:
                raise TenantError(f"phone number {n.phone_number_id} already belongs to tenant {owner.tenant_id}")

    def create(self, tenant_id: str, *, waba_id: str | None, numbers: list[PhoneNumber], token: str | None,
               messaging_limit: int = 250, retention: dict[str, int] | None = None, display_name: str = "",
               business_id: str | None = None, app_id: str | None = None) -> Tenant:
        """A tenant created directly by an operator (no Meta call): ACTIVE when it has a token and numbers."""
        if self.registry.tenant(tenant_id) is not None:
            raise TenantError(f"tenant {tenant_id!r} already exists (use `wapipe tenants update`)")
        self._check_numbers_free(tenant_id, numbers)
        if len({n.phone_number_id for n in numbers}) != len(numbers):
            raise TenantError("the same phone number id was given twice")
        try:
            t = Tenant(tenant_id=tenant_id, waba_id=waba_id, numbers=tuple(numbers), messaging_limit=messaging_limit,
                       display_name=display_name, business_id=business_id, app_id=app_id,
                       retention_days={**self.settings.retention_defaults, **(retention or {})})
        except ValueError as exc:
            raise TenantError(str(exc)) from None
        if token:
            t = t.with_token(self.kek, token)
        status = TenantStatus.ACTIVE if (t.token is not None and numbers and waba_id) else TenantStatus.ONBOARDING
        t = Tenant.model_validate({**t.model_dump(), "status": status, "version": 1})
        return self.save(t, "tenant.created", details={"numbers": ",".join(n.phone_number_id for n in numbers),
                                                        "status": str(status), "token": "sealed" if token else "none"})

    def update(self, tenant_id: str, *, retention: dict[str, int] | None = None,
               throughput: dict[str, int] | None = None, status: str | None = None,
               messaging_limit: int | None = None, display_name: str | None = None,
               add_numbers: list[PhoneNumber] | None = None, token: str | None = None) -> Tenant:
        t = self.get(tenant_id)
        changes: dict = {}
        details: dict[str, object] = {}
        if retention:
            changes["retention_days"] = {**t.retention_days, **retention}
            details["retention"] = ",".join(f"{k}={v}" for k, v in sorted(retention.items()))
        numbers = list(t.numbers)
        if add_numbers:
            self._check_numbers_free(tenant_id, add_numbers)
            ids = {n.phone_number_id for n in add_numbers}
            numbers = [n for n in numbers if n.phone_number_id not in ids] + list(add_numbers)
            details["numbers_added"] = ",".join(sorted(ids))
        if throughput:
            for pnid, mps in throughput.items():
                idx = next((i for i, n in enumerate(numbers) if n.phone_number_id == pnid), None)
                if idx is None:
                    raise TenantError(f"tenant {tenant_id} has no phone number {pnid}")
                if mps < 1:
                    raise TenantError(f"throughput of {pnid} must be at least 1 msg/s")
                numbers[idx] = numbers[idx].model_copy(update={"throughput_mps": mps})
            details["throughput"] = ",".join(f"{k}={v}" for k, v in sorted(throughput.items()))
        if add_numbers or throughput:
            changes["numbers"] = tuple(numbers)
        if messaging_limit is not None:
            changes["messaging_limit"] = messaging_limit
            details["messaging_limit"] = messaging_limit
        if display_name is not None:
            changes["display_name"] = display_name
        if status is not None:
            try:
                new_status = TenantStatus(status.upper())
            except ValueError:
                raise TenantError(f"unknown status {status!r}; one of {', '.join(s.value for s in TenantStatus)}") from None
            if new_status == TenantStatus.DISCONNECTED:
                raise TenantError("use `wapipe tenants disconnect` (it unsubscribes the app and deletes the token)")
            changes["status"] = new_status
            details["status"] = f"{t.status}->{new_status}"
        if not changes and not token:
            raise TenantError("nothing to update")
        try:
            new = t.evolve(**changes)
        except ValueError as exc:
            raise TenantError(str(exc)) from None
        if token:
            new = new.with_token(self.kek, token).model_copy(update={"version": new.version})
            details["token"] = "replaced"
        if new.status == TenantStatus.ACTIVE and new.token is None:
            raise TenantError(f"tenant {tenant_id} has no token: it cannot be ACTIVE (onboard it or give --token-file)")
        return self.save(new, "tenant.updated", details=details)
