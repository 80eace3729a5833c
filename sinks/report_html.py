"""The delivery report as one self-contained HTML file: plotly (the ``report`` extra), its
JavaScript inlined, so it opens offline in any browser. The terminal version is sinks/report.py."""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from sinks.analytics import FUNNEL_COLUMNS, FunnelRow, Latency, ReportData
from sinks.report import pct, secs


def _funnel_fig(r: FunnelRow) -> go.Figure:
    stages = ["requested", "accepted", "sent", "delivered", "read"]
    fig = go.Figure(go.Funnel(y=stages, x=[getattr(r, s) for s in stages], textinfo="value+percent initial"))
    fig.update_layout(title="Delivery funnel (all messages in scope)", height=380, margin=dict(l=120, r=20, t=50, b=20))
    return fig


def _latency_fig(deliver: Latency, read: Latency) -> go.Figure:
    fig = go.Figure()
    for name, lat in (("time to deliver", deliver), ("time to read", read)):
        if lat.samples:
            fig.add_trace(go.Histogram(x=lat.samples, name=f"{name} (n={lat.count})", opacity=0.7, nbinsx=60))
    fig.update_layout(title="Latency since Meta accepted (seconds)", barmode="overlay", height=380,
                      xaxis_title="seconds", yaxis_title="messages (sample)")
    return fig


def _failures_fig(rows: list[tuple[dt.datetime, str, int]], bucket_s: int) -> go.Figure:
    """Stacked bars, one per time bucket and code. Each bar is as wide as its bucket and the axis
    spans at least ten buckets, so failures that all share one bucket show as a bar, not as a
    line on an axis a nanosecond wide (plotly's autorange over a single instant)."""
    fig = go.Figure()
    codes = sorted({c for _t, c, _n in rows})
    width_ms = bucket_s * 1000 * 0.9
    for code in codes:
        pts = [(t, n) for t, c, n in rows if c == code]
        fig.add_trace(go.Bar(x=[p[0] + dt.timedelta(seconds=bucket_s / 2) for p in pts], y=[p[1] for p in pts],
                             width=[width_ms] * len(pts), name=code))
    fig.update_layout(title=f"Failures over time by Meta error code (per {bucket_s} s)", barmode="stack",
                      height=360, xaxis_title="time (UTC)", yaxis_title="messages")
    if rows:
        fig.update_xaxes(range=list(failures_axis(rows, bucket_s)))
    return fig


def failures_axis(rows: list[tuple[dt.datetime, str, int]], bucket_s: int) -> tuple[dt.datetime, dt.datetime]:
    """The failures plot's x range: its buckets with one bucket of margin each side, at least ten
    buckets wide."""
    first, last = min(t for t, _c, _n in rows), max(t for t, _c, _n in rows)
    lo, hi = first - dt.timedelta(seconds=bucket_s), last + dt.timedelta(seconds=2 * bucket_s)
    short = dt.timedelta(seconds=10 * bucket_s) - (hi - lo)
    if short > dt.timedelta(0):
        lo, hi = lo - short / 2, hi + short / 2
    return lo, hi


def _throughput_fig(rows: list[tuple[str, dt.datetime, int]]) -> go.Figure:
    fig = go.Figure()
    for number in sorted({p for p, _t, _n in rows}):
        pts = [(t, n) for p, t, n in rows if p == number]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", name=number))
    fig.update_layout(title="Throughput per number (messages Meta accepted per second)", height=380,
                      xaxis_title="time (UTC)", yaxis_title="msg/s")
    return fig


def _html_table(headers: list[str], rows: list[list[object]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#222}
h1{font-size:1.5rem} h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
tr.total td{font-weight:bold}
.meta{color:#666}
"""


def render_html(data: ReportData) -> str:
    funnel_rows = [[r.tenant_id, r.campaign_id or "(none)", r.phone_number_id, r.template_name,
                    *(getattr(r, c) for c in FUNNEL_COLUMNS), pct(r.delivered, r.accepted), pct(r.read, r.accepted)]
                   for r in [*data.funnel, data.totals]]
    headers = ["tenant", "campaign", "number", "template", *FUNNEL_COLUMNS, "delivered %", "read %"]
    lat_rows = [[name, lat.count, secs(lat.p50), secs(lat.p90), secs(lat.p99), secs(lat.max)]
                for name, lat in (("time to deliver", data.time_to_deliver), ("time to read", data.time_to_read))]
    tp_totals: dict[str, int] = {}
    for number, _t, n in data.throughput:
        tp_totals[number] = tp_totals.get(number, 0) + n
    tp_rows = [[n, tp_totals[n], f"{mean:.1f}", peak] for n, (mean, peak) in sorted(data.throughput_peak.items())]

    figs = [_funnel_fig(data.totals), _latency_fig(data.time_to_deliver, data.time_to_read),
            _failures_fig(data.failures_over_time, data.failures_bucket_s), _throughput_fig(data.throughput)]
    # The first figure carries plotly.js inline; the others reuse it. No network needed to view.
    plots = [pio.to_html(f, full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False})
             for i, f in enumerate(figs)]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>wapipe delivery report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>wapipe delivery report</h1>",
        f"<p class='meta'>scope: {html.escape(data.scope.describe())} · generated "
        f"{data.generated_at:%Y-%m-%d %H:%M:%S} UTC · read from ClickHouse</p>",
        "<h2>Delivery funnel</h2>", _html_table(headers, funnel_rows, "funnel"), plots[0],
        "<h2>Outcomes of the send commands</h2>",
        _html_table(["outcome", "commands"], [[k, v] for k, v in data.outcomes.items()], "outcomes"),
        "<h2>Latency</h2>", _html_table(["measure", "messages", "p50", "p90", "p99", "max"], lat_rows, "latency"),
        plots[1],
        "<h2>Failures</h2>",
        _html_table(["code", "reason", "messages"], [list(f) for f in data.failures], "failures"), plots[2],
        "<h2>Throughput per number</h2>",
        _html_table(["number", "accepted", "mean msg/s", "max in 1 s"], tp_rows, "throughput"), plots[3],
        "<h2>Pricing</h2>",
        _html_table(["tenant", "pricing category", "messages", "billable"], [list(p) for p in data.pricing], "pricing"),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_html(data: ReportData, reports_dir: Path) -> Path:
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"report-{data.generated_at:%Y%m%dT%H%M%S}-{data.generated_at.microsecond // 1000:03d}.html"
    path.write_text(render_html(data), encoding="utf-8")
    return path
