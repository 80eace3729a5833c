"""A ReadCommand is carried out only for the command's own tenant, number and subject, and only for
the message it names; anything else is a dead letter with a reason, never a Graph call. The Graph
call itself is tested against the sandbox (tests/integration/test_erp_inbound.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.meta import errors as meta_errors
from processors.erp_inbound.convert import Dead
from processors.erp_inbound.reads import mark_read, read_command
from wapipe.messages.erp import ReadCommand
from wapipe.messages.send import Sealed
from wapipe.privacy.errors import SubjectErased
from wapipe.privacy.kek import Kek
from wapipe.privacy.wamids import WamidRefs
from wapipe.tenants.models import PhoneNumber, Tenant, TenantStatus

KEK = Kek(os.urandom(32))
REF = WamidRefs.from_pepper(b"r" * 32)
WAMID = "wamid.HBgLNDkxNTExMjM0NTY3OBUCABEYEjQxQjJGMUE0N0U4MkNDMDVBQQA="
TENANTS = {
    "acme": Tenant(tenant_id="acme", status=TenantStatus.ACTIVE, waba_id="201",
                   numbers=(PhoneNumber(phone_number_id="301"),)).with_token(KEK, "EAAacme"),
    "beta": Tenant(tenant_id="beta", status=TenantStatus.ACTIVE, waba_id="202",
                   numbers=(PhoneNumber(phone_number_id="302"),)).with_token(KEK, "EAAbeta"),
    "notoken": Tenant(tenant_id="notoken", status=TenantStatus.ACTIVE, waba_id="203",
                      numbers=(PhoneNumber(phone_number_id="303"),)),
}
OWNERS = {"s-acme": {"acme"}, "s-beta": {"beta"}, "s-notoken": {"notoken"}}


class _Directory:
    def tenant(self, tenant_id):
        return TENANTS.get(tenant_id)


class _Ring:
    def tenants_of(self, subject):
        return OWNERS.get(subject, set())

    def unseal(self, sealed):
        if sealed["key_id"].endswith("/erased"):
            raise SubjectErased(sealed["key_id"])
        return json.loads(sealed["ciphertext"])


class _Graph:
    def __init__(self, fail: list[Exception] | None = None):
        self.calls: list[tuple] = []
        self.fail = list(fail or [])

    async def mark_read(self, pnid, wamid, *, token, typing_indicator=False):
        self.calls.append((pnid, wamid, token, typing_indicator))
        if self.fail:
            raise self.fail.pop(0)
        return True


def command(**kw) -> dict:
    base = {"command_id": "c1", "tenant_id": "acme", "phone_number_id": "301", "subject_id": "s-acme",
            "message_ref": REF(WAMID), "typing_indicator": True,
            "pii": {"key_id": "s-acme/k1", "nonce": b"", "ciphertext": json.dumps({"wamid": WAMID}).encode()}}
    base.update(kw)
    return base


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def typed(cmd: dict) -> ReadCommand:
    """The command as ``read_command`` gives it, with whatever junk a test put in a field (a
    ``pii`` with the three Sealed fields becomes a ``Sealed``; anything else stays as it is)."""
    pii = cmd["pii"]
    if isinstance(pii, dict) and set(pii) == {"key_id", "nonce", "ciphertext"}:
        pii = Sealed.from_avro(pii)
    return ReadCommand(**{**cmd, "pii": pii, "requested_at": EPOCH})


def run(cmd: dict, graph: _Graph | None = None) -> tuple[str | Dead, _Graph]:
    graph = graph or _Graph()
    try:
        out = asyncio.run(mark_read(typed(cmd), tenants=_Directory(), ring=_Ring(), kek=KEK, graph=graph, ref=REF,
                                    backoff_s=0))
    except Dead as d:
        return d, graph
    return out, graph


def test_the_tenants_own_read_is_sent_with_its_token():
    out, graph = run(command())
    assert out == "read" and graph.calls == [("301", WAMID, "EAAacme", True)]


@pytest.mark.parametrize("change,error_type", [
    ({"tenant_id": "nobody"}, "UnknownTenant"),
    ({"phone_number_id": "302"}, "ForeignNumber"),  # beta's number, in acme's name
    ({"subject_id": "s-beta", "pii": {"key_id": "s-beta/k", "nonce": b"", "ciphertext": b"{}"}}, "ForeignSubject"),
    ({"pii": {"key_id": "s-beta/k", "nonce": b"", "ciphertext": json.dumps({"wamid": WAMID}).encode()}}, "ForeignKey"),
    ({"message_ref": REF("wamid.another")}, "RefMismatch"),
    ({"pii": {"key_id": "s-acme/erased", "nonce": b"", "ciphertext": b""}}, "SubjectErased"),
    ({"tenant_id": "notoken", "phone_number_id": "303", "subject_id": "s-notoken",
      "pii": {"key_id": "s-notoken/k", "nonce": b"", "ciphertext": json.dumps({"wamid": WAMID}).encode()}}, "NoToken"),
    ({"subject_id": ""}, "MissingField"),
])
def test_a_read_outside_the_tenant_is_refused_before_any_call(change, error_type):
    out, graph = run(command(**change))
    assert isinstance(out, Dead) and out.error_type == error_type and out.reason
    assert graph.calls == []


def test_transient_errors_are_retried_permanent_ones_are_dead_letters():
    out, graph = run(command(), _Graph([meta_errors.Transient("down", code=2), meta_errors.UnknownOutcome("timeout")]))
    assert out == "read" and len(graph.calls) == 3
    out, graph = run(command(), _Graph([meta_errors.Permanent("invalid", code=100)]))
    assert isinstance(out, Dead) and "Graph API refused" in out.reason and len(graph.calls) == 1
    out, graph = run(command(), _Graph([meta_errors.Transient("down", code=2)] * 3))
    assert isinstance(out, Dead) and "gave up after 3" in out.reason


FIELDS = ["tenant_id", "phone_number_id", "subject_id", "message_ref", "pii", "typing_indicator"]
JUNK = (st.none() | st.text(max_size=12) | st.sampled_from(["acme", "beta", "301", "302", "s-acme", "s-beta", ""])
        | st.integers() | st.dictionaries(st.sampled_from(["key_id", "nonce", "ciphertext"]),
                                          st.text(max_size=8) | st.binary(max_size=8), max_size=3))


@settings(max_examples=300, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(FIELDS), JUNK, min_size=1, max_size=4))
def test_any_mangled_read_command_is_sent_only_when_every_check_holds(changes):
    cmd = command(**changes)
    out, graph = run(cmd)  # never another exception
    if isinstance(out, Dead):
        assert out.reason and graph.calls == []
    else:  # sent: only ever acme's message on acme's number with acme's token
        assert graph.calls == [("301", WAMID, "EAAacme", bool(cmd["typing_indicator"]))]


@pytest.mark.parametrize("missing", ["command_id", "tenant_id", "phone_number_id", "subject_id", "message_ref", "pii",
                                     "requested_at"])
def test_a_decoded_command_missing_a_required_field_is_a_missing_field_dead_letter(missing):
    rec = {**command(), "requested_at": EPOCH}
    del rec[missing]
    with pytest.raises(Dead) as err:
        read_command(rec)
    assert (err.value.reason, err.value.error_type) == (f"{missing} missing", "MissingField")
    assert read_command({**command(), "requested_at": EPOCH}) == typed(command())
