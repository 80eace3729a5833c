"""The delivery report (``wapipe report``) in the terminal (rich); the HTML file is
sinks/report_html.py.

The numbers come from ``sinks.analytics.collect`` (ClickHouse views); this module only renders.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table

from sinks.analytics import FUNNEL_COLUMNS, ReportData


def pct(n: int, d: int) -> str:
    return f"{100.0 * n / d:.1f}%" if d else "-"


def secs(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}s"


# --- terminal -----------------------------------------------------------------------------
def funnel_table(data: ReportData, title: str = "Delivery funnel per tenant and campaign") -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("tenant", no_wrap=True)
    t.add_column("campaign", no_wrap=True)
    for c in FUNNEL_COLUMNS:
        t.add_column("dup" if c == "duplicate" else c, justify="right")
    t.add_column("deliv %", justify="right")
    t.add_column("read %", justify="right")
    rows = [*data.campaigns, data.totals]
    for i, r in enumerate(rows):
        last = i == len(rows) - 1
        t.add_row(r.tenant_id, (r.campaign_id or "(none)") if not last else "",
                  *(str(getattr(r, c)) for c in FUNNEL_COLUMNS),
                  pct(r.delivered, r.accepted), pct(r.read, r.accepted),
                  style="bold" if last else None, end_section=i == len(rows) - 2)
    return t


def funnel_blocks(data: ReportData, title: str = "Delivery funnel per tenant and campaign") -> Group:
    """The funnel for a narrow terminal (a pipe, 80 columns): one small block per campaign, its
    stages in two pairs of columns, so no cell is cut to "…"."""
    blocks: list[object] = [f"[italic]{title}[/]"]
    rows = [*data.campaigns, data.totals]
    for i, r in enumerate(rows):
        last = i == len(rows) - 1
        name = "all" if last else f"{r.tenant_id} · {r.campaign_id or '(none)'}"
        cells = [("dup" if c == "duplicate" else c, str(getattr(r, c))) for c in FUNNEL_COLUMNS]
        cells += [("deliv %", pct(r.delivered, r.accepted)), ("read %", pct(r.read, r.accepted))]
        t = Table(title=name, title_justify="left", title_style="bold" if last else None, show_header=False,
                  box=None, padding=(0, 1))
        for justify in ("left", "right", "left", "right"):
            t.add_column(justify=justify, no_wrap=True)
        half = (len(cells) + 1) // 2
        for (a, x), (b, y) in zip(cells[:half], [*cells[half:], ("", "")]):
            t.add_row(a, x, b, y)
        blocks.append(t)
    return Group(*blocks)


def latency_table(data: ReportData) -> Table:
    t = Table("measure", "messages", "p50", "p90", "p99", "max", title="Latency since Meta accepted", title_justify="left")
    for name, lat in (("time to deliver", data.time_to_deliver), ("time to read", data.time_to_read)):
        t.add_row(name, str(lat.count), secs(lat.p50), secs(lat.p90), secs(lat.p99), secs(lat.max))
    return t


def failures_table(data: ReportData) -> Table:
    t = Table("code", "reason (an example)", "messages", title="Failures and rejections by Meta error code / outcome",
              title_justify="left")
    for code, reason, n in data.failures:
        t.add_row(code, (reason or "")[:90], str(n))
    return t


def throughput_table(data: ReportData) -> Table:
    t = Table("number", "accepted", "mean msg/s", "max in 1 s", title="Throughput achieved per number",
              title_justify="left")
    totals: dict[str, int] = {}
    for number, _t, n in data.throughput:
        totals[number] = totals.get(number, 0) + n
    for number, (mean, peak) in sorted(data.throughput_peak.items()):
        t.add_row(number, str(totals[number]), f"{mean:.1f}", str(peak))
    return t


def pricing_table(data: ReportData) -> Table:
    t = Table("tenant", "pricing category", "messages", "billable", title="Pricing (from status webhooks)",
              title_justify="left")
    for tenant, cat, n, b in data.pricing:
        t.add_row(tenant, cat, str(n), str(b))
    return t


def _natural_width(console: Console, table: Table) -> int:
    """The width the table takes when nothing in it is cut."""
    return console.measure(table, options=console.options.update_width(10_000)).maximum


def print_report(data: ReportData, console: Console) -> None:
    console.print(f"[bold]wapipe delivery report[/] — {data.scope.describe()} — "
                  f"{data.generated_at:%Y-%m-%d %H:%M:%S} UTC")
    if data.empty:
        console.print("no send commands in ClickHouse for this scope")
        return
    wide = funnel_table(data)
    # rich shrinks a table that does not fit by cutting its cells to "…": a narrow terminal gets blocks.
    fits = console.measure(wide).minimum <= console.width and _natural_width(console, wide) <= console.width
    console.print(wide if fits else funnel_blocks(data))
    console.print(latency_table(data))
    console.print(throughput_table(data))
    if data.failures:
        console.print(failures_table(data))
    if data.pricing:
        console.print(pricing_table(data))
