"""Where a consumer group starts reading: "latest" done once for the whole group, never per partition.

Kafka's ``auto.offset.reset`` is applied per partition, each time a member is assigned a partition
the group has no committed offset for — not only when the group is new. With ``latest``, a
partition whose first owner dies before its first commit is read by its next owner from its end:
every record the dead owner had read but not yet committed is skipped, for good. Seen in the
two-worker SIGKILL test (tests/integration/test_send_crash.py): the survivor took over
``wa.send.accepted`` p3, which the killed worker had held for ~10 s without a commit, started at its
end, and 34 campaign commands were never sent and never answered.

So a worker never asks Kafka for ``latest``. ``start_at_end`` sets the group's committed offset of
every partition of its topics that has none to that partition's end offset, before the worker
joins, and the worker's consumer then resets to ``earliest`` only. Kafka refuses to change the
offsets of a group that has members (``UNKNOWN_MEMBER_ID`` for each partition), so a worker joining
a running group changes nothing: its partitions were committed when it began, and one added while
it runs is read from its beginning. Two workers starting a new group at the same moment may both
commit; the later one's ends are then where the group starts (still "latest", no record read twice
or skipped once a member has joined).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from wapipe.log import get_logger

log = get_logger(__name__)

# What the broker answers, per partition, to an offset change for a group that has members.
_HAS_MEMBERS = frozenset({KafkaError.UNKNOWN_MEMBER_ID, KafkaError.NON_EMPTY_GROUP})
# What a group coordinator answers while it loads its state or moves (a broker just started or
# restarted): asked again shortly, it answers. Seen in a full suite: COORDINATOR_LOAD_IN_PROGRESS
# stopped a worker's start.
_COORDINATOR_BUSY = frozenset({KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
                               KafkaError.NOT_COORDINATOR})


@dataclass
class GroupStart:
    """What ``start_at_end`` did: the partitions it committed at their end (topic, partition → offset),
    or why it committed nothing."""

    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    skipped: str | None = None


def start_at_end(admin: AdminClient, group_id: str, topics: Iterable[str], timeout: float = 10.0) -> GroupStart:
    """Commit the end offset of each partition of ``topics`` that ``group_id`` has not committed.

    Nothing is changed when every partition has a commit, or when the group has members (Kafka
    refuses: they started it). A busy coordinator (loading, moving) is asked again for up to
    ``timeout``; other errors are raised: a worker that cannot tell where its group starts must
    not start."""
    topics = sorted(set(topics))
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _start_at_end(admin, group_id, topics, timeout)
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args and isinstance(exc.args[0], KafkaError) else None
            if code not in _COORDINATOR_BUSY or time.monotonic() > deadline:
                raise
            log.info("group_start.coordinator_busy", group=group_id, error=str(exc.args[0]))
            time.sleep(0.25)


def _start_at_end(admin: AdminClient, group_id: str, topics: list[str], timeout: float) -> GroupStart:
    tps = _partitions(admin, topics, timeout)
    have = committed_offsets(admin, group_id, [(tp.topic, tp.partition) for tp in tps], timeout)
    missing = [tp for tp in tps if have.get((tp.topic, tp.partition)) is None]
    if not missing:
        return GroupStart(skipped="every partition has a committed offset")
    offsets = end_offsets(admin, [(tp.topic, tp.partition) for tp in missing], timeout)
    request = ConsumerGroupTopicPartitions(group_id, [TopicPartition(t, p, o) for (t, p), o in offsets.items()])
    try:
        done = admin.alter_consumer_group_offsets([request], request_timeout=timeout)[group_id].result()
        errors = {tp.error.code() for tp in done.topic_partitions if tp.error is not None}
    except KafkaException as exc:  # the whole request refused
        errors = {exc.args[0].code()} if exc.args and isinstance(exc.args[0], KafkaError) else set()
        if not errors & _HAS_MEMBERS:
            raise
    if errors & _HAS_MEMBERS:
        log.info("group_start.running", group=group_id, uncommitted=len(missing))
        return GroupStart(skipped="the group has members")
    if errors:
        raise KafkaException(KafkaError(next(iter(errors)), f"committing {group_id} at the end failed"))
    log.info("group_start.at_end", group=group_id, partitions=len(offsets))
    return GroupStart(committed=offsets)


def _partitions(admin: AdminClient, topics: list[str], timeout: float) -> list[TopicPartition]:
    meta = admin.list_topics(timeout=timeout)
    out = []
    for name in topics:
        topic = meta.topics.get(name)
        if topic is None or topic.error is not None:
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"topic {name} not found"))
        out += [TopicPartition(name, p) for p in sorted(topic.partitions)]
    return out


def end_offsets(admin: AdminClient, partitions: Iterable[tuple[str, int]],
                timeout: float = 10.0) -> dict[tuple[str, int], int]:
    """Each (topic, partition)'s end offset (the next offset to be written). Raises when the broker
    does not answer."""
    ends = admin.list_offsets({TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions},
                              request_timeout=timeout)
    return {(tp.topic, tp.partition): fut.result().offset for tp, fut in ends.items()}


def committed_offsets(admin: AdminClient, group_id: str, partitions: Iterable[tuple[str, int]],
                      timeout: float = 10.0) -> dict[tuple[str, int], int | None]:
    """The group's committed offset of each (topic, partition), None where it has none (one
    OffsetFetch through the admin API; the group is not joined). Raises when the broker does not
    answer."""
    request = ConsumerGroupTopicPartitions(group_id, [TopicPartition(t, p) for t, p in partitions])
    got = admin.list_consumer_group_offsets([request], request_timeout=timeout)[group_id].result()
    return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in got.topic_partitions}
