"""The order of an outbound message's statuses in Meta's webhooks.

``sent < delivered < read`` (``played`` is a voice message's ``read``); ``failed`` is terminal. A
status Meta invents later ranks 0 and never moves a message. The normaliser's state machine
(processors/normalise/status.py), the sink's rows and ClickHouse's fold
(sinks/migrations/0012_message_states.sql) all rank by this.
"""

from __future__ import annotations

RANK: dict[str, int] = {"sent": 1, "delivered": 2, "read": 3, "played": 3, "failed": 4}


def rank(status: str) -> int:
    return RANK.get(status, 0)
