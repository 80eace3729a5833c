"""export.own_raw_items: from a raw webhook body, only the subject's own items on the tenant's
numbers — never another person's, never another business's, never the whole body; poison bodies
give nothing and never raise."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from wapipe.privacy.export import own_raw_items
from wapipe.privacy.subjects import subject_id

PEPPER = b"p" * 32
TENANT = "tenant-a"
ME = "+1 555 010 0001"  # the subject, written as a person would
PEOPLE = ["15550100001", "15550100002", "4915112345678", "1"]  # the first is ME's digits
OURS, THEIRS = "1001", "2002"


def subject_of(wa: str) -> str:
    return subject_id(PEPPER, TENANT, wa)


SUBJECT = subject_of(ME)


def owns(pnid: str) -> bool:
    return pnid == OURS


def items(body: bytes) -> list[dict]:
    return own_raw_items(body, subject_id=SUBJECT, subject_of=subject_of, owns_number=owns)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12) | st.sampled_from(PEOPLE + [OURS, THEIRS]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["entry", "changes", "value", "metadata", "phone_number_id", "messages", "statuses",
                         "contacts", "from", "recipient_id", "wa_id", "text", "x"]), inner, max_size=5),
    max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_poison_bodies_never_raise_and_give_only_the_subjects_items(body):
    for found in items(body):
        assert found["phone_number_id"] == OURS
        item = found["item"]
        assert subject_of(item.get("from") or item.get("recipient_id") or item.get("wa_id")) == SUBJECT


planted = st.lists(st.tuples(st.sampled_from([OURS, THEIRS]), st.sampled_from(["messages", "statuses", "contacts"]),
                             st.sampled_from(PEOPLE)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(planted)
def test_exactly_the_subjects_items_on_our_numbers(plan):
    field = {"messages": "from", "statuses": "recipient_id", "contacts": "wa_id"}
    changes = []
    for n, (pnid, kind, wa) in enumerate(plan):  # one change per item: bodies mix numbers and people
        changes.append({"field": "messages", "value": {"metadata": {"phone_number_id": pnid},
                                                       kind: [{field[kind]: wa, "secret": n}]}})
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "w", "changes": changes}]}).encode()
    expected = sorted(n for n, (pnid, _, wa) in enumerate(plan) if pnid == OURS and wa == PEOPLE[0])
    assert sorted(f["item"]["secret"] for f in items(body)) == expected


def test_a_substring_of_the_number_is_not_the_number():
    body = json.dumps({"entry": [{"changes": [{"value": {"metadata": {"phone_number_id": OURS},
                                                         "messages": [{"from": "15550100001"}]}}]}]}).encode()
    assert len(items(body)) == 1
    assert own_raw_items(body, subject_id=subject_of("1"), subject_of=subject_of, owns_number=owns) == []
