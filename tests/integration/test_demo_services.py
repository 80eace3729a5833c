"""The service supervisor against real subprocesses: READY, logs, stubborn children, strays."""

from __future__ import annotations

import sys
import textwrap
import time

import pytest

from wapipe.services import CommandMissing, ServiceError, ServiceSpec, Supervisor, command_exists
from wapipe.stack.jvm import pid_alive

pytestmark = pytest.mark.integration


def py(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", textwrap.dedent(code))


READY_THEN_SLEEP = """
    import sys, time
    print("starting up", flush=True)
    print("READY http://127.0.0.1:1234", flush=True)
    while True:
        time.sleep(0.1)
"""

# Ignores SIGTERM (like a wedged faust worker) and forks a grandchild that would outlive it.
STUBBORN = """
    import os, signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(0.1)
    print(f"CHILD {child}", flush=True)
    print("READY stubborn", flush=True)
    while True:
        time.sleep(0.1)
"""


def test_ready_log_and_reverse_stop(tmp_path):
    order = []
    with Supervisor(tmp_path / "logs") as sup:
        a = sup.start(ServiceSpec("a", ("a",), program=py(READY_THEN_SLEEP)))
        b = sup.start(ServiceSpec("b", ("b",), program=py(READY_THEN_SLEEP)))
        assert a.ready_value == "http://127.0.0.1:1234"
        assert a.alive() and b.alive()
        pids = [a.pid, b.pid]
        real_stop = sup.stop

        def recording_stop(svc):
            order.append(svc.spec.name)
            return real_stop(svc)

        sup.stop = recording_stop
    assert order == ["b", "a"]
    assert not any(pid_alive(p) for p in pids)
    text = (tmp_path / "logs" / "a.log").read_text()
    assert "starting up" in text and "READY http://127.0.0.1:1234" in text


def test_sigterm_ignored_gets_sigkill_and_no_strays(tmp_path):
    with Supervisor(tmp_path / "logs") as sup:
        svc = sup.start(ServiceSpec("stubborn", ("stubborn",), program=py(STUBBORN), stop_timeout=1.0))
        child = int(next(line for line in svc.tail().splitlines() if line.startswith("CHILD")).split()[1])
        assert pid_alive(child)
        t0 = time.monotonic()
        code = sup.stop(svc)
        assert time.monotonic() - t0 < 8
    assert code == -9
    deadline = time.monotonic() + 5
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child), "the service's own child outlived it"


def test_exit_before_ready_is_an_error_with_the_log_tail(tmp_path):
    with Supervisor(tmp_path / "logs") as sup:
        with pytest.raises(ServiceError, match="exited with code 3 before READY") as info:
            sup.start(ServiceSpec("broken", ("broken",), program=py("print('boom: bad config'); raise SystemExit(3)")))
        assert "boom: bad config" in str(info.value)


def test_ready_timeout(tmp_path):
    with Supervisor(tmp_path / "logs") as sup:
        with pytest.raises(ServiceError, match="did not print READY within 1s"):
            sup.start(ServiceSpec("mute", ("mute",), program=py("import time; time.sleep(60)"), ready_timeout=1.0))
        pid = sup.services[0].pid
    assert not pid_alive(pid)


def test_missing_command_is_reported_not_skipped(tmp_path):
    assert command_exists(("demo",))
    assert command_exists(("stack", "up"))
    assert not command_exists(("no-such-service",))
    assert not command_exists(("stack", "no-such-sub"))
    with Supervisor(tmp_path / "logs") as sup:
        with pytest.raises(CommandMissing, match="no-such-service"):
            sup.start(ServiceSpec("ghost", ("no-such-service",)))


def test_check_names_a_dead_service(tmp_path):
    with Supervisor(tmp_path / "logs") as sup:
        sup.start(ServiceSpec("short", ("short",), program=py("print('READY x', flush=True); import time; time.sleep(0.3)")))
        time.sleep(1.0)
        with pytest.raises(ServiceError, match="short exited with code 0"):
            sup.check()


def test_ready_after_a_log_prefix_or_terminal_codes(tmp_path):
    """faust redirects stdout into its logger and hides the cursor: READY must still be seen."""
    lines = ['print("\\x1b[?25l\\x08\\x1b[?25hREADY normalise", flush=True)',
             'print("[2026-11-25 09:53:38,216] [25757] [WARNING] READY worker ", flush=True)']
    with Supervisor(tmp_path / "logs") as sup:
        for i, line in enumerate(lines):
            svc = sup.start(ServiceSpec(f"s{i}", (f"s{i}",), ready_timeout=10,
                                        program=py(line + "\nimport time\ntime.sleep(60)")))
            assert svc.ready_value in ("normalise", "worker")
