"""`wapipe stack up|status|down`, and the fixture's promise: no broker outlives the tests."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wapipe.app.stack.jvm import pid_alive
from wapipe.topics import TOPICS

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def java_pids_with(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if proc.name.isdigit() and "kafka.Kafka" in args and marker in args and pid_alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def run_cli(env, *args, check=True):
    p = subprocess.run([sys.executable, "-m", "wapipe", *args], env=env, capture_output=True, text=True, timeout=180)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def test_stack_up_status_down(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(WAPIPE_STATE_DIR=str(tmp_path / "state"), WAPIPE_JARS_DIR=str(REPO / ".wapipe" / "jars"),
               CLICKHOUSE_URL=f"chdb://{tmp_path / 'ch'}")
    try:
        up = run_cli(env, "stack", "up")
        assert "kafka up: 127.0.0.1:" in up.stdout and "migrations applied" in up.stdout
        assert f"topics: {len(TOPICS)} created" in up.stdout
        status = run_cli(env, "stack", "status")
        assert "kafka: up" in status.stdout
        assert java_pids_with(str(tmp_path))
        again = run_cli(env, "stack", "up")  # idempotent: finds the running broker
        assert "already up" in again.stdout
    finally:
        down = run_cli(env, "stack", "down", check=False)
    assert "stopped" in down.stdout
    assert java_pids_with(str(tmp_path)) == []
    assert run_cli(env, "stack", "status", check=False).returncode == 1


def test_stack_up_after_the_broker_died_keeps_its_address_and_data(tmp_path):
    """Services started against the local broker keep its address: `stack up` after the broker
    died brings it back on the same port with the same data, and a sink holding the embedded
    ClickHouse folder does not make it fail."""
    import signal
    import time

    from confluent_kafka import Consumer, Producer

    from wapipe.app.stack.local import StackState

    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(WAPIPE_STATE_DIR=str(tmp_path / "state"), WAPIPE_JARS_DIR=str(REPO / ".wapipe" / "jars"),
               CLICKHOUSE_URL=f"chdb://{tmp_path / 'ch'}")
    holder = None
    try:
        run_cli(env, "stack", "up")
        first = StackState.load(tmp_path / "state" / "stack.json")
        topic = TOPICS[0].name
        p = Producer({"bootstrap.servers": first.bootstrap, "acks": "all"})
        p.produce(topic, key=b"k", value=b"kept across the restart")
        assert p.flush(30) == 0
        os.kill(first.pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while pid_alive(first.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        # a running sink holds the embedded engine's folder
        holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from wapipe.clickhouse import clickhouse_client
            client = clickhouse_client({env["CLICKHOUSE_URL"]!r})
            client.query("SELECT 1")
            print("holding", flush=True)
            time.sleep(300)
        """)], stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert holder.stdout.readline().strip() == "holding"
        again = run_cli(env, "stack", "up")
        assert f"restarted on its old address): {first.bootstrap}" in again.stdout, again.stdout
        assert "held by a running sink" in " ".join(again.stdout.split())
        second = StackState.load(tmp_path / "state" / "stack.json")
        assert second.bootstrap == first.bootstrap and second.pid != first.pid
        c = Consumer({"bootstrap.servers": second.bootstrap, "group.id": "stack-test", "auto.offset.reset": "earliest"})
        c.subscribe([topic])
        got = None
        deadline = time.monotonic() + 60
        while got is None and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is not None and m.error() is None:
                got = m.value()
        c.close()
        assert got == b"kept across the restart"
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        run_cli(env, "stack", "down", check=False)
    assert java_pids_with(str(tmp_path)) == []


def test_broker_is_stopped_when_a_test_fails(tmp_path):
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.harness"]\n')
    (tmp_path / "test_fails.py").write_text(textwrap.dedent("""
        import os
        def test_uses_broker_then_fails(kafka_provider):
            open(os.environ["PID_FILE"], "w").write(str(kafka_provider.pid))
            assert False, "deliberate failure"
    """))
    pid_file = tmp_path / "pid"
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(PID_FILE=str(pid_file), PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert "1 failed" in p.stdout, p.stdout + p.stderr
    pid = int(pid_file.read_text())
    assert not pid_alive(pid), f"broker pid {pid} outlived the failed test run"


def test_broker_dies_with_a_killed_test_process(tmp_path):
    """Even a SIGKILLed pytest leaves no broker behind (PR_SET_PDEATHSIG)."""
    script = tmp_path / "hold.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from wapipe import log; log.configure()
        from tests.harness import make_settings
        from wapipe.app.stack.local import KafkaProvider
        p = KafkaProvider(make_settings(Path({str(tmp_path)!r})), data_dir=Path({str(tmp_path / 'kd')!r}), prefer="jvm")
        p.start()
        print(p.pid, flush=True)
        time.sleep(600)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())
        assert pid_alive(pid)
    finally:
        proc.kill()
        proc.wait()
    import time

    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_alive(pid)
