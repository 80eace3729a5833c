"""The send worker's marketing opt-out decision (processors/send/suppression.py): MARKETING templates
to a suppressed subject are refused with reason code MARKETING_OPT_OUT; utility, authentication and
session messages still go; the latest entry by Meta's event time wins; tenants never share a list."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.send.records import Outcome
from tests.unit.commands import command
from wapipe.messages.send import SendCommand
from processors.send.suppression import REASON_CODE, Entry, SuppressionList, category_of, decide

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


@dataclass
class _Tpl:
    category: str


@dataclass
class _Tenant:
    waba_id: str


class _Registry:
    """Two tenants with their own WABAs; 'promo' is MARKETING in acme's WABA but UTILITY in globex's."""

    tenants = {"acme": _Tenant("w-acme"), "globex": _Tenant("w-globex")}
    templates = {("w-acme", "promo", "en_US"): _Tpl("MARKETING"), ("w-acme", "invoice", "en_US"): _Tpl("UTILITY"),
                 ("w-acme", "otp", "en_US"): _Tpl("AUTHENTICATION"), ("w-globex", "promo", "en_US"): _Tpl("UTILITY")}

    def tenant(self, tenant_id):
        return self.tenants.get(tenant_id)

    def template(self, waba_id, name, language):
        return self.templates.get((waba_id, name, language))


REG = _Registry()


def _cmd(tenant="acme", subject="s1", template: str | None = "promo", **kw) -> SendCommand:
    cmd = {"tenant_id": tenant, "subject_id": subject, "kind": "TEMPLATE" if template else "TEXT",
           "template": {"name": template, "language": "en_US", "parameter_count": 0} if template else None}
    cmd.update(kw)
    return command(**cmd)


def _rec(suppressed: bool, at_s: float, tenant="acme", subject="s1", source="user_preferences stop") -> dict:
    """A decoded Suppression record (every field of the schema, as fastavro returns it)."""
    at = T0 + dt.timedelta(seconds=at_s)
    return {"event_id": f"e-{tenant}-{subject}-{at_s}", "tenant_id": tenant, "subject_id": subject,
            "category": "marketing_messages", "suppressed": suppressed, "source": source, "at": at,
            "phone_number_id": None, "received_at": at}


def test_decide_refuses_only_marketing_templates_to_a_suppressed_subject():
    on, off = Entry(True, 1, "user_preferences stop"), Entry(False, 2, "user_preferences resume")
    r = decide(_cmd(), "MARKETING", on)
    assert r is not None and r.outcome == Outcome.REJECTED and r.code == REASON_CODE and "marketing" in r.reason
    assert decide(_cmd(), "marketing", on) is not None  # Meta's words in any case
    for category in ("UTILITY", "AUTHENTICATION", None):
        assert decide(_cmd(), category, on) is None
    assert decide(_cmd(template=None), "MARKETING", on) is None  # a session message: the user wrote to us
    assert decide(_cmd(), "MARKETING", off) is None and decide(_cmd(), "MARKETING", None) is None


def test_the_category_comes_from_the_tenants_registry_not_the_command():
    lst = SuppressionList()
    lst.apply(_rec(True, 1))
    lst.apply(_rec(True, 1, tenant="globex"))
    assert category_of(_cmd(), REG) == "MARKETING" and category_of(_cmd(template="invoice"), REG) == "UTILITY"
    assert lst.refusal(_cmd(category="UTILITY"), REG) is not None  # a field the ERP adds changes nothing
    assert lst.refusal(_cmd(template="invoice"), REG) is None and lst.refusal(_cmd(template="otp"), REG) is None
    # globex's 'promo' is a utility template in its own WABA
    assert lst.refusal(_cmd(tenant="globex"), REG) is None


def test_suppression_is_per_tenant_and_an_opt_in_lifts_it():
    lst = SuppressionList()
    lst.apply(_rec(True, 10))
    assert lst.refusal(_cmd(), REG) is not None
    assert lst.refusal(_cmd(tenant="globex"), REG) is None  # same subject id string, another tenant
    assert lst.refusal(_cmd(subject="s2"), REG) is None
    lst.apply(_rec(False, 20, source="user_preferences resume"))
    assert lst.refusal(_cmd(), REG) is None and len(lst) == 0


def test_a_late_stale_record_never_overrides_a_newer_one():
    lst = SuppressionList()
    lst.apply(_rec(False, 20))
    lst.apply(_rec(True, 10, source="error 131050"))  # a failed status of an older message, delivered late
    assert not lst.is_suppressed("acme", "s1")


def test_an_unreadable_record_raises_for_the_follower_to_count_and_changes_nothing():
    lst = SuppressionList()
    lst.apply(_rec(True, 1))
    for bad in ({}, {"tenant_id": "acme"}, {**_rec(True, 5), "subject_id": ""}, {**_rec(False, 5), "at": "x"}):
        try:
            lst.apply(bad)
        except (KeyError, TypeError, ValueError):
            pass
        else:
            raise AssertionError(f"accepted {bad}")
    assert lst.is_suppressed("acme", "s1")


_events = st.lists(st.tuples(st.sampled_from(["acme", "globex"]), st.sampled_from(["s1", "s2"]), st.booleans(),
                             st.integers(0, 50)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(events=_events, order=st.randoms(use_true_random=False))
def test_property_state_is_the_latest_event_per_tenant_and_subject_in_any_delivery_order(events, order):
    """Whatever order the records arrive in, each (tenant, subject) ends in the state of its latest
    event (ties: the one delivered last, as the compacted topic keeps), and only MARKETING is refused."""
    delivered = list(events)
    order.shuffle(delivered)
    lst = SuppressionList()
    for tenant, subject, suppressed, at in delivered:
        lst.apply(_rec(suppressed, at, tenant=tenant, subject=subject))
    for tenant in ("acme", "globex"):
        for subject in ("s1", "s2"):
            mine = [(at, i) for i, (t, s, _, at) in enumerate(delivered) if (t, s) == (tenant, subject)]
            expect = False
            if mine:
                latest = max(at for at, _ in mine)
                last_i = max(i for at, i in mine if at == latest)
                expect = delivered[last_i][2]
            assert lst.is_suppressed(tenant, subject) == expect
            refused = lst.refusal(_cmd(tenant=tenant, subject=subject), REG) is not None
            assert refused == (expect and tenant == "acme")  # globex's promo is UTILITY
            for tpl in ("invoice", "otp", None):
                assert lst.refusal(_cmd(tenant=tenant, subject=subject, template=tpl), REG) is None


def test_a_command_with_a_number_and_a_bsuid_subject_follows_the_latest_choice_of_either():
    """SendCommand v3 (BSUID) carries the BSUID's subject in ``user_subject_id`` beside the number's."""
    lst = SuppressionList()
    lst.apply(_rec(True, 10, subject="bsuid-subject"))  # opted out while known only by username
    both = _cmd(subject="number-subject", user_subject_id="bsuid-subject")
    assert lst.refusal(both, REG) is not None and lst.refusal(_cmd(subject="number-subject"), REG) is None
    lst.apply(_rec(False, 20, subject="number-subject"))  # later resumed (the webhook had the number)
    assert lst.refusal(both, REG) is None
    lst.apply(_rec(True, 30, subject="bsuid-subject"))
    assert lst.refusal(both, REG) is not None
