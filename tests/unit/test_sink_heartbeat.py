"""An empty flush is the sink loop's heartbeat: a sink with nothing to load is alive (its probe's
/healthz reads ``last_flush_at``; it said "no batch flushed" 30 s after the last record)."""

from __future__ import annotations

from sinks.retention import RetentionDays
from sinks.worker import SinkWorker
from tests.harness import make_settings


def test_an_empty_flush_counts_as_a_flush(tmp_path):
    s = make_settings(tmp_path / "state", sink_pipeline=True)
    w = SinkWorker(s, "127.0.0.1:9", client=None, retention=RetentionDays(s), group="heartbeat-test")
    try:
        assert w.stats.last_flush_at == 0.0
        assert w.flush() is True
        assert w.stats.last_flush_at > 0.0
    finally:
        w.close()
