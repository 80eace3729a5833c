"""Delivery analytics read from ClickHouse: the numbers behind ``wapipe report``.

Every query reads the analytics views of migrations 0010+ (``message_facts``: one row per send
command with its final outcome and its status timestamps; ``number_throughput_minute``), so the
counts here are the counts an analyst gets from the SQL in docs/analytics.md. The views are
duplicate-insensitive (argMax / min / uniqExact), so a status delivered twice by Meta or a batch
inserted twice by a retrying sink is counted once.

``collect(reader, scope)`` runs the queries through anything with ``.query(sql, parameters) ->
list[tuple]`` (``sinks.reader.open_reader(settings)``, or ``ClientReader`` over a client).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol


class Reader(Protocol):
    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple]: ...


class ClientReader:
    """A ``Reader`` over a clickhouse-connect client (tests, or a process that owns ClickHouse)."""

    def __init__(self, client) -> None:
        self.client = client

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple]:
        return [tuple(r) for r in self.client.query(sql, parameters=parameters or {}).result_rows]

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Scope:
    """Which send commands a report covers. Empty fields: no restriction."""

    tenants: tuple[str, ...] = ()
    campaigns: tuple[str, ...] = ()
    since: dt.datetime | None = None  # requested_at >= since
    key_contains: str | None = None  # the idempotency key contains this (e.g. a run or batch id)
    accepted_since: dt.datetime | None = None  # Meta accepted the message at or after this instant

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses, params = ["1"], {}
        if self.tenants:
            clauses.append("tenant_id IN {tenants:Array(String)}")
            params["tenants"] = list(self.tenants)
        if self.campaigns:
            clauses.append("campaign_id IN {campaigns:Array(String)}")
            params["campaigns"] = list(self.campaigns)
        if self.since is not None:
            clauses.append("requested_at >= {since:DateTime64(3, 'UTC')}")
            # As text: parameters may travel as JSON to the sink's read endpoint.
            params["since"] = self.since.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        if self.key_contains:
            clauses.append("position(idempotency_key, {key_contains:String}) > 0")
            params["key_contains"] = self.key_contains
        if self.accepted_since is not None:
            clauses.append("accepted_at >= {accepted_since:DateTime64(3, 'UTC')}")
            params["accepted_since"] = self.accepted_since.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        return " AND ".join(clauses), params

    def describe(self) -> str:
        parts = []
        if self.tenants:
            parts.append("tenants " + ", ".join(self.tenants))
        if self.campaigns:
            parts.append("campaigns " + ", ".join(self.campaigns))
        if self.since is not None:
            parts.append(f"since {self.since.isoformat(timespec='seconds')}")
        if self.key_contains:
            parts.append(f"idempotency keys containing {self.key_contains!r}")
        if self.accepted_since is not None:
            parts.append(f"accepted by Meta since {self.accepted_since.isoformat(timespec='seconds')}")
        return "; ".join(parts) or "everything in ClickHouse"


FUNNEL_COLUMNS = ("requested", "accepted", "sent", "delivered", "read", "failed", "rejected", "duplicate", "pending")


@dataclass
class FunnelRow:
    tenant_id: str
    campaign_id: str
    phone_number_id: str
    template_name: str
    requested: int = 0
    accepted: int = 0  # Meta answered with a wamid
    sent: int = 0  # highest status >= sent (read implies delivered implies sent)
    delivered: int = 0
    read: int = 0
    failed: int = 0  # failed at Meta: synchronously (FAILED/DEAD) or by a failed status
    rejected: int = 0  # refused by the pipeline before any Graph call (validation, expired, cancelled)
    duplicate: int = 0  # same (tenant, idempotency key) as an earlier command: not sent again
    pending: int = 0  # no final outcome yet (retrying, unknown)

    def rate(self, num: str, den: str = "accepted") -> float:
        d = getattr(self, den)
        return getattr(self, num) / d if d else 0.0


@dataclass
class Latency:
    count: int
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None
    samples: list[float] = field(default_factory=list)  # seconds, for the histogram


@dataclass
class ReportData:
    scope: Scope
    generated_at: dt.datetime
    funnel: list[FunnelRow]  # per tenant / campaign / number / template
    campaigns: list[FunnelRow]  # per tenant / campaign
    totals: FunnelRow
    time_to_deliver: Latency
    time_to_read: Latency
    failures: list[tuple[str, str, int]]  # (code, reason, messages)
    failures_over_time: list[tuple[dt.datetime, str, int]]  # (bucket start, code, messages)
    failures_bucket_s: int  # the width of failures_over_time's buckets
    throughput: list[tuple[str, dt.datetime, int]]  # (phone_number_id, second bucket, accepted)
    throughput_peak: dict[str, tuple[float, int]]  # number -> (mean msg/s over its active seconds, max in 1 s)
    pricing: list[tuple[str, str, int, int]]  # (tenant, category, messages, billable)
    outcomes: dict[str, int]

    @property
    def empty(self) -> bool:
        return self.totals.requested == 0


_FUNNEL_SELECT = """
    count() AS requested,
    countIf(wamid != '') AS accepted,
    countIf(sent_at IS NOT NULL) AS sent,
    countIf(delivered_at IS NOT NULL) AS delivered,
    countIf(read_at IS NOT NULL) AS read,
    countIf(is_failed) AS failed,
    countIf(outcome IN ('REJECTED', 'EXPIRED', 'CANCELLED')) AS rejected,
    countIf(outcome = 'DUPLICATE') AS duplicate,
    countIf(outcome IN ('', 'RETRYING', 'UNKNOWN')) AS pending
