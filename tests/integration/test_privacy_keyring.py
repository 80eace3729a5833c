"""KeyRings on the real broker share keys through wa.subject.keys; erasure shreds one subject."""

import threading
import time

import pytest

from wapipe.privacy import KeyRing, SubjectErased, UnsealError, load_kek

pytestmark = pytest.mark.integration


@pytest.fixture
def rings(settings, topics):
    kek = load_kek(settings)
    a = KeyRing(settings, topics, kek).start()
    b = KeyRing(settings, topics, kek).start()
    try:
        a.wait_ready(30)
        b.wait_ready(30)
        yield a, b
    finally:
        a.close()
        b.close()


def eventually(fn, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_two_rings_share_keys_and_erasure_shreds_only_that_subject(rings, unique):
    a, b = rings
    s1, s2 = f"subj-{unique}-1", f"subj-{unique}-2"
    sealed1 = a.seal("t1", s1, {"to": "15550100001", "name": "Ana"})
    sealed2 = b.seal("t1", s2, {"to": "15550100002", "name": "Bo"})
    assert sealed1["key_id"].startswith(f"{s1}/") and b"15550100001" not in sealed1["ciphertext"]
    assert a.opens_now(sealed1["key_id"]) and a.opens_now("") and not a.opens_now(f"subj-{unique}-never/k")
    # Each ring opens what the other sealed (it learns the key from the topic).
    assert b.unseal(sealed1) == {"to": "15550100001", "name": "Ana"}
    assert b.opens_now(sealed1["key_id"])  # read now: the next open answers from memory
    assert a.unseal(sealed2)["name"] == "Bo"

    assert a.erase(s1) == 1
    with pytest.raises(SubjectErased):
        a.unseal(sealed1)
    assert a.opens_now(sealed1["key_id"])  # erased: refused from memory, no read of the topic

    def b_sees_tombstone():
        try:
            b.unseal(sealed1)
        except SubjectErased:
            return
        raise AssertionError("ring b still opens an erased subject")

    eventually(b_sees_tombstone)
    assert a.unseal(sealed2)["to"] == "15550100002" and b.unseal(sealed2)["name"] == "Bo"
    # A ring started after the erasure never learns the key either.
    c = KeyRing(a._settings, a._bootstrap, a._kek).start()
    try:
        c.wait_ready(30)
        with pytest.raises(SubjectErased):
            c.unseal(sealed1)
        assert c.unseal(sealed2)["name"] == "Bo"
    finally:
        c.close()


def test_concurrent_key_creation_keeps_both_keys_and_erasure_removes_all(rings, unique):
    a, b = rings
    s = f"subj-{unique}-new"
    out = {}
    start = threading.Barrier(2)

    def seal(ring, name):
        start.wait()
        out[name] = ring.seal("t1", s, {"who": name})

    ts = [threading.Thread(target=seal, args=(a, "a")), threading.Thread(target=seal, args=(b, "b"))]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert out["a"]["key_id"] != out["b"]["key_id"], "each ring created its own key"
    for ring in (a, b):
        assert ring.unseal(out["a"]) == {"who": "a"} and ring.unseal(out["b"]) == {"who": "b"}
    eventually(lambda: (_ for _ in ()).throw(AssertionError) if len(a.keys_of(s)) != 2 else None)

    assert a.erase(s) == 2
    for ring in (a, b):
        for sealed in out.values():
            def gone(ring=ring, sealed=sealed):
                try:
                    ring.unseal(sealed)
                except SubjectErased:
                    return
                raise AssertionError("still readable")
            eventually(gone)


def test_aad_binds_key_id_and_tampering_fails(rings, unique):
    a, _ = rings
    s1, s2 = f"subj-{unique}-x", f"subj-{unique}-y"
    x = a.seal("t1", s1, {"n": 1})
    y = a.seal("t1", s2, {"n": 2})
    with pytest.raises(UnsealError):  # s1's ciphertext relabelled as s2's key
        a.unseal({**x, "key_id": y["key_id"]})
    ct = bytearray(x["ciphertext"])
    ct[-1] ^= 0x80
    with pytest.raises(UnsealError):
        a.unseal({**x, "ciphertext": bytes(ct)})


def test_unknown_key_is_erased_not_a_hang(rings, unique):
    a, _ = rings
    t0 = time.monotonic()
    with pytest.raises(SubjectErased):
        a.unseal({"key_id": f"nobody-{unique}/k", "nonce": b"0" * 12, "ciphertext": b"x" * 20})
    assert time.monotonic() - t0 < 10
