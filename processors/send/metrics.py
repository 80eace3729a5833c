"""The send worker's figures for Prometheus, read from the dispatcher when scraped.

The send path only bumps plain counters (``stats.Stats``); this collector turns them, the
pacers and the number queues into metric families at scrape time, so measuring costs the hot path
nothing beyond a dict increment. Names (all per worker process):

``wapipe_send_outcomes_total{outcome}``          results written: ACCEPTED, FAILED, UNKNOWN, …
``wapipe_send_graph_calls_total``                 Graph send calls started
``wapipe_send_meta_errors_total{code}``           Meta's error answers by code
``wapipe_number_calls_total{number}``             calls started per phone number (rate: sent/s)
``wapipe_number_limit_mps{number}``               the number's throughput limit (msg/s)
``wapipe_number_window{number}``                  calls counted in the number's sliding 1 s window now
``wapipe_number_queue_depth{number}``             commands waiting for the number
``wapipe_number_throttled_total{number}``         throttles (130429, 131048) Meta answered for it
``wapipe_ledger_write_seconds_{sum,count}``       DISPATCHING ledger writes until acknowledged
``wapipe_follower_records_total{topic}``          records the worker's views applied (inbound messages,
                                                  campaign control, opt-outs, status events)
``wapipe_follower_unreadable_total{topic}``       records they skipped as unreadable
``wapipe_follower_position{topic,partition}``     the next offset each view reads: it has seen every
                                                  record before it
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily


@dataclass(eq=False)
class DispatchMetrics:
    dispatcher: Callable[[], Any]  # the worker's Dispatcher once started, else None

    def describe(self) -> Iterable:
        return self._families()

    def _families(self) -> list:
        return [
            CounterMetricFamily("wapipe_send_outcomes", "SendResults written, by outcome", labels=["outcome"]),
            CounterMetricFamily("wapipe_send_graph_calls", "Graph send calls started"),
            CounterMetricFamily("wapipe_send_meta_errors", "Meta's error answers, by code", labels=["code"]),
            CounterMetricFamily("wapipe_number_calls", "Graph send calls started per number", labels=["number"]),
            GaugeMetricFamily("wapipe_number_limit_mps", "The number's throughput limit", labels=["number"]),
            GaugeMetricFamily("wapipe_number_window", "Calls counted in the number's sliding 1 s window",
                              labels=["number"]),
            GaugeMetricFamily("wapipe_number_queue_depth", "Commands waiting for the number", labels=["number"]),
            CounterMetricFamily("wapipe_number_throttled", "Throttles Meta answered for the number",
                                labels=["number"]),
            SummaryMetricFamily("wapipe_ledger_write_seconds", "DISPATCHING ledger writes until acknowledged"),
            GaugeMetricFamily("wapipe_number_window_credit_seconds",
                              "What the learned window rule takes off each answered call's 1 s tail", labels=["number"]),
        ]

    def collect(self) -> Iterable:
        fams = self._families()
        d = self.dispatcher()
        if d is None:
            return fams
        outcomes, calls, errors, by_number, limits, window, depth, throttled, ledger, credit = fams
        st = d.stats
        for outcome, n in dict(st.outcomes).items():
            outcomes.add_metric([str(outcome)], n)
        calls.add_metric([], st.graph_calls)
        for code, n in dict(st.meta_errors).items():
            errors.add_metric([str(code)], n)
        for number, n in dict(st.calls_by_number).items():
            by_number.add_metric([number], n)
        for number, n in dict(st.throttled_by_number).items():
            throttled.add_metric([number], n)
        now = time.monotonic()
        for number, n in dict(d.numbers.by_id).items():
            limits.add_metric([number], n.pacer.limit)
            window.add_metric([number], n.pacer.window_now(now))
            depth.add_metric([number], n.queue.size)
            credit.add_metric([number], n.pacer.credit)
        ledger.add_metric([], count_value=st.ledger_writes, sum_value=st.ledger_write_s)
        return fams


@dataclass(eq=False)
class FollowerMetrics:
    """The worker's topic followers (its views of inbound messages, campaign control, opt-outs and
    status events): what each applied and skipped, so a view that lags shows."""

    followers: Callable[[], Iterable[Any]]  # the worker's followers once started, else ()

    def describe(self) -> Iterable:
        return self._families()

    def _families(self) -> list:
        return [CounterMetricFamily("wapipe_follower_records", "Records a view of the worker applied",
                                    labels=["topic"]),
                CounterMetricFamily("wapipe_follower_unreadable", "Records a view of the worker skipped as unreadable",
                                    labels=["topic"]),
                GaugeMetricFamily("wapipe_follower_position", "The next offset a view of the worker reads",
                                  labels=["topic", "partition"])]

    def collect(self) -> Iterable:
        applied, unreadable, position = fams = self._families()
        for f in self.followers():
            applied.add_metric([f.topic], f.applied)
            unreadable.add_metric([f.topic], f.unreadable)
            for partition, offset in dict(f.positions).items():
                position.add_metric([f.topic, str(partition)], offset)
        return fams
