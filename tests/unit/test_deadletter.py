"""The dead-letter helper: whole when it fits, cut down (keeping where, why and a prefix) when not;
and StatusEvent v4's backward-compatible field."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from wapipe.avro import AvroSerde
from wapipe.deadletter import REASON_MAX, DeadLetter, Source, encode

SERDE = AvroSerde()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300_000), st.binary(max_size=2_000), st.text(max_size=5_000),
       st.integers(4096, 200_000))
def test_a_dead_letter_always_fits_and_keeps_where_and_why(value, key, reason, max_bytes):
    letter = DeadLetter(Source("wa.x", 3, 12345, key, value), reason, "SerdeError", headers={"path": "entry[0]"})
    data, prefix = encode(SERDE, letter, "wa.x.dead", max_bytes)
    back = SERDE.decode(data, "DeadLetter")
    assert (back["source_topic"], back["partition"], back["offset"], back["error_type"]) == ("wa.x", 3, 12345,
                                                                                          "SerdeError")
    assert back["headers"]["path"] == "entry[0]"
    if prefix is None:
        assert back["value"] == value and back["key"] == key and back["reason"] == reason
    else:
        assert len(data) <= max(max_bytes, 2 * prefix + 4 * REASON_MAX + 1_000)
        assert value.startswith(back["value"]) and key.startswith(back["key"]) and reason.startswith(back["reason"])
        assert back["headers"]["value_bytes"] == str(len(value)) and back["headers"]["cut"]


def test_a_record_of_1040000_bytes_gets_a_cut_down_dead_letter_under_the_limit():
    value = b"x" * 1_040_000
    data, prefix = encode(SERDE, DeadLetter(Source("wa.send.requested", 0, 7, b"t1", value), "not Avro", "SerdeError"),
                          "wa.send.dead", 900_000)
    assert prefix is not None and len(data) < 100_000
    back = SERDE.decode(data, "DeadLetter")
    assert back["offset"] == 7 and back["reason"] == "not Avro" and back["headers"]["value_bytes"] == "1040000"


def test_a_v3_status_event_reads_as_v4_with_no_recipient_type():
    now = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    rec = {"event_id": "e", "tenant_id": None, "waba_id": "w", "phone_number_id": "p", "wamid": "m", "status": "sent",
           "timestamp": now, "subject_id": None, "pii": None, "biz_opaque_callback_data": None, "conversation_id": None,
           "conversation_origin": None, "conversation_expires_at": None, "pricing_billable": None, "pricing_model": None,
           "pricing_category": None, "pricing_type": None, "errors": [], "received_at": now, "extra": "{}"}
    back = SERDE.decode(SERDE.encode("StatusEvent", rec, version=3), "StatusEvent")
    assert back["recipient_type"] is None and back["wamid"] == "m"


def test_a_dead_letter_with_stop_waits_out_an_absent_broker_until_stop():
    """With ``stop`` the write waits however long the broker is away (no ``timeout``, a producer
    without a local message timeout) and gives up only at stop, with ``Stopped``."""
    import threading
    import time

    import pytest

    from wapipe.deadletter import SyncDeadLetters
    from wapipe.edge.batches import Stopped
    from wapipe.edge.clients import patient_producer

    stop = threading.Event()
    producer = patient_producer("127.0.0.1:1")  # nothing listens there
    letters = SyncDeadLetters(AvroSerde(), "wa.erp.dead", producer, 10_000, timeout=0.2, stop=stop)
    letter = DeadLetter(Source("wa.send.results", 0, 7, b"k", b"v"), "bad", "SerdeError", tenant_id="t")
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            letters.write(letter)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=write)
    t.start()
    time.sleep(2.0)  # ten times its timeout: still waiting
    assert outcome == [] and t.is_alive()
    stop.set()
    t.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], Stopped), outcome
    assert letters.written == 0
    with pytest.raises(Stopped):  # and at once while stop stays set
        letters.write(letter)
    producer.purge()
