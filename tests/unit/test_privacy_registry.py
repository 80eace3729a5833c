"""PrivacyRegistry's rules, fed records directly (the Kafka follower is exercised in integration tests)."""

from dataclasses import replace

from wapipe.config import Settings
from wapipe.messages.privacy import PrivacyStatus
from wapipe.messages.times import at_ms
from wapipe.privacy.records import new_request
from wapipe.privacy.registry import PrivacyRegistry, _sealed_from, sealed_to_detail


def reg() -> PrivacyRegistry:
    return PrivacyRegistry(Settings(), "127.0.0.1:1")  # not started: no connection made


def req(kind, subject, at, status="RECEIVED", **details):
    r = new_request(kind, source="test", tenant_id="t", subject_id=subject, details=details)
    return replace(r, requested_at=at_ms(at), status=PrivacyStatus(status))


def test_latest_restriction_request_wins_regardless_of_arrival_order():
    r = reg()
    r.remember(req("UNRESTRICTION", "s1", 2000))
    r.remember(req("RESTRICTION", "s1", 1000))  # older, arrives later: ignored
    assert not r.is_restricted("s1")
    r.remember(req("RESTRICTION", "s1", 3000))
    assert r.is_restricted("s1") and r.is_restricted("t", "s1") and not r.is_restricted("s2")
    r.remember(req("RESTRICTION", "s3", 3000, status="REJECTED"))
    assert not r.is_restricted("s3")


def test_erased_records_are_not_replayed():
    r = reg()
    r.remember(req("ERASURE", "s1", 5000))
    assert r.is_erased_record("s1", 4000) and r.is_erased_record("s1", 5000)
    assert not r.is_erased_record("s1", 6000)  # the person came back after the erasure
    assert not r.is_erased_record("s2", 1) and not r.is_erased_record(None, 1)


def test_corrections_and_codes():
    r = reg()
    sealed = {"key_id": "s1/k", "nonce": b"n" * 12, "ciphertext": b"c" * 20}
    assert _sealed_from(sealed_to_detail(sealed)) == sealed
    first = req("CORRECTION", "s1", 1000, field="profile_name", sealed=sealed_to_detail(sealed))
    r.remember(first)
    assert r.corrections("s1") == [("profile_name", sealed)]
    assert r.by_code(first.confirmation_code).request_id == first.request_id
    assert _sealed_from("not json") is None


def test_a_decoded_request_missing_a_required_field_is_reported_and_the_next_one_applies():
    """A record that decodes but cannot be a PrivacyRequest (here: a decoder that loses ``kind``)
    goes to ``on_unreadable`` with the field named (the processor dead-letters it); the request
    after it is applied."""
    from confluent_kafka import Message

    from wapipe.avro import AvroSerde
    from wapipe.topics import PRIVACY_REQUESTS

    bad, good = req("RESTRICTION", "s-bad", 1000), req("RESTRICTION", "s-good", 2000)

    class LosesKindOfBad(AvroSerde):
        def decode(self, data, name):
            r = super().decode(data, name)
            if r["request_id"] == bad.request_id:
                del r["kind"]
            return r

    serde = LosesKindOfBad()
    unreadable = []
    r = PrivacyRegistry(Settings(), "127.0.0.1:1", serde=serde,
                        on_unreadable=lambda m, reason, kind: unreadable.append((m.offset(), reason, kind)))
    for offset, one in enumerate((bad, good)):
        value = serde.encode("PrivacyRequest", one.to_avro(), topic=PRIVACY_REQUESTS)
        r._apply(Message(topic=PRIVACY_REQUESTS, partition=0, offset=offset, key=one.request_id.encode(), value=value))
    assert unreadable == [(0, "KeyError: 'kind'", "KeyError")]
    assert r.get(bad.request_id) is None and not r.is_restricted("s-bad")
    assert r.get(good.request_id) == good and r.is_restricted("s-good")
