"""The worker's views on /metrics (processors/send/metrics.py ``FollowerMetrics``): what each follower
applied, skipped, and the next offset it reads per partition."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest

from processors.send.metrics import FollowerMetrics


@dataclass
class Follower:
    topic: str
    applied: int = 0
    unreadable: int = 0
    positions: dict = field(default_factory=dict)


def test_each_follower_shows_what_it_applied_skipped_and_where_it_reads():
    inbound = Follower("wa.inbound.messages", applied=7, unreadable=1, positions={0: 5, 2: 4})
    control = Follower("wa.campaign.control", applied=2, positions={0: 2})
    views: tuple = ()
    registry = CollectorRegistry()
    registry.register(FollowerMetrics(lambda: views))
    assert b"wapipe_follower_records_total{" not in generate_latest(registry)  # not started: no samples
    views = (inbound, control)
    text = generate_latest(registry).decode()
    lines = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
             if line and not line.startswith("#")}
    assert lines['wapipe_follower_records_total{topic="wa.inbound.messages"}'] == 7
    assert lines['wapipe_follower_records_total{topic="wa.campaign.control"}'] == 2
    assert lines['wapipe_follower_unreadable_total{topic="wa.inbound.messages"}'] == 1
    assert lines['wapipe_follower_position{partition="0",topic="wa.inbound.messages"}'] == 5
    assert lines['wapipe_follower_position{partition="2",topic="wa.inbound.messages"}'] == 4
    assert lines['wapipe_follower_position{partition="0",topic="wa.campaign.control"}'] == 2
    inbound.positions[2] = 9  # read on: the next scrape says so
    assert 'wapipe_follower_position{partition="2",topic="wa.inbound.messages"} 9.0' in generate_latest(registry).decode()
