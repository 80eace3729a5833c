"""The sink rides out its broker going away: a commit that fails (coordinator gone, broker away)
never stops it; the offsets are committed once the broker is back, and nothing is lost or
doubled in ClickHouse."""

from __future__ import annotations

import pytest

from sinks.retention import RetentionDays
from sinks.worker import SinkWorker
from tests.integration.test_sink_worker import _run, _status, _Topic, _wait
from tests.harness import dedicated_broker, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_commit_the_broker_refuses_does_not_stop_the_sink(tmp_path, clickhouse, unique):
    with dedicated_broker(tmp_path / "broker") as provider:
        settings = make_settings(tmp_path / "state", kafka_bootstrap_servers=provider.bootstrap)
        topic = _Topic(provider.bootstrap, unique)
        # A long batch window: the records are read, then the broker goes, then the batch is written.
        # A short session: the group notices the member's loss (and its return) within seconds.
        s = settings.model_copy(update={"sink_batch_ms": 4000, "sink_retry_max_s": 0.5})
        w = SinkWorker(s, topic.bootstrap, clickhouse, retention=RetentionDays(s), group=f"sink-{unique}",
                       converters=topic.converters(),
                       consumer_overrides={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
        t, stop, errors = _run(w)
        try:
            topic.produce([_status(i, "sent") for i in range(300)])
            assert _wait(lambda: w.stats.consumed == 300, 30)
            provider._jvm.stop()
            # the batch is inserted while the broker is away; its commit fails
            assert _wait(lambda: w.stats.commit_failures >= 1, 90), w.stats
            assert t.is_alive() and not errors, errors
            rows = clickhouse.query("SELECT count(), uniqExact(event_id) FROM status_events").result_rows
            assert rows == [(300, 300)]
            provider._jvm.start()
            topic.produce([_status(i, "delivered", at=1) for i in range(300, 310)])
            assert _wait(lambda: topic.committed(f"sink-{unique}") == 310, 90), w.stats
            assert t.is_alive() and not errors, errors
        finally:
            stop.set()
            t.join(30)
        assert not errors, errors
        assert clickhouse.query("SELECT count(), uniqExact(event_id) FROM status_events").result_rows == [(310, 310)]
