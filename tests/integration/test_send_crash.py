"""A worker killed with SIGKILL in the middle of a campaign, then restarted: every command is
dispatched at most once (sandbox counters), and none is lost — each has a final result, and a
command whose Graph call the kill interrupted is reported UNKNOWN, not resent. Stopped with
SIGTERM instead, it lets its calls under way finish: nothing is UNKNOWN."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from processors.send.intake import INTERRUPTED_REASON
from producers.erp import template
from tests.integration.test_send_pipeline import SendWorld, send_world  # noqa: F401 - the fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 400


@pytest.mark.send_world(rates=[(100, 100)])
def test_sigkill_mid_campaign_then_restart_dispatches_each_command_at_most_once(send_world: SendWorld):
    w = send_world
    w.start_worker("worker-1")
    keys = w.campaign_under_way("crash", N, accepted=N // 3)
    w.kill_worker()  # SIGKILL, mid-campaign: Graph calls in flight, offsets not committed
    killed_at = dt.datetime.now(dt.timezone.utc)
    at_kill = w.accepted()
    assert at_kill < N

    # Restart after the dead member's session (10 s) expired, as a supervisor restarting a crashed
    # process typically does: joining while the dead member is still in the group makes Faust
    # rebalance twice, and its table recovery was seen to stall in that case (see the report).
    time.sleep(11)
    # What the dead worker left on the ledger (its last writes have long reached the broker): the
    # commands whose last entry says a call may be under way.
    interrupted = _interrupted(w, keys, _dispatching(w), killed_at)
    w.start_worker("worker-2", warm=False)  # same group: it resumes from the committed offsets
    final, sent, outcomes = w.settled_at_most_once(keys, timeout=90)
    # UNKNOWN exactly for the calls the kill interrupted (how many grows with the machine's load:
    # 1-2 alone, 62 beside `make demo`); each sent at most once
    unknown = _unknown(final)
    assert unknown == interrupted, (sorted(unknown - interrupted), sorted(interrupted - unknown))
    never_sent = [k for k in keys if sent[f"{w.tenant_id}/{k}"] == 0]
    assert all(final[k]["outcome"] == "UNKNOWN" for k in never_sent)
    print(f"\nkilled after {at_kill} accepted; outcomes {dict(outcomes)}; "
          f"unknown but not sent: {len(never_sent)}")


@pytest.mark.send_world(rates=[(100, 100)])
def test_sigterm_mid_campaign_lets_the_calls_under_way_finish(send_world: SendWorld):
    """A worker stopped with SIGTERM (a deploy, a scale-down) finishes the Graph calls under way and
    writes their outcomes before it exits: after a restart no command is UNKNOWN, each sent once."""
    w = send_world
    w.start_worker("worker-1")
    keys = w.campaign_under_way("term", N, accepted=N // 3)
    w.supervisor.stop(w.worker)  # SIGTERM, mid-campaign: ~5 calls in flight at 100 msg/s
    at_stop = w.accepted()
    assert at_stop < N
    w.start_worker("worker-2", warm=False)
    final, sent, outcomes = w.settled_at_most_once(keys, timeout=90)
    assert outcomes == {"ACCEPTED": N}, outcomes
    assert all(sent[f"{w.tenant_id}/{k}"] == 1 for k in keys)
    print(f"\nstopped after {at_stop} accepted; outcomes {dict(outcomes)}")


def _dispatching(w: SendWorld, *, partitions: set[int] | None = None,
                 before: dt.datetime | None = None) -> dict[str, dt.datetime]:
    """Ledger keys (``tenant_id/idempotency_key``) whose last entry on wa.send.ledger is
    DISPATCHING, with that entry's ``at``: of ``partitions`` only, and counting only the records
    written ``before`` (their Kafka timestamps), when given."""
    from processors.send import records as R
    from tests.integration.kafka_helpers import read_all
    from wapipe.avro import AvroSerde
    from wapipe.topics import SEND_LEDGER

    serde, last = AvroSerde(), {}
    cutoff = None if before is None else before.timestamp() * 1000
    for m in read_all(w.bootstrap, SEND_LEDGER):
        if partitions is not None and m.partition() not in partitions:
            continue
        if cutoff is not None and m.timestamp()[1] > cutoff:
            continue
        key = m.key().decode()
        if not key.startswith(f"{w.tenant_id}/"):  # the session's broker holds every test's ledger
            continue
        if m.value() is None:
            last.pop(key, None)
        else:
            last[key] = serde.decode(m.value(), R.LEDGER)
    return {k: e["at"] for k, e in last.items() if e["state"] == "DISPATCHING"}


def _interrupted(w: SendWorld, keys: list[str], open_at_kill: dict[str, dt.datetime],
                 killed_at: dt.datetime) -> set[str]:
    """The campaign's keys the kill left DISPATCHING. Each entry was written at most a call's
    timeout (plus its wait for room, and a loaded machine's delays) before the kill: one older
    would be a call nobody ever finished."""
    timeout = float(w.env.get("WAPIPE_SEND_GRAPH_TIMEOUT_S", w.settings.send_graph_timeout_s))
    oldest = killed_at - dt.timedelta(seconds=timeout + 15)
    stale = {k: at.isoformat() for k, at in open_at_kill.items() if at < oldest}
    assert not stale, f"DISPATCHING entries older than any call can take: {stale}"
    return {k for k in keys if f"{w.tenant_id}/{k}" in open_at_kill}


def _unknown(final: dict[str, dict]) -> set[str]:
    """The keys UNKNOWN because a kill interrupted their call. An UNKNOWN for another reason (a call
    our timeout gave up on, on a loaded machine) is a call that was answered by no one, not one the
    ledger found DISPATCHING; it is allowed and printed."""
    unknown = {k: r["reason"] or "" for k, r in final.items() if r["outcome"] == "UNKNOWN"}
    other = {k: why for k, why in unknown.items() if why != INTERRUPTED_REASON}
    if other:
        print(f"\nUNKNOWN for another reason: {other}")
    return set(unknown) - set(other)


def test_a_result_lost_in_a_crash_after_the_ledger_write_is_answered_again(send_world: SendWorld):
    """A worker that dies after its DONE ledger entry was acknowledged but before its SendResult
    was (the two writes are concurrent, not atomic) leaves the command's offset uncommitted. Its
    replay finds DONE with the same command_id: the result is answered again from the ledger
    (outcome, wamid, Meta's codes, decided_at), and nothing is sent again."""
    from processors.send import records as R
    from wapipe.avro import AvroSerde
    from wapipe.messages.send import DONE, SendCommand
    from wapipe.edge.clients import producer as make_producer
    from wapipe.topics import SEND_LEDGER

    w = send_world
    w.start_worker("worker-1")  # its warm-up commands load the one number's ledger partition
    w.supervisor.stop(w.worker)  # its log complete
    (partition,) = {e["partition"] for e in _log_events(w, "worker-1", "ledger.loaded")}

    # What the dead worker left: the DONE entries are on the ledger, the results are not.
    ok = w.erp.command(template(w.recipient(1), "hello_world"), w.routing("lost-ok"))
    bad = w.erp.command(template(w.recipient(2), "hello_world"), w.routing("lost-failed"))
    serde, p = AvroSerde(), make_producer(w.bootstrap)
    decided = R.now_utc().replace(microsecond=0) - dt.timedelta(seconds=5)
    for cmd, kw in ((ok, dict(outcome="ACCEPTED", wamid="wamid.before-the-crash", message_status="accepted")),
                    (bad, dict(outcome="FAILED", error_code=131026, error_subcode=2494010))):
        entry = R.ledger_entry(SendCommand.from_avro(cmd), DONE, attempts=1, at=decided, **kw)
        p.produce(SEND_LEDGER, key=entry.key.encode(), partition=partition,
                  value=serde.encode(R.LEDGER, entry.to_avro(), topic=SEND_LEDGER))
    assert p.flush(10) == 0
    w.erp.publish([ok, bad])  # the commands, as the restarted worker reads them again

    w.start_worker("worker-2", warm=False)
    final = w.final(["lost-ok", "lost-failed"], timeout=60)
    assert {k: (r["outcome"], r["wamid"], r["error_code"], r["error_subcode"], r["decided_at"])
            for k, r in final.items()} == {
        "lost-ok": ("ACCEPTED", "wamid.before-the-crash", None, None, decided),
        "lost-failed": ("FAILED", None, 131026, 2494010, decided)}
    assert all(r["command_id"] in (ok["command_id"], bad["command_id"]) and "repeated" in r["reason"]
               for r in final.values())
    sent = w.sent_by_key()
    assert sent[f"{w.tenant_id}/lost-ok"] == 0 and sent[f"{w.tenant_id}/lost-failed"] == 0


@pytest.mark.send_world(rates=[(30, 30)] * 8)
def test_a_worker_killed_beside_another_its_partitions_move_and_nothing_is_sent_twice(send_world: SendWorld):
    """Two workers of one group share the partitions; one is killed (SIGKILL) mid-campaign. When
    its session times out the other is assigned its partitions: it loads their ledger, turns the
    dead worker's interrupted calls (DISPATCHING) into UNKNOWN, answers what it decided but did not
    commit from the ledger, and sends the rest — each command once at most."""
    w = send_world
    a = w.start_worker("worker-a")
    # joins the group (the partitions are split between the two), with a state folder of its own
    w.start_worker("worker-b", warm=False, WAPIPE_STATE_DIR=str(w.settings.state_dir.parent / "state-b"))
    keys = w.campaign_under_way("moved", N, accepted=N // 4)
    w.worker = a
    w.kill_worker()
    killed_at = dt.datetime.now(dt.timezone.utc)
    at_kill = w.accepted()

    final, sent, outcomes = w.settled_at_most_once(keys, timeout=120)
    unknown_not_sent = sum(1 for k in keys if final[k]["outcome"] == "UNKNOWN" and sent[f"{w.tenant_id}/{k}"] == 0)
    # worker-b did take over: it loaded a ledger partition it had not held before the kill.
    loaded_after = [e["partition"] for e in _log_events(w, "worker-b", "ledger.loaded")
                    if dt.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) > killed_at]
    assert loaded_after, "worker-b loaded no partition after worker-a was killed"
    # UNKNOWN exactly for the calls the kill interrupted: what worker-a had left DISPATCHING on the
    # partitions worker-b took over, as of the kill. How many grows with the machine's load (the
    # dead worker's sending rate x the time from a ledger acknowledgement to the response: 2-64
    # beside two busy loops at 8 x 50 msg/s, over 80 once in a run of 3 test processes), so it is
    # compared with the ledger, not with a count.
    # worker-a's partitions at the kill (its last assignment; the ledger is partitioned as the lanes
    # are): worker-b may have reloaded partitions of its own after the rebalance too
    held = {int(tp.rsplit(":", 1)[1]) for tp in _log_events(w, "worker-a", "partitions.assigned")[-1]["partitions"]}
    interrupted = _interrupted(w, keys, _dispatching(w, partitions=held, before=killed_at), killed_at)
    unknown = _unknown(final)
    assert unknown == interrupted, (sorted(unknown - interrupted), sorted(interrupted - unknown))
    print(f"\nkilled worker-a after {at_kill} accepted; worker-b then loaded partitions {loaded_after}; "
          f"outcomes {dict(outcomes)}; unknown but not sent: {unknown_not_sent}")


def _log_events(w: SendWorld, service: str, event: str) -> list[dict]:
    """The structured log lines ``event`` of one of the world's services."""
    out = []
    for line in (w.supervisor.log_dir / f"{service}.log").read_text().splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            out.append(json.loads(line))
    return out
