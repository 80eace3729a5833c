"""The send path's plain counters (a dict increment each); ``processors.send.metrics`` turns them
into Prometheus figures when scraped."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Stats:
    accepted: int = 0
    outcomes: dict = field(default_factory=lambda: defaultdict(int))
    graph_calls: int = 0
    throttled: int = 0
    calls_by_number: dict = field(default_factory=lambda: defaultdict(int))
    throttled_by_number: dict = field(default_factory=lambda: defaultdict(int))  # 130429 and friends, 131048
    meta_errors: dict = field(default_factory=lambda: defaultdict(int))  # Meta error code -> answers
    ledger_writes: int = 0
    ledger_write_s: float = 0.0  # total seconds the DISPATCHING writes took to be acknowledged
    intent_batches: int = 0  # DISPATCHING writes acknowledged together (one per number and pacing turn)
    # transactional lane: worst seconds from requested_at to admission, and admission to the call
    tx_to_admit: float = 0.0
    tx_admit_to_call: float = 0.0
    # from a slot's reservation to its call being ready to start (its ledger write acknowledged)
    reserve_to_ready_s: float = 0.0
    reserve_to_ready_n: int = 0
    reserve_to_ready_max: float = 0.0
    # from a call's start to its end (what a slot costs the window beyond 1 s, less
    # the learned credit: NumberPacer.window_wait)
    trip_s: float = 0.0
    trip_n: int = 0
    start_waits: int = 0  # times a call whose intent was written found no room yet (NumberPacer.start_wait)
