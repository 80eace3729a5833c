"""The poll order the send worker installs on Faust's aiokafka consumer (wapipe/edge/fetch_rotation.py).
The end-to-end effect (a transactional command sent while a campaign backlog is read) is
test_send_pipeline's test_transactional_commands_do_not_wait_behind_a_campaign_backlog."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from types import SimpleNamespace

from aiokafka.structs import TopicPartition as TP

from wapipe.edge.fetch_rotation import put_first, rotated, serve_partitions_in_turn

BULK, TX, RESULTS = TP("wa.send.requested.bulk", 0), TP("wa.send.requested", 0), TP("wa.send.results", 3)


def test_a_partition_drained_with_records_left_goes_behind_the_others():
    fetcher = SimpleNamespace(_records=OrderedDict([(BULK, "4 MiB"), (RESULTS, "..."), (TX, "1 record")]))
    rotated(fetcher, {BULK: [1] * 100})
    assert list(fetcher._records) == [RESULTS, TX, BULK]
    # a partition drained empty has already left the buffer (aiokafka deletes it): nothing to move
    del fetcher._records[RESULTS]
    rotated(fetcher, {RESULTS: [1] * 3})
    assert list(fetcher._records) == [TX, BULK]


def test_priority_topics_are_served_first_in_their_own_order():
    tx2 = TP("wa.send.accepted.transactional", 1)
    fetcher = SimpleNamespace(_records=OrderedDict([(BULK, 0), (TX, 0), (RESULTS, 0), (tx2, 0)]))
    put_first(fetcher, frozenset({TX.topic, tx2.topic}))
    assert set(list(fetcher._records)[:2]) == {TX, tx2} and list(fetcher._records)[2:] == [BULK, RESULTS]


def test_installed_once_on_the_consumer_thread_and_each_poll_rotates():
    calls = []
    fetcher = SimpleNamespace(_records=OrderedDict([(BULK, 0), (TX, 0)]), _fetch_max_wait_ms=1500,
                              _prefetch_backoff=0.1)
    consumer = SimpleNamespace(_fetcher=fetcher)

    async def fetch_records(consumer, active, timeout=None, max_records=None):
        calls.append(list(consumer._fetcher._records))
        return {tp: [1] for tp in list(consumer._fetcher._records)[:1]}

    thread = SimpleNamespace(_fetch_records=fetch_records, _consumer=consumer)
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=thread))
    assert serve_partitions_in_turn(app, first=frozenset({TX.topic}))
    assert serve_partitions_in_turn(app, first=frozenset({TX.topic}))  # idempotent: not wrapped twice
    assert (fetcher._fetch_max_wait_ms, fetcher._prefetch_backoff) == (50, 0.05)
    drained = asyncio.run(thread._fetch_records(consumer, None, timeout=1.0, max_records=100))
    assert calls == [[TX, BULK]] and drained == {TX: [1]} and list(fetcher._records) == [BULK, TX]
    assert len(calls) == 1


def test_an_unknown_driver_is_left_alone():
    app = SimpleNamespace(consumer=SimpleNamespace())
    assert serve_partitions_in_turn(app) is False


class _Consumer:
    """The slice of Faust's consumer PollPauses uses; the sets behave as Faust's do."""

    def __init__(self, assigned):
        self.assigned, self.active, self.polls = set(assigned), set(assigned), []

    def assignment(self):
        return set(self.assigned)

    def pause_partitions(self, tps):
        self.active.difference_update(tps)

    def resume_partitions(self, tps):
        self.active.update(tps)

    async def _wait_next_records(self, timeout):
        self.polls.append(set(self.active))
        return {}, self.active


def test_a_pause_takes_effect_at_the_next_poll_not_during_the_current_one():
    from wapipe.edge.fetch_rotation import PollPauses

    accepted = TP("wa.send.accepted", 2)
    c = _Consumer({accepted, TX})
    pauses = PollPauses(c)
    asyncio.run(c._wait_next_records(1.0))
    pauses.pause(accepted)  # an agent pauses while the poll's records are handed out
    assert accepted in c.active, "the set the current poll filters with must not change under it"
    asyncio.run(c._wait_next_records(1.0))
    assert c.polls[-1] == {TX}
    pauses.resume(accepted)  # a resume is immediate: adding to the set drops nothing
    assert accepted in c.active


def test_a_pause_pending_for_a_revoked_partition_is_forgotten():
    from wapipe.edge.fetch_rotation import PollPauses

    accepted = TP("wa.send.accepted", 2)
    c = _Consumer({accepted, TX})
    pauses = PollPauses(c)
    pauses.pause(accepted)
    pauses.forget({accepted})
    asyncio.run(c._wait_next_records(1.0))
    assert c.polls[-1] == {accepted, TX}
    pauses.pause(accepted)
    c.assigned.discard(accepted)  # moved away before the poll: not paused here (Faust forgets it anyway)
    asyncio.run(c._wait_next_records(1.0))
    assert pauses._pending == set()
    # a resume cancels a pause that has not been applied yet
    c.assigned.add(accepted)
    pauses.pause(accepted)
    pauses.resume(accepted)
    asyncio.run(c._wait_next_records(1.0))
    assert accepted in c.polls[-1]
