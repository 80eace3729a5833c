"""Marketing opt-outs from Meta's webhooks: ``user_preferences`` stop/resume items and failed
statuses with error 131050 become ``Suppression`` records on wa.suppressions, keyed by tenant and
pseudonymous subject (never a number); each malformed item is its own bad item, the others go on."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_normalise_convert import PEPPER, _change, _normaliser, _raw
from wapipe.avro import AvroSerde
from wapipe.privacy.subjects import subject_id
from wapipe.topics import ACCOUNT_EVENTS, STATUS_EVENTS, SUPPRESSIONS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
META = {"display_phone_number": "15550001111", "phone_number_id": "1001"}


def _prefs(*items) -> bytes:
    return _change("user_preferences", {"messaging_product": "whatsapp", "metadata": META,
                                        "user_preferences": list(items)})


def _item(wa_id="491711234567", value="stop", ts=1750857384, **kw) -> dict:
    return {"wa_id": wa_id, "detail": f"User requested to {value} marketing messages", "category": "marketing_messages",
            "value": value, "timestamp": ts, **kw}


def _suppressions(events):
    return [e for e in events if e.topic == SUPPRESSIONS]


def test_meta_fixtures_stop_and_resume_become_suppression_records():
    n, _ = _normaliser({"106540352242922": "acme"})
    subject = subject_id(PEPPER, "acme", "16505551234")
    for name, suppressed, ts in (("user_preferences_stop", True, 1739321024), ("user_preferences_resume", False, 1731705721)):
        done = n.convert_items(_raw((FIXTURES / f"{name}.json").read_bytes()))
        assert not done.bad
        [s] = _suppressions(done.events)
        assert s.key == f"acme/{subject}" and "16505551234" not in s.key
        assert s.record.suppressed is suppressed and s.record.at.timestamp() == ts
        assert s.record.tenant_id == "acme" and s.record.subject_id == subject
        assert [e.topic for e in done.events].count(ACCOUNT_EVENTS) == 1  # the change is still kept (sealed)
        wire = AvroSerde().encode("Suppression", s.record.to_avro())
        assert b"16505551234" not in wire and b"Sheena" not in wire


def test_a_failed_status_with_131050_suppresses_and_other_failures_do_not():
    n, _ = _normaliser({"106540352242922": "acme"})
    events = n.convert(_raw((FIXTURES / "status_failed_marketing_opt_out.json").read_bytes()))
    [s] = _suppressions(events)
    assert s.record.suppressed is True and s.record.source == "error 131050"
    assert s.key == f"acme/{subject_id(PEPPER, 'acme', '16505551234')}"
    assert [e.topic for e in events].count(STATUS_EVENTS) == 1
    assert not _suppressions(n.convert(_raw((FIXTURES / "status_failed.json").read_bytes())))  # 131049


def test_no_tenant_no_suppression_but_the_change_is_kept():
    n, _ = _normaliser({})
    done = n.convert_items(_raw(_prefs(_item())))
    assert not done.bad and not _suppressions(done.events) and done.events


def test_a_malformed_item_is_its_own_bad_item_and_the_others_convert():
    n, _ = _normaliser({"1001": "acme"})
    items = [_item("491710000001"), _item("491710000002", value="maybe"), _item("491710000003", ts="asdf"),
             {"category": "marketing_messages", "value": "stop"}, "not an object", _item("491710000004", value="resume")]
    done = n.convert_items(_raw(_prefs(*items)))
    bad = {b.path: b.reason for b in done.bad}
    base = "entry[0].changes[0].value.user_preferences"
    assert set(bad) == {f"{base}[1]", f"{base}[2]", f"{base}[3]", f"{base}[4]"}, bad
    assert "value" in bad[f"{base}[1]"] and "timestamp" in bad[f"{base}[2]"] and "user" in bad[f"{base}[3]"]
    got = {e.record.subject_id: e.record.suppressed for e in _suppressions(done.events)}
    assert got == {subject_id(PEPPER, "acme", "491710000001"): True, subject_id(PEPPER, "acme", "491710000004"): False}


def test_user_preferences_that_is_not_a_list_is_one_bad_item():
    n, _ = _normaliser({"1001": "acme"})
    body = _change("user_preferences", {"messaging_product": "whatsapp", "metadata": META, "user_preferences": {"x": 1}})
    done = n.convert_items(_raw(body))
    assert [b.path for b in done.bad] == ["entry[0].changes[0].value.user_preferences"]
    assert not _suppressions(done.events)


def test_the_same_webhook_twice_gives_the_same_event_ids_and_stop_resume_differ():
    n, _ = _normaliser({"1001": "acme"})
    ids = [e.event_id for e in _suppressions(n.convert(_raw(_prefs(_item(), _item(value="resume", ts=1750857999)))))]
    again = [e.event_id for e in _suppressions(n.convert(_raw(_prefs(_item(), _item(value="resume", ts=1750857999)))))]
    assert ids == again and len(set(ids)) == 2


_json = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=12),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
                     max_leaves=8)
_field = st.sampled_from(["wa_id", "user_id", "category", "value", "timestamp", "detail"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.one_of(
    st.builds(_item, wa_id=st.from_regex(r"[1-9][0-9]{9,13}", fullmatch=True), value=st.sampled_from(["stop", "resume"]),
              ts=st.integers(0, 4_000_000_000)),
    st.builds(lambda base, k, v: {**base, k: v}, st.builds(_item), _field, _json),
    _json), max_size=6))
def test_any_items_convert_or_are_bad_items_never_both_and_never_crash(items):
    """Property: every item is either converted or named as bad at its own path; a suppression is
    written only for a well-formed stop/resume; no key or record holds a number in clear."""
    n, _ = _normaliser({"1001": "acme"})
    done = n.convert_items(_raw(_prefs(*items)))
    base = "entry[0].changes[0].value.user_preferences"
    bad_idx = {int(b.path[len(base) + 1:-1]) for b in done.bad}
    assert all(b.path.startswith(base + "[") for b in done.bad)
    sup = _suppressions(done.events)
    serde = AvroSerde()
    for i, it in enumerate(items):
        ok = isinstance(it, dict) and it.get("value") in ("stop", "resume") and it.get("category") == "marketing_messages"
        if i in bad_idx:
            continue
        if ok and isinstance(it.get("wa_id"), str) and it["wa_id"].isdigit():
            subject = subject_id(PEPPER, "acme", it["wa_id"])
            assert any(e.record.subject_id == subject and e.record.suppressed == (it["value"] == "stop")
                       for e in sup), (i, it)
    assert len(sup) <= 2 * (len(items) - len(bad_idx))  # one per subject: by number and by BSUID
    for e in sup:
        wire = e.key.encode() + serde.encode("Suppression", e.record.to_avro())
        for it in items:
            if isinstance(it, dict) and isinstance(it.get("wa_id"), str) and len(it["wa_id"]) >= 8:
                assert it["wa_id"].encode() not in wire


def test_record_shape_round_trips_through_avro():
    n, _ = _normaliser({"1001": "acme"})
    [s] = _suppressions(n.convert(_raw(_prefs(_item()))))
    serde = AvroSerde()
    back = serde.decode(serde.encode("Suppression", s.record.to_avro()), "Suppression")
    assert back == {**s.record.to_avro(), "at": back["at"], "received_at": back["received_at"]}
    assert s.key == s.record.key == f"acme/{s.record.subject_id}"


def test_an_item_with_a_number_and_a_bsuid_suppresses_both_subjects():
    n, _ = _normaliser({"1001": "acme"})
    bsuid = "US.13491208655302741918"
    done = n.convert_items(_raw(_prefs(_item("491711234567", user_id=bsuid))))
    got = sorted(e.record.subject_id for e in _suppressions(done.events))
    assert got == sorted({subject_id(PEPPER, "acme", "491711234567"), subject_id(PEPPER, "acme", bsuid)})
    assert len({e.event_id for e in _suppressions(done.events)}) == 2
