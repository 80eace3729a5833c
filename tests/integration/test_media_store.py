"""The media stores (a folder; S3-compatible storage) and sealing of files per subject.

The S3 store runs against moto's S3-compatible HTTP server started on 127.0.0.1 by the test — S3
itself cannot be reached here; moto speaks the S3 REST protocol over real HTTP, so boto3's real
client code path is exercised. The same contract assertions run against both stores.

Sealing here uses a small AES key table with erasure (the Kafka-backed KeyRing and its erasure are
covered with the real broker in test_media_fetch.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wapipe.media.sealed import CorruptMedia, object_id_for, open_blob, seal_blob
from wapipe.media.store import LocalMediaStore, S3MediaStore, check_id, open_store
from wapipe.media.sweep import sweep
from wapipe.privacy.errors import SubjectErased, UnsealError
from tests.harness import make_settings

pytestmark = pytest.mark.integration


class KeyTable:
    """One AES-256-GCM key per subject, erasable — the key ring's public seal/unseal contract."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}

    def seal(self, tenant_id, subject_id, data):
        import json
        key = self.keys.setdefault(subject_id, AESGCM.generate_key(256))
        kid = f"{subject_id}/k1"
        nonce = os.urandom(12)
        return {"key_id": kid, "nonce": nonce, "ciphertext": AESGCM(key).encrypt(nonce, json.dumps(data).encode(), kid.encode())}

    def unseal(self, sealed):
        import json
        subject = sealed["key_id"].split("/")[0]
        if subject not in self.keys:
            raise SubjectErased(sealed["key_id"])
        try:
            return json.loads(AESGCM(self.keys[subject]).decrypt(sealed["nonce"], sealed["ciphertext"], sealed["key_id"].encode()))
        except InvalidTag:
            raise UnsealError("does not authenticate") from None  # what the KeyRing raises

    def erase(self, subject_id):
        self.keys.pop(subject_id, None)

    def is_erased(self, sealed_or_key):
        key_id = sealed_or_key if isinstance(sealed_or_key, str) else sealed_or_key["key_id"]
        return key_id.split("/")[0] not in self.keys


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(params=["folder", "s3"])
def store(request, tmp_path, monkeypatch):
    if request.param == "folder":
        return LocalMediaStore(tmp_path / "media")
    import boto3
    import uuid

    url = request.getfixturevalue("s3_server")
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    bucket = "media-" + uuid.uuid4().hex[:8]
    boto3.client("s3", endpoint_url=url).create_bucket(Bucket=bucket)
    settings_ = make_settings(tmp_path / "state", media_url=f"s3://{bucket}/inbound", media_s3_endpoint_url=url)
    s = open_store(settings_)
    assert isinstance(s, S3MediaStore)
    return s


async def test_put_get_list_delete_scoped_by_tenant(store):
    a, b = object_id_for("acme", "ev-1"), object_id_for("acme", "ev-2")
    await store.put("acme", a, b"one")
    await store.put("acme", b, b"two")
    await store.put("globex", a, b"other tenant, same object id")
    assert await store.get("acme", a) == b"one"
    assert await store.get("globex", a) == b"other tenant, same object id"
    assert sorted(o.object_id for o in await store.list("acme")) == sorted([a, b])
    assert [o.object_id for o in await store.list("globex")] == [a]
    assert await store.tenants() == ["acme", "globex"]
    assert await store.delete("acme", a) is True and await store.delete("acme", a) is False
    with pytest.raises(KeyError):
        await store.get("acme", a)
    assert await store.get("globex", a) == b"other tenant, same object id"  # untouched
    await store.put("acme", b, b"two, again")  # redelivery overwrites in place
    assert await store.get("acme", b) == b"two, again" and len(await store.list("acme")) == 1


@pytest.mark.parametrize("tenant,obj", [("..", "a" * 32), ("acme/../x", "a" * 32), ("acme", "../" + "a" * 29),
                                        ("acme", "A" * 32), ("acme", "a" * 31), ("", "a" * 32), ("acme", "+4915112345678")])
async def test_ids_that_could_escape_or_name_a_person_are_refused(store, tenant, obj):
    with pytest.raises(ValueError):
        await store.put(tenant, obj, b"x")
    with pytest.raises(ValueError):
        await store.get(tenant, obj)