"""


def funnel(reader: Reader, scope: Scope) -> list[FunnelRow]:
    where, params = scope.where()
    rows = reader.query(
        f"SELECT tenant_id, ifNull(campaign_id, ''), phone_number_id, ifNull(template_name, ''), {_FUNNEL_SELECT}"
        f" FROM message_facts WHERE {where}"
        " GROUP BY tenant_id, campaign_id, phone_number_id, template_name"
        " ORDER BY tenant_id, campaign_id, phone_number_id, template_name", params)
    return [FunnelRow(*r[:4], *(int(x) for x in r[4:])) for r in rows]


def funnel_by_campaign(reader: Reader, scope: Scope) -> list[FunnelRow]:
    """The funnel per tenant and campaign (the terminal's view; numbers and templates in the HTML)."""
    where, params = scope.where()
    rows = reader.query(
        f"SELECT tenant_id, ifNull(campaign_id, ''), {_FUNNEL_SELECT} FROM message_facts WHERE {where}"
        " GROUP BY tenant_id, campaign_id ORDER BY tenant_id, campaign_id", params)
    return [FunnelRow(r[0], r[1], "", "", *(int(x) for x in r[2:])) for r in rows]


def totals(reader: Reader, scope: Scope) -> FunnelRow:
    where, params = scope.where()
    r = reader.query(f"SELECT {_FUNNEL_SELECT} FROM message_facts WHERE {where}", params)[0]
    return FunnelRow("all", "", "", "", *(int(x) for x in r))


def latency(reader: Reader, scope: Scope, start: str, end: str, *, samples: int = 5000) -> Latency:
    """Seconds from ``start`` to ``end`` (columns of message_facts), over messages that have both.
    The report measures from Meta's accept (``accepted_at``) to the delivered / read status."""
    where, params = scope.where()
    cond = f"{where} AND {start} IS NOT NULL AND {end} IS NOT NULL"
    # Meta's status timestamps have whole seconds: a status in the same second as the accept
    # may look earlier than it; count it as 0, not as a negative or a missing value.
    secs = f"greatest(0, dateDiff('millisecond', {start}, {end})) / 1000.0"
    r = reader.query(f"SELECT count(), quantilesExact(0.5, 0.9, 0.99)({secs}), max({secs}) "
                     f"FROM message_facts WHERE {cond}", params)[0]
    n = int(r[0])
    if not n:
        return Latency(0, None, None, None, None)
    sample = [float(x[0]) for x in reader.query(
        f"SELECT {secs} FROM message_facts WHERE {cond} ORDER BY cityHash64(command_id) LIMIT {int(samples)}", params)]
    q = [float(x) for x in r[1]]
    return Latency(n, q[0], q[1], q[2], float(r[2]), sample)


def failures(reader: Reader, scope: Scope) -> list[tuple[str, str, int]]:
    where, params = scope.where()
    # Meta's codes carry one meaning each; the pipeline's refusals differ by reason (unknown
    # template, window closed, ...), so those are grouped by their reason's first words.
    return [(str(c), str(reason), int(n)) for c, _kind, reason, n in reader.query(
        "SELECT if(error_code = 0, outcome, toString(error_code)) AS code,"
        " if(error_code = 0 AND outcome IN ('REJECTED', 'CANCELLED'),"
        "    arrayStringConcat(arraySlice(splitByChar(' ', error_reason), 1, 4), ' '), '') AS kind,"
        " any(error_reason), count()"
        f" FROM message_facts WHERE {where} AND (is_failed OR outcome IN ('REJECTED', 'EXPIRED', 'CANCELLED', 'DEAD'))"
        " GROUP BY code, kind ORDER BY count() DESC, code, kind", params)]


def failures_over_time(reader: Reader, scope: Scope, bucket_s: int) -> list[tuple[dt.datetime, str, int]]:
    where, params = scope.where()
    return [(t, str(c), int(n)) for t, c, n in reader.query(
        f"SELECT toStartOfInterval(coalesce(failed_at, decided_at, requested_at), INTERVAL {int(bucket_s)} SECOND) AS t,"
        " if(error_code = 0, outcome, toString(error_code)) AS code, count()"
        f" FROM message_facts WHERE {where} AND is_failed GROUP BY t, code ORDER BY t, code", params)]


def throughput(reader: Reader, scope: Scope) -> list[tuple[str, dt.datetime, int]]:
    """Messages Meta accepted per number per second (the ACCEPTED SendResult's decided_at)."""
    where, params = scope.where()
    return [(str(p), t, int(n)) for p, t, n in reader.query(
        "SELECT phone_number_id, toStartOfSecond(accepted_at) AS t, count()"
        f" FROM message_facts WHERE {where} AND accepted_at IS NOT NULL GROUP BY phone_number_id, t"
        " ORDER BY phone_number_id, t", params)]


def pricing(reader: Reader, scope: Scope) -> list[tuple[str, str, int, int]]:
    where, params = scope.where()
    return [(str(t), str(c), int(n), int(b)) for t, c, n, b in reader.query(
        "SELECT tenant_id, ifNull(pricing_category, 'unknown') AS category, count(), countIf(billable)"
        f" FROM message_facts WHERE {where} AND wamid != '' GROUP BY tenant_id, category"
        " ORDER BY tenant_id, category", params)]


def outcomes(reader: Reader, scope: Scope) -> dict[str, int]:
    where, params = scope.where()
    return {str(o or "NONE"): int(n) for o, n in reader.query(
        f"SELECT outcome, count() FROM message_facts WHERE {where} GROUP BY outcome ORDER BY outcome", params)}


def _peaks(rows: list[tuple[str, dt.datetime, int]]) -> dict[str, tuple[float, int]]:
    by: dict[str, list[int]] = {}
    for number, _t, n in rows:
        by.setdefault(number, []).append(n)
    # Mean over the seconds it was sending, leaving out the first and last (partial) seconds.
    out = {}
    for number, counts in by.items():
        inner = counts[1:-1] if len(counts) > 2 else counts
        out[number] = (sum(inner) / len(inner), max(counts))
    return out


def collect(reader: Reader, scope: Scope = Scope()) -> ReportData:
    tp = throughput(reader, scope)
    span = (tp[-1][1] - tp[0][1]).total_seconds() if tp else 0
    bucket_s = 10 if span < 1800 else 300
    return ReportData(
        scope=scope,
        generated_at=dt.datetime.now(dt.timezone.utc),
        funnel=funnel(reader, scope),
        campaigns=funnel_by_campaign(reader, scope),
        totals=totals(reader, scope),
        time_to_deliver=latency(reader, scope, "accepted_at", "delivered_at"),
        time_to_read=latency(reader, scope, "accepted_at", "read_at"),
        failures=failures(reader, scope),
        failures_over_time=failures_over_time(reader, scope, bucket_s),
        failures_bucket_s=bucket_s,
        throughput=tp,
        throughput_peak=_peaks(tp),
        pricing=pricing(reader, scope),
        outcomes=outcomes(reader, scope),
    )
