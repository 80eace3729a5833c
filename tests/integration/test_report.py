"""The report from real rows: the sink's tables in the embedded ClickHouse engine, the analytics
views of migrations 0010+, then the terminal tables and the HTML file. Every number checked is
computed here independently from the rows inserted (including duplicates Meta and a retrying sink
produce), never hard-coded."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field

import pytest
from rich.console import Console

from sinks.analytics import ClientReader, Scope, collect
from sinks.report import print_report
from sinks.report_html import render_html, write_html

pytestmark = pytest.mark.integration

# Two days ago at 09:00 UTC: rows must stay inside their TTL whenever the suite runs.
T0 = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)).replace(hour=9, minute=0, second=0, microsecond=0)
ACCEPTED_FATES = ("accepted_only", "sent", "delivered", "read", "read_skip", "read_late_sent", "failed_async")
FATES = ACCEPTED_FATES + ("rejected", "duplicate", "failed_sync")
SENT = {"sent", "delivered", "read", "read_skip", "read_late_sent", "failed_async"}
DELIVERED = {"delivered", "read", "read_skip", "read_late_sent"}
READ = {"read", "read_skip", "read_late_sent"}
FAILED = {"failed_async", "failed_sync"}


@dataclass
class Cmd:
    tenant: str
    number: str
    campaign: str | None
    template: str
    fate: str
    i: int
    requested_at: dt.datetime
    accepted_at: dt.datetime | None = None
    wamid: str = ""
    deliver_s: float | None = None
    read_s: float | None = None
    billable: bool = False
    category: str = ""
    statuses: list[tuple[str, dt.datetime]] = field(default_factory=list)

    @property
    def command_id(self) -> str:
        return f"cmd-{self.i}"


def scenario(n: int = 600, seed: int = 7) -> list[Cmd]:
    rng = random.Random(seed)
    plan = [("tenant-a", "1001", "camp-a"), ("tenant-a", "1002", None), ("tenant-b", "2001", "camp-b")]
    cmds = []
    for i in range(n):
        tenant, number, campaign = plan[i % 3]
        fate = rng.choices(FATES, weights=[5, 10, 20, 30, 5, 5, 5, 5, 3, 4])[0]
        req = T0 + dt.timedelta(milliseconds=40 * i)
        c = Cmd(tenant, number, campaign, "order_update" if campaign is None else "promo", fate, i, req)
        if fate in ACCEPTED_FATES:
            c.accepted_at = req + dt.timedelta(milliseconds=rng.randint(5, 900))
            c.wamid = "wamid." + hashlib.sha1(str(i).encode()).hexdigest()
            c.category = "utility" if campaign is None else "marketing"
            sent = c.accepted_at + dt.timedelta(seconds=rng.uniform(0.05, 0.3))
            c.deliver_s = round(rng.uniform(0.2, 5.0), 3)
            delivered = c.accepted_at + dt.timedelta(seconds=c.deliver_s)
            c.read_s = c.deliver_s + round(rng.uniform(0.5, 30.0), 3)
            read = c.accepted_at + dt.timedelta(seconds=c.read_s)
            c.statuses = {
                "accepted_only": [],
                "sent": [("sent", sent)],
                "delivered": [("sent", sent), ("delivered", delivered)],
                "read": [("sent", sent), ("delivered", delivered), ("read", read)],
                "read_skip": [("read", read)],  # Meta skipped `delivered` (and `sent`)
                "read_late_sent": [("delivered", delivered), ("read", read), ("sent", read + dt.timedelta(seconds=1))],
                "failed_async": [("sent", sent), ("failed", delivered)],
            }[fate]
            c.billable = any(s in ("sent", "delivered", "read") for s, _ in c.statuses)
            if fate not in DELIVERED:
                c.deliver_s = None
            if fate not in READ:
                c.read_s = None
            if fate == "read_skip":  # delivered is implied by read: its time is the read's
                c.deliver_s = c.read_s
        cmds.append(c)
    return cmds


SEND_REQ_COLS = ["command_id", "tenant_id", "idempotency_key", "phone_number_id", "subject_id", "lane", "campaign_id",
                 "kind", "template_name", "template_lang", "requested_at", "valid_until", "retention_days"]
RESULT_COLS = ["command_id", "tenant_id", "idempotency_key", "phone_number_id", "subject_id", "lane", "campaign_id",
               "outcome", "wamid", "message_status", "error_code", "error_subcode", "reason", "attempts",
               "original_outcome", "decided_at", "retention_days"]
STATUS_COLS = ["event_id", "tenant_id", "waba_id", "phone_number_id", "wamid", "status", "status_rank", "timestamp",
               "subject_id", "biz_opaque_callback_data", "pricing_billable", "pricing_model", "pricing_category",
               "error_codes", "error_titles", "error_messages", "error_details", "received_at", "extra", "retention_days"]
RANK = {"sent": 1, "delivered": 2, "read": 3, "failed": 4}


def load(client, cmds: list[Cmd]) -> None:
    reqs, results, statuses = [], [], []
    last_wamid = None
    for c in cmds:
        lane = "TRANSACTIONAL" if c.campaign is None else "CAMPAIGN"
        base = [c.command_id, c.tenant, f"key-{c.i}", c.number, f"subj-{c.i}", lane, c.campaign]
        reqs.append([*base, "TEMPLATE", c.template, "en", c.requested_at, None, 365])
        decided = c.accepted_at or c.requested_at + dt.timedelta(milliseconds=3)
        if c.fate == "rejected":
            results.append([*base, "REJECTED", None, None, None, None, "template promo is PAUSED", 0, None, decided, 365])
        elif c.fate == "duplicate":
            # The pipeline answers a duplicate with the original's result again, wamid included:
            # the duplicate itself was not sent and must not count as accepted or delivered.
            results.append([*base, "DUPLICATE", last_wamid, None, None, None, None, 0, "ACCEPTED", decided, 365])
        elif c.fate == "failed_sync":
            results.append([*base, "RETRYING", None, None, 130429, None, "throttled", 1, None, decided, 365])
            results.append([*base, "FAILED", None, None, 131026, None, "Message undeliverable", 2, None,
                            decided + dt.timedelta(seconds=1), 365])
        else:
            results.append([*base, "RETRYING", None, None, 131000, None, "transient", 1, None,
                            c.accepted_at - dt.timedelta(milliseconds=1), 365])
            results.append([*base, "ACCEPTED", c.wamid, "accepted", None, None, None, 2, None, c.accepted_at, 365])
            last_wamid = c.wamid
        for st, ts in c.statuses:
            failed = st == "failed"
            statuses.append([
                hashlib.sha256(f"{c.number}{c.wamid}{st}{ts}".encode()).hexdigest(), c.tenant, "waba-1", c.number,
                c.wamid, st, RANK[st], ts, f"subj-{c.i}", f"key-{c.i}",
                None if failed else True, None if failed else "PMP", None if failed else c.category,
                [131049] if failed else [], ["This message was not delivered"] if failed else [], [], [],
                ts, "{}", 365])
    client.insert("send_requests", reqs, column_names=SEND_REQ_COLS)
    client.insert("send_results", results, column_names=RESULT_COLS)
    client.insert("status_events", statuses, column_names=STATUS_COLS)
    # Meta's duplicate webhooks and a sink retry after a crash: a third of the rows again, in new batches.
    client.insert("status_events", statuses[::3], column_names=STATUS_COLS)
    client.insert("send_results", results[::3], column_names=RESULT_COLS)


def expected_funnel(cmds: list[Cmd]) -> dict[str, int]:
    f = Counter(c.fate for c in cmds)
    return {
        "requested": len(cmds),
        "accepted": sum(f[x] for x in ACCEPTED_FATES),
        "sent": sum(f[x] for x in SENT | DELIVERED),
        "delivered": sum(f[x] for x in DELIVERED),
        "read": sum(f[x] for x in READ),
        "failed": sum(f[x] for x in FAILED),
        "rejected": f["rejected"],
        "duplicate": f["duplicate"],
        "pending": 0,
    }


@pytest.fixture
def loaded(clickhouse):
    cmds = scenario()
    load(clickhouse, cmds)
    return clickhouse, cmds


def test_analytics_equal_the_rows(loaded):
    client, cmds = loaded
    data = collect(ClientReader(client))
    want = expected_funnel(cmds)
    assert {k: getattr(data.totals, k) for k in want} == want
    # Per tenant / campaign / number / template.
    for row in data.funnel:
        mine = [c for c in cmds if c.tenant == row.tenant_id and (c.campaign or "") == row.campaign_id
                and c.number == row.phone_number_id]
        assert {k: getattr(row, k) for k in want} == expected_funnel(mine)
    assert sum(r.requested for r in data.funnel) == len(cmds)

    delivers = sorted(c.deliver_s for c in cmds if c.deliver_s is not None)
    assert data.time_to_deliver.count == len(delivers)
    assert data.time_to_deliver.max == pytest.approx(delivers[-1], abs=0.002)
    assert delivers[len(delivers) // 2 - 1] - 0.002 <= data.time_to_deliver.p50 <= delivers[len(delivers) // 2] + 0.002
    reads = sorted(c.read_s for c in cmds if c.read_s is not None)
    assert data.time_to_read.count == len(reads)
    assert data.time_to_read.max == pytest.approx(reads[-1], abs=0.002)

    fails = dict((code, n) for code, _reason, n in data.failures)
    f = Counter(c.fate for c in cmds)
    assert fails == {k: v for k, v in {"131026": f["failed_sync"], "131049": f["failed_async"],
                                       "REJECTED": f["rejected"]}.items() if v}

    per_number = Counter(c.number for c in cmds if c.accepted_at)
    got = Counter()
    for number, _t, n in data.throughput:
        got[number] += n
    assert got == per_number
    per_second = Counter((c.number, c.accepted_at.replace(microsecond=0)) for c in cmds if c.accepted_at)
    for number, (_mean, peak) in data.throughput_peak.items():
        assert peak == max(n for (num, _s), n in per_second.items() if num == number)

    billable = Counter((c.tenant, c.category) for c in cmds if c.billable)
    for tenant, cat, n, b in data.pricing:
        if cat != "unknown":
            assert b == billable[(tenant, cat)]

    assert data.outcomes.get("ACCEPTED") == want["accepted"]
    assert data.outcomes.get("FAILED", 0) == f["failed_sync"]


def test_scope_filters(loaded):
    client, cmds = loaded
    data = collect(ClientReader(client), Scope(tenants=("tenant-b",)))
    assert data.totals.requested == sum(c.tenant == "tenant-b" for c in cmds)
    data = collect(ClientReader(client), Scope(campaigns=("camp-a",)))
    assert data.totals.accepted == sum(c.campaign == "camp-a" and c.accepted_at is not None for c in cmds)
    late = T0 + dt.timedelta(milliseconds=40 * 500)
    data = collect(ClientReader(client), Scope(since=late))
    assert data.totals.requested == sum(c.requested_at >= late for c in cmds)
    data = collect(ClientReader(client), Scope(key_contains="key-1"))
    assert data.totals.requested == sum(f"key-{c.i}".find("key-1") >= 0 for c in cmds)
    data = collect(ClientReader(client), Scope(accepted_since=late))
    assert data.totals.accepted == sum(c.accepted_at is not None and c.accepted_at >= late for c in cmds)


def test_views_for_analysts_agree(loaded):
    """The SQL in docs/analytics.md reads the same numbers as the report."""
    client, cmds = loaded
    want = expected_funnel(cmds)
    row = client.query(
        "SELECT sum(requested), sum(accepted), sum(delivered), sum(read), sum(failed), sum(rejected) FROM delivery_funnel"
    ).result_rows[0]
    assert list(row) == [want[k] for k in ("requested", "accepted", "delivered", "read", "failed", "rejected")]
    per_min = client.query("SELECT sum(accepted_messages) FROM number_throughput_minute").result_rows[0][0]
    assert per_min == want["accepted"]
    lat = client.query("SELECT sum(delivered_messages) FROM delivery_latency").result_rows[0][0]
    assert lat == want["delivered"]


def _html_rows(html: str, cls: str) -> list[list[str]]:
    table = re.search(rf'<table class="{cls}">(.*?)</table>', html, re.S).group(1)
    return [re.findall(r"<td>(.*?)</td>", tr) for tr in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]]


def test_terminal_and_html_show_the_counts(loaded, tmp_path):
    client, cmds = loaded
    data = collect(ClientReader(client))
    want = expected_funnel(cmds)

    console = Console(record=True, width=260)
    print_report(data, console)
    text = console.export_text()
    total_line = next(line for line in text.splitlines() if line.strip().startswith("│ all") or " all " in line)
    nums = [int(x) for x in re.findall(r"\b\d+\b", total_line)]
    assert nums[: len(want)] == list(want.values())

    path = write_html(data, tmp_path / "reports")
    assert path.name.startswith("report-") and path.suffix == ".html"
    html = path.read_text()
    # Self-contained: plotly.js inline, nothing loaded from the network.
    assert not re.search(r"<script[^>]+src=", html) and not re.search(r"<link[^>]+href=", html)
    assert "Plotly.newPlot" in html and html.count("Plotly.newPlot") == 4
    funnel = _html_rows(html, "funnel")
    total = funnel[-1]
    assert total[0] == "all"
    assert [int(x) for x in total[4:4 + len(want)]] == list(want.values())
    tp = {r[0]: int(r[1]) for r in _html_rows(html, "throughput")}
    assert tp == dict(Counter(c.number for c in cmds if c.accepted_at))
    fails = {r[0]: int(r[2]) for r in _html_rows(html, "failures")}
    assert fails.get("131049", 0) == sum(c.fate == "failed_async" for c in cmds)


def test_empty_scope_says_so(clickhouse):
    data = collect(ClientReader(clickhouse), Scope(tenants=("nobody",)))
    assert data.empty
    console = Console(record=True, width=120)
    print_report(data, console)
    assert "no send commands" in console.export_text()
    assert "<html>" in render_html(data)


def test_every_sql_example_in_the_docs_runs(loaded):
    """docs/analytics.md is pasted by analysts: each example must run on the real schema."""
    from wapipe.config import REPO_ROOT

    client, _cmds = loaded
    blocks = re.findall(r"```sql\n(.*?)```", (REPO_ROOT / "docs" / "analytics.md").read_text(), re.S)
    assert len(blocks) >= 8
    nonempty = 0
    for sql in blocks:
        # Pin "today"/"now" to the scenario's time so the examples also return rows.
        sql = sql.strip().rstrip(";").replace("today()", f"toDate('{T0:%Y-%m-%d}')").replace(
            "now()", f"toDateTime('{T0:%Y-%m-%d} 09:30:00', 'UTC')")
        nonempty += bool(client.query(sql).result_rows)
    assert nonempty >= 6


def test_the_terminal_report_reads_at_80_columns(loaded):
    """A pipe or a small terminal gets 80 columns: no cell is cut to "…", no line is wider, and the
    funnel's totals are still all there (one block per campaign)."""
    client, cmds = loaded
    data = collect(ClientReader(client))
    want = expected_funnel(cmds)
    console = Console(record=True, width=80)
    print_report(data, console)
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "all")
    block = "\n".join(lines[start:start + 8])
    got = {k: int(v) for k, v in re.findall(r"(requested|accepted|sent|delivered|read|failed|rejected|dup|pending)"
                                            r"\s+(\d+)\b", block)}
    assert got == {("dup" if k == "duplicate" else k): v for k, v in want.items()}
    for r in data.campaigns:
        assert any(line.strip() == f"{r.tenant_id} · {r.campaign_id or '(none)'}" for line in lines)


def test_failures_in_one_second_plot_over_a_readable_span():
    """All failures in one bucket: the axis spans ten buckets, not a nanosecond."""
    from sinks.report_html import failures_axis

    t = T0.replace(tzinfo=None)
    lo, hi = failures_axis([(t, "131026", 3), (t, "131049", 1)], 10)
    assert hi - lo == dt.timedelta(seconds=100) and lo < t < hi
    lo, hi = failures_axis([(t, "1", 1), (t + dt.timedelta(hours=1), "1", 1)], 300)
    assert lo == t - dt.timedelta(seconds=300) and hi == t + dt.timedelta(hours=1, seconds=600)
