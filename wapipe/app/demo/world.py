"""The demo's world: the Meta sandbox's seed (businesses, numbers, templates, tokens) and the
tenants created (or updated, on a re-run) to match it."""

from __future__ import annotations

import asyncio

from wapipe.app.demo.plan import APP_ID, DemoPlan
from wapipe.config import Settings
from wapipe.edge.endpoint import Endpoint

TEMPLATES = [
    # (name, category, body params, text)
    ("spring_sale", "MARKETING", 1, "Hi {{1}}, our spring sale starts today."),
    ("order_update", "UTILITY", 2, "Order {{1}} is {{2}}."),
    ("login_code", "AUTHENTICATION", 1, "{{1}} is your verification code."),
]


def sandbox_seed(plan: DemoPlan, app_secret: str, failing: list[str]) -> dict:
    tenants = plan.tenants()
    return {
        "config": {
            "latency": {"kind": "lognormal", "a": 40, "b": 0.4},
            "habits": {"duplicate": 0.0, "out_of_order": 0.05, "skip_delivered": 0.0, "read": plan.read_ratio},
            "webhooks": {"sent_after": {"kind": "uniform", "a": 50, "b": 300},
                         "delivered_after": {"kind": "lognormal", "a": 700, "b": 0.6},
                         "read_after": {"kind": "lognormal", "a": 3000, "b": 0.8},
                         "batch_interval_s": 0.05, "max_batch": 200},
            "record_messages": True,
        },
        "apps": [{"id": APP_ID, "secret": app_secret, "name": "wapipe demo"}],
        "businesses": [{"id": t.business_id, "name": t.display_name, "tier": "TIER_100K"} for t in tenants],
        "wabas": [{"id": t.waba_id, "business_id": t.business_id, "name": f"{t.display_name} WABA"} for t in tenants],
        "numbers": [{"id": t.phone_number_id, "waba_id": t.waba_id, "display_phone_number": t.display_phone_number,
                     "verified_name": t.display_name, "throughput": t.throughput} for t in tenants],
        "templates": [{"waba_id": t.waba_id, "name": n, "language": "en_US", "category": c, "body_params": p,
                       "body_text": text} for t in tenants for n, c, p, text in TEMPLATES],
        "tokens": [{"token": t.token, "app_id": APP_ID, "waba_ids": [t.waba_id]} for t in tenants],
        "invalid_recipients": failing,
    }


def create_tenants(s: Settings, bootstrap: Endpoint, plan: DemoPlan, sandbox_url: str) -> str:
    """Create the plan's tenants (or update them, on a re-run) and sync their templates from the
    sandbox; returns one line for people."""
    from connectors.meta.client import GraphClient
    from wapipe.tenants.models import PhoneNumber
    from wapipe.tenants.service import TenantService
    from wapipe.tenants.templates import sync_templates

    svc = TenantService(s, bootstrap, actor="operator:demo")
    try:
        created, updated, templates = 0, 0, 0
        for t in plan.tenants():
            number = PhoneNumber(phone_number_id=t.phone_number_id, display_phone_number=t.display_phone_number,
                                 throughput_mps=t.throughput, quality_rating="GREEN",
                                 messaging_limit_tier="TIER_100K")
            have = svc.registry.tenant(t.tenant_id)
            if have is None:
                svc.create(t.tenant_id, waba_id=t.waba_id, numbers=[number], token=t.token,
                           messaging_limit=100_000, display_name=t.display_name, business_id=t.business_id,
                           app_id=APP_ID)
                created += 1
            else:
                new = [] if any(n.phone_number_id == t.phone_number_id for n in have.numbers) else [number]
                svc.update(t.tenant_id, add_numbers=new, throughput={t.phone_number_id: t.throughput},
                           messaging_limit=100_000, token=t.token, status="ACTIVE")
                updated += 1
            tenant = svc.get(t.tenant_id)
            graph = GraphClient(base_url=sandbox_url, version=s.meta_graph_version)
            rep = asyncio.run(_sync(sync_templates, svc, graph, tenant))
            templates += len(rep.added) + len(rep.changed) + rep.unchanged
        return (f"{created} created, {updated} updated (existing), {templates} templates synced from the sandbox; "
                "numbers at " + ", ".join(f"{t.throughput}/s" for t in plan.tenants()))
    finally:
        svc.close()


async def _sync(fn, svc, graph, tenant):
    try:
        return await fn(svc, graph, tenant)
    finally:
        await graph.aclose()
