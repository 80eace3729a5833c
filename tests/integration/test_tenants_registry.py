"""TenantRegistry against the real broker: publish -> seen, update replaces, tombstone removes,
a registry started later catches up, listeners hear changes."""

from __future__ import annotations

import threading
import time

import pytest

from tests.harness import eventually

from wapipe.edge.clients import producer
from wapipe.tenants.models import PhoneNumber, Template, Tenant, TenantStatus
from wapipe.tenants.registry import TenantRegistry
from wapipe.tenants.store import delete_template, publish_template, publish_tenant

pytestmark = pytest.mark.integration




@pytest.fixture
def registry(settings, topics):
    reg = TenantRegistry(settings, topics).start()
    try:
        assert reg.wait_ready(20)
        yield reg
    finally:
        reg.close()


def test_publish_update_and_late_registry(settings, topics, registry, unique):
    p = producer(topics)
    tid = f"t-{unique}"
    pn = f"pn{unique}"
    tenant = Tenant(tenant_id=tid, status=TenantStatus.ACTIVE, waba_id=f"w{unique}",
                    numbers=(PhoneNumber(phone_number_id=pn, display_phone_number="+1 555 0100"),),
                    messaging_limit=1000)
    publish_tenant(p, tenant)
    seen = eventually(lambda: registry.tenant(tid))
    assert seen == tenant
    assert registry.tenant_for_number(pn).tenant_id == tid
    assert registry.number(pn).throughput_mps == 80

    # an update replaces: new number set, the old number no longer maps to the tenant
    pn2 = f"pn2{unique}"
    updated = tenant.evolve(numbers=(PhoneNumber(phone_number_id=pn2, throughput_mps=1000),), messaging_limit=10000)
    publish_tenant(p, updated)
    eventually(lambda: registry.tenant(tid).version == 2)
    assert registry.tenant(tid).messaging_limit == 10000
    assert registry.tenant_for_number(pn) is None
    assert registry.number(pn2).throughput_mps == 1000

    tpl = Template(tenant_id=tid, waba_id=f"w{unique}", name="invoice", language="en_US", status="APPROVED",
                   components='[{"type":"BODY","text":"Hi {{1}}, invoice {{2}}"}]', body_parameter_count=2)
    publish_template(p, tpl)
    eventually(lambda: registry.template(f"w{unique}", "invoice", "en_US"))
    assert registry.templates(tid) == [tpl]

    # a registry started after all that catches up on wait_ready alone (no polling loop)
    late = TenantRegistry(settings, topics).start()
    try:
        assert late.wait_ready(20)
        assert late.tenant(tid) == updated
        assert late.number(pn2).throughput_mps == 1000
        assert late.template(f"w{unique}", "invoice", "en_US").sendable
    finally:
        late.close()

    # tombstone removes
    delete_template(p, f"w{unique}", "invoice", "en_US")
    eventually(lambda: registry.template(f"w{unique}", "invoice", "en_US") is None)


def test_listener_hears_a_limit_change(settings, topics, registry, unique):
    p = producer(topics)
    tid = f"t-{unique}"
    pn = f"pn{unique}"
    heard = []
    got = threading.Event()

    def listener(change):
        if change.kind == "tenant" and change.key == tid:
            heard.append(change)
            if change.new is not None and change.new.number(pn).throughput_mps == 1000:
                got.set()

    registry.on_change(listener)
    t = Tenant(tenant_id=tid, status=TenantStatus.ACTIVE, numbers=(PhoneNumber(phone_number_id=pn),))
    publish_tenant(p, t)
    publish_tenant(p, t.with_number(PhoneNumber(phone_number_id=pn, throughput_mps=1000)))
    assert got.wait(15)
    assert heard[-1].old.number(pn).throughput_mps == 80


def test_unreadable_record_is_skipped_not_fatal(settings, topics, registry, unique):
    from wapipe.topics import TENANTS

    p = producer(topics)
    p.produce(TENANTS, key=f"bad-{unique}".encode(), value=b"not avro")
    p.flush(10)
    good = Tenant(tenant_id=f"good-{unique}")
    publish_tenant(p, good)
    eventually(lambda: registry.tenant(good.tenant_id))
    assert registry.tenant(f"bad-{unique}") is None


def test_a_disconnected_former_owner_yields_its_number_and_waba(settings, topics, registry, unique):
    p = producer(topics)
    pn, waba = f"pn{unique}", f"w{unique}"
    old = Tenant(tenant_id=f"a-old-{unique}", status=TenantStatus.DISCONNECTED, waba_id=waba,
                 numbers=(PhoneNumber(phone_number_id=pn),))
    new = Tenant(tenant_id=f"z-new-{unique}", status=TenantStatus.ACTIVE, waba_id=waba,
                 numbers=(PhoneNumber(phone_number_id=pn),))
    publish_tenant(p, new)
    publish_tenant(p, old)  # written last, still loses to the connected owner
    eventually(lambda: registry.tenant(old.tenant_id))
    assert registry.tenant_for_number(pn).tenant_id == new.tenant_id
    assert registry.tenant_for_waba(waba).tenant_id == new.tenant_id
    publish_tenant(p, new.evolve(numbers=()))  # the new owner drops the number: the old one is all there is
    eventually(lambda: registry.tenant_for_number(pn).tenant_id == old.tenant_id)
