"""Fault injection and counters over real HTTP: added latency, 5xx bursts (nothing sent), timeouts
and connection resets (the message IS sent: an unknown outcome for the client), duplicate
detection by callback data and payload hash. Plus the `wapipe sandbox` process itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from connectors.meta.sandbox import SandboxControl, SandboxProcess
from connectors.meta.sandbox.fixture import default_seed

pytestmark = pytest.mark.integration


def tpl_body(to="491740000001", cb=None):
    b = {"messaging_product": "whatsapp", "to": to, "type": "template",
         "template": {"name": "hello_world", "language": {"code": "en_US"}}}
    if cb:
        b["biz_opaque_callback_data"] = cb
    return b


@pytest.fixture
def graph(meta_sandbox):
    with httpx.Client(base_url=meta_sandbox.url, headers={"Authorization": f"Bearer {meta_sandbox.token}"}) as c:
        yield c


def url(meta_sandbox):
    return f"/v23.0/{meta_sandbox.number_id}/messages"


def test_added_latency(meta_sandbox, graph):
    t = time.perf_counter()
    graph.post(url(meta_sandbox), json=tpl_body())
    fast = time.perf_counter() - t
    meta_sandbox.control.set_latency(200)
    t = time.perf_counter()
    assert graph.post(url(meta_sandbox), json=tpl_body("491740000002")).status_code == 200
    assert time.perf_counter() - t >= 0.2 > fast
    # latency is an asyncio sleep: concurrent calls overlap instead of queueing
    async def many():
        async with httpx.AsyncClient(base_url=meta_sandbox.url,
                                     headers={"Authorization": f"Bearer {meta_sandbox.token}"}) as c:
            import asyncio
            t0 = time.perf_counter()
            rs = await asyncio.gather(*[c.post(url(meta_sandbox), json=tpl_body(str(491741000000 + i)))
                                        for i in range(20)])
            return time.perf_counter() - t0, [r.status_code for r in rs]
    import asyncio
    took, codes = asyncio.run(many())
    assert codes == [200] * 20 and took < 1.5


def test_error_burst_sends_nothing(meta_sandbox, graph):
    meta_sandbox.control.set_faults(error_count=2, error_code=131000)
    r1 = graph.post(url(meta_sandbox), json=tpl_body(cb="k"))
    r2 = graph.post(url(meta_sandbox), json=tpl_body(cb="k"))
    r3 = graph.post(url(meta_sandbox), json=tpl_body(cb="k"))
    assert (r1.status_code, r2.status_code, r3.status_code) == (500, 500, 200)
    assert r1.json()["error"]["code"] == 131000 and r1.json()["error"]["fbtrace_id"]
    assert len(meta_sandbox.control.messages()) == 1
    c = meta_sandbox.control.counters()
    assert c["faults"] == {"error": 2} and c["numbers"][meta_sandbox.number_id]["rejected"] == {"131000": 2}
    assert c["duplicates_by_callback"] == {}
    meta_sandbox.control.set_faults(error_count=1, error_code=2)
    r = graph.post(url(meta_sandbox), json=tpl_body("491740000009"))
    assert r.status_code == 503 and r.json()["error"]["code"] == 2


def test_any_catalogued_graph_error_can_be_injected_and_an_unknown_one_is_refused(meta_sandbox, graph):
    from connectors.meta import errors

    meta_sandbox.control.set_faults(error_count=1, error_code=131048)
    r = graph.post(url(meta_sandbox), json=tpl_body(cb="spam"))
    assert r.status_code == 400 and r.json()["error"]["code"] == 131048
    assert r.json()["error"]["message"].startswith("(#131048) Spam rate limit hit")
    assert type(errors.from_response(r)) is errors.SpamLimited  # what the worker pauses the number on
    assert meta_sandbox.control.messages() == []
    # over the control API as any client sends it (not through the Faults model): a clear 422
    bad = httpx.put(f"{meta_sandbox.url}/_sandbox/faults", json={"error_count": 1, "error_code": 999999})
    assert bad.status_code == 422 and "999999" in bad.text
    assert graph.post(url(meta_sandbox), json=tpl_body(cb="after")).status_code == 200


def test_error_faults_can_target_one_number(meta_sandbox, graph):
    a, b = meta_sandbox.number_ids
    meta_sandbox.control.set_faults(error_p=1.0, error_code=1, phone_number_id=b)
    assert graph.post(f"/v23.0/{a}/messages", json=tpl_body()).status_code == 200
    r = graph.post(f"/v23.0/{b}/messages", json=tpl_body())
    assert r.status_code == 500 and r.json()["error"]["code"] == 1
    meta_sandbox.control.clear_faults()
    assert graph.post(f"/v23.0/{b}/messages", json=tpl_body("491740000003")).status_code == 200


def test_timeout_is_an_unknown_outcome_but_the_message_was_sent(meta_sandbox):
    meta_sandbox.control.set_faults(timeout_count=1, timeout_hold_s=1.0)
    with httpx.Client(base_url=meta_sandbox.url, headers={"Authorization": f"Bearer {meta_sandbox.token}"},
                      timeout=0.3) as g:
        with pytest.raises(httpx.ReadTimeout):
            g.post(url(meta_sandbox), json=tpl_body(cb="timed-out"))
        (m,) = meta_sandbox.control.messages()
        assert m["idempotency_key"] == "timed-out"
        # a blind retry sends twice, and the counters show it
        assert g.post(url(meta_sandbox), json=tpl_body(cb="timed-out")).status_code == 200
    c = meta_sandbox.control.counters()
    assert c["duplicates_by_callback"] == {"timed-out": 2} and len(c["duplicates_by_payload"]) == 1
    assert c["faults"] == {"timeout": 1}


def test_connection_reset_after_the_request_was_read(meta_sandbox, graph):
    meta_sandbox.control.set_faults(reset_count=1)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        graph.post(url(meta_sandbox), json=tpl_body(cb="reset"))
    assert [m["idempotency_key"] for m in meta_sandbox.control.messages()] == ["reset"]
    assert graph.post(url(meta_sandbox), json=tpl_body("491740000004")).status_code == 200  # next call is fine


def test_counters_and_message_list(meta_sandbox, graph):
    for i in range(3):
        graph.post(url(meta_sandbox), json=tpl_body(str(491750000000 + i), cb=f"key-{i}"))
    graph.post(url(meta_sandbox), json=tpl_body("491750000000", cb="key-0"))  # the same payload again
    graph.post(url(meta_sandbox), json={"messaging_product": "whatsapp"})  # rejected
    c = meta_sandbox.control.counters()
    n = c["numbers"][meta_sandbox.number_id]
    assert (n["requests"], n["accepted"], n["rejected"]) == (5, 4, {"100": 1})
    assert c["duplicates_by_callback"] == {"key-0": 2} and c["unique_callbacks"] == 3
    assert list(c["duplicates_by_payload"].values()) == [2] and c["unique_payloads"] == 3
    msgs = meta_sandbox.control.messages(phone_number_id=meta_sandbox.number_id)
    assert [m["idempotency_key"] for m in msgs] == ["key-0", "key-1", "key-2", "key-0"]
    assert len({m["wamid"] for m in msgs}) == 4
    assert meta_sandbox.control.messages(phone_number_id=meta_sandbox.number_ids[1]) == []
    series = meta_sandbox.control.counters(series=True)["numbers"][meta_sandbox.number_id]
    assert sum(series["accepted_per_second"].values()) == 4
    assert series["first_accepted_at"] <= series["last_accepted_at"] <= time.time()
    meta_sandbox.control.reset_counters()
    assert meta_sandbox.control.counters()["requests"] == 0


def test_wapipe_sandbox_process_ready_seed_and_sigterm(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(default_seed().model_dump_json())
    proc = subprocess.Popen([sys.executable, "-m", "wapipe.app.cli", "sandbox", "--port", "0", "--seed", str(seed),
                             "--latency-ms", "5"], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY http://127.0.0.1:")
        base = line.split()[1]
        control = SandboxControl(base)
        assert control.config()["latency"] == {"kind": "fixed", "a": 5.0, "b": 0.0}
        r = httpx.post(f"{base}/v23.0/3000000001/messages", json=tpl_body(),
                       headers={"Authorization": "Bearer EAAsandboxTOKEN"})
        assert r.status_code == 200
        assert control.counters()["accepted"] == 1
        control.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_invalid_seed_is_a_clear_cli_error(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"numbers": [{"id": "1"}]}))
    r = subprocess.run([sys.executable, "-m", "wapipe.app.cli", "sandbox", "--seed", str(seed)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "invalid seed" in r.stderr and "waba_id" in r.stderr


def test_sandbox_process_helper(tmp_path):
    with SandboxProcess(default_seed(), workdir=tmp_path) as p:
        assert SandboxControl(p.url).state()["numbers"][0]["id"] == "3000000001"
    assert p.proc.returncode == 0


def test_injected_errors_count_as_requests_and_held_for_quality(meta_sandbox, graph):
    meta_sandbox.control.set_faults(error_count=1)
    graph.post(url(meta_sandbox), json=tpl_body())
    n = meta_sandbox.control.counters()["numbers"][meta_sandbox.number_id]
    assert (n["requests"], n["accepted"], n["rejected"]) == (1, 0, {"131000": 1})
    meta_sandbox.control.configure(habits={"held_for_quality": 1.0})
    promo = {**tpl_body("491740000005"), "template": {"name": "promo", "language": {"code": "en_US"}}}
    assert graph.post(url(meta_sandbox), json=promo).json()["messages"][0]["message_status"] == "held_for_quality_assessment"
    # utility templates are never held
    assert graph.post(url(meta_sandbox), json=tpl_body("491740000006")).json()["messages"][0]["message_status"] == "accepted"