async def test_sealed_file_opens_only_for_its_name_and_tenant_and_not_after_erasure(store):
    keys = KeyTable()
    content = os.urandom(5000)
    oid = object_id_for("acme", "ev-7")
    blob = seal_blob(keys, "acme", "subj-1", oid, content, mime_type="image/jpeg", filename="box.jpg")
    assert content not in blob and b"box.jpg" not in blob and b"image/jpeg" not in blob
    await store.put("acme", oid, blob)
    opened = open_blob(keys, "acme", oid, await store.get("acme", oid))
    assert (opened.content, opened.mime_type, opened.filename, opened.subject_id) == (content, "image/jpeg", "box.jpg", "subj-1")
    assert opened.sha256 == hashlib.sha256(content).hexdigest()
    with pytest.raises(CorruptMedia):  # moved to another name
        open_blob(keys, "acme", object_id_for("acme", "ev-8"), blob)
    with pytest.raises(CorruptMedia):  # claimed by another tenant
        open_blob(keys, "globex", oid, blob)
    keys.erase("subj-1")
    with pytest.raises(SubjectErased):
        open_blob(keys, "acme", oid, await store.get("acme", oid))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=600), flip=st.integers(min_value=0, max_value=10_000))
def test_property_altered_or_garbage_blobs_never_open_and_never_crash(blob, flip):
    """Any garbage, and any single-byte change of a real sealed blob, is refused with CorruptMedia
    (or the subject-erased error when the header's key id is mangled) — never opened, never another error."""
    keys = KeyTable()
    oid = object_id_for("acme", "ev-p")
    real = bytearray(seal_blob(keys, "acme", "subj-p", oid, b"payload-" + blob))
    real[flip % len(real)] ^= 0x01
    for candidate in (blob, bytes(real)):
        try:
            open_blob(keys, "acme", oid, candidate)
        except (CorruptMedia, SubjectErased):
            continue
        raise AssertionError("a corrupted blob opened")


async def test_sweep_deletes_by_each_tenant_s_content_retention(store):
    await store.put("acme", object_id_for("acme", "1"), b"a")
    await store.put("globex", object_id_for("globex", "1"), b"g")
    days = {"acme": 7, "globex": 30}.__getitem__
    now = dt.datetime.now(dt.timezone.utc)
    kept = await sweep(store, days, now=now + dt.timedelta(days=1))
    assert (kept.deleted, kept.kept) == (0, 2)
    after_8 = await sweep(store, days, now=now + dt.timedelta(days=8))
    assert after_8.by_tenant == {"acme": 1} and after_8.kept == 1
    assert await store.list("acme") == [] and len(await store.list("globex")) == 1
    after_31 = await sweep(store, days, now=now + dt.timedelta(days=31))
    assert after_31.by_tenant == {"globex": 1}


def test_open_store_from_settings(tmp_path):
    s = make_settings(tmp_path / "state")
    assert isinstance(open_store(s), LocalMediaStore) and open_store(s).root == tmp_path / "state" / "media"
    assert open_store(s, f"file://{tmp_path}/m").root == tmp_path / "m"
    with pytest.raises(ValueError):
        open_store(s, "ftp://host/x")
    check_id("acme", "0" * 32)


async def test_sweep_removes_the_files_of_erased_subjects_and_leaves_others(store):
    keys = KeyTable()
    mine, theirs, junk = object_id_for("acme", "e1"), object_id_for("acme", "e2"), object_id_for("acme", "e3")
    await store.put("acme", mine, seal_blob(keys, "acme", "subj-gone", mine, b"a" * 10))
    await store.put("acme", theirs, seal_blob(keys, "acme", "subj-kept", theirs, b"b" * 10))
    await store.put("acme", junk, b"not a sealed blob")  # never guessed at: left to retention
    days = {"acme": 30}.__getitem__
    before = await sweep(store, days, erased=keys.is_erased)
    assert (before.deleted, before.kept) == (0, 3)
    keys.erase("subj-gone")
    after = await sweep(store, days, erased=keys.is_erased)
    assert (after.deleted, after.erased, after.kept) == (1, 1, 2)
    assert sorted(o.object_id for o in await store.list("acme")) == sorted([theirs, junk])
    assert await store.head("acme", theirs, 5) == b"WAPM1"
