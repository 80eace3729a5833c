"""KEK sealing, subject ids, local secret generation and production refusal."""

import base64
import os
import stat
import threading

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wapipe.config import Settings
from wapipe.privacy import Kek, SecretsNotConfigured, UnsealError, load_kek, pepper_from, subject_id


def settings(tmp_path, **kw) -> Settings:
    return Settings(state_dir=tmp_path, **kw)


def test_seal_unseal_round_trip(tmp_path):
    kek = load_kek(settings(tmp_path))
    sealed = kek.seal(b"EAAG-token", "tenant-1")
    assert sealed["key_id"] == f"kek:{kek.kek_id}" and b"EAAG-token" not in sealed["ciphertext"]
    assert kek.unseal(sealed, "tenant-1") == b"EAAG-token"


def test_tampering_is_detected():
    kek = Kek(os.urandom(32))
    sealed = kek.seal(b"secret", "t1")
    flipped = bytearray(sealed["ciphertext"])
    flipped[0] ^= 1
    with pytest.raises(UnsealError):
        kek.unseal({**sealed, "ciphertext": bytes(flipped)}, "t1")
    with pytest.raises(UnsealError):
        kek.unseal({**sealed, "nonce": os.urandom(12)}, "t1")


def test_aad_binds_the_tenant_and_the_key_id():
    kek = Kek(os.urandom(32))
    sealed = kek.seal(b"secret", "t1")
    with pytest.raises(UnsealError):  # another tenant's record cannot carry this token
        kek.unseal(sealed, "t2")
    # Re-labelling the key id is detected even when it names this same KEK format.
    with pytest.raises(UnsealError):
        kek.unseal({**sealed, "key_id": "kek:0000000000000000"}, "t1")


def test_wrong_kek_fails():
    sealed = Kek(os.urandom(32)).seal(b"secret", "t1")
    other = Kek(os.urandom(32))
    with pytest.raises(UnsealError):
        other.unseal(sealed, "t1")
    # Even with the key id forged to match, the tag does not verify.
    with pytest.raises(UnsealError):
        other.unseal({**sealed, "key_id": f"kek:{other.kek_id}"}, "t1")
    nonce, wrapped = Kek(os.urandom(32)).wrap(os.urandom(32), "s/k")
    with pytest.raises(UnsealError):
        other.unwrap(nonce, wrapped, "s/k")


def test_wrap_binds_the_topic_key():
    kek = Kek(os.urandom(32))
    dk = os.urandom(32)
    nonce, wrapped = kek.wrap(dk, "subjectA/k1")
    assert kek.unwrap(nonce, wrapped, "subjectA/k1") == dk
    with pytest.raises(UnsealError):
        kek.unwrap(nonce, wrapped, "subjectB/k1")


def test_configured_kek_env_and_file(tmp_path):
    raw = os.urandom(32)
    b64 = base64.b64encode(raw).decode()
    assert load_kek(settings(tmp_path, kek=b64)).key == raw
    f = tmp_path / "kekfile"
    f.write_text(b64 + "\n")
    assert load_kek(settings(tmp_path, kek_file=f)).key == raw
    with pytest.raises(SecretsNotConfigured):
        load_kek(settings(tmp_path, kek=base64.b64encode(b"short").decode()))


def test_generated_once_with_mode_0600_and_shared_by_concurrent_starters(tmp_path):
    s = settings(tmp_path)
    results = []
    threads = [threading.Thread(target=lambda: results.append(load_kek(s).key)) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(set(results)) == 1
    path = tmp_path / "secrets" / "kek"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_kek(s).key == results[0]
    assert pepper_from(s) == pepper_from(s) and stat.S_IMODE((tmp_path / "secrets" / "pepper").stat().st_mode) == 0o600


def test_production_refuses_generated_secrets(tmp_path):
    s = settings(tmp_path, env="production")
    with pytest.raises(SecretsNotConfigured):
        load_kek(s)
    with pytest.raises(SecretsNotConfigured):
        pepper_from(s)
    assert not (tmp_path / "secrets").exists()
    ok = settings(tmp_path, env="production", kek=base64.b64encode(os.urandom(32)).decode(),
                  subject_pepper="a-long-deployment-pepper-value")
    assert load_kek(ok) and pepper_from(ok) == b"a-long-deployment-pepper-value"


def test_subject_id_is_pseudonymous_stable_and_per_tenant():
    pepper = b"p" * 32
    a = subject_id(pepper, "t1", "+1 (555) 010-0001")
    assert a == subject_id(pepper, "t1", "15550100001")
    assert len(a) == 32 and "5550100001" not in a
    assert a != subject_id(pepper, "t2", "15550100001")
    assert a != subject_id(b"q" * 32, "t1", "15550100001")
    with pytest.raises(ValueError):
        subject_id(pepper, "t1", "no digits")


def test_aesgcm_is_what_we_think():
    # Guard: the library we rely on rejects a 31-byte key (no silent truncation).
    with pytest.raises(ValueError):
        AESGCM(os.urandom(31))


def test_kek_rotation_opens_old_values_and_seals_with_the_new_key(tmp_path):
    old, new = os.urandom(32), os.urandom(32)
    sealed_old = Kek(old).seal(b"token", "t1")
    nonce, wrapped = Kek(old).wrap(b"k" * 32, "s/k")
    rotated = load_kek(settings(tmp_path, kek=base64.b64encode(new).decode(),
                                kek_previous=base64.b64encode(os.urandom(32)).decode() + "," + base64.b64encode(old).decode()))
    assert rotated.unseal(sealed_old, "t1") == b"token"
    assert rotated.unwrap(nonce, wrapped, "s/k", Kek(old).kek_id) == b"k" * 32
    assert rotated.seal(b"x", "t1")["key_id"] == f"kek:{Kek(new).kek_id}"
    with pytest.raises(UnsealError):  # without the old KEK listed, old values do not open
        Kek(new).unseal(sealed_old, "t1")
