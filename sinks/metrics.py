"""The sink's figures for Prometheus, read from its counters when scraped (nothing is measured
twice on the loading path):

``wapipe_sink_rows_total{table}``            rows written to ClickHouse (rate: rows/s)
``wapipe_sink_insert_seconds_{sum,count}``   batch writes to ClickHouse and their time
``wapipe_sink_dead_letters_total``           records the sink could not load (dead-lettered)
``wapipe_sink_insert_failures_total``        writes ClickHouse refused or did not answer (retried)
``wapipe_sink_commit_failures_total``        offset commits the broker did not take (deferred)
``wapipe_sink_last_flush_age_seconds``       since the last batch was flushed
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily


@dataclass(eq=False)
class SinkMetrics:
    stats: Any  # sinks.worker.SinkStats

    def describe(self) -> Iterable:
        return self._families()

    @staticmethod
    def _families() -> list:
        return [
            CounterMetricFamily("wapipe_sink_rows", "Rows written to ClickHouse", labels=["table"]),
            SummaryMetricFamily("wapipe_sink_insert_seconds", "Batch writes to ClickHouse"),
            CounterMetricFamily("wapipe_sink_dead_letters", "Records the sink could not load"),
            CounterMetricFamily("wapipe_sink_insert_failures", "Writes ClickHouse refused or did not answer"),
            CounterMetricFamily("wapipe_sink_commit_failures", "Offset commits the broker did not take"),
            GaugeMetricFamily("wapipe_sink_last_flush_age_seconds", "Seconds since the last batch was flushed"),
        ]

    def collect(self) -> Iterable:
        rows, insert, dead, failures, commits, age = fams = self._families()
        st = self.stats
        for table, n in dict(st.rows_by_table).items():
            rows.add_metric([table], n)
        insert.add_metric([], count_value=st.inserts, sum_value=st.insert_s)
        dead.add_metric([], st.dead)
        failures.add_metric([], st.insert_failures)
        commits.add_metric([], st.commit_failures)
        if st.last_flush_at:
            age.add_metric([], max(0.0, time.time() - st.last_flush_at))
        return fams
