"""The end of a demo run: statuses settle, the report is read back from ClickHouse, printed,
written as HTML, and checked against what the sandbox saw."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

from rich.table import Table

from wapipe.app.demo.plan import UNKNOWN_TENANT
from wapipe.app.demo.tracker import Tracker

if TYPE_CHECKING:
    from wapipe.app.demo.run import DemoRun
    from wapipe.app.demo.workload import Groups


def finish(run: "DemoRun", tracker: Tracker, groups: Groups, deadline: float) -> int:
    """Statuses settle, the report is read back from ClickHouse, and checked against the sandbox."""
    from sinks.analytics import Scope, collect, totals
    from sinks.reader import open_reader
    from sinks.report import print_report
    from sinks.report_html import write_html

    ctl = run.control()
    try:
        t0 = time.monotonic()
        with run.console.status("waiting for the sandbox's status webhooks to be delivered ..."):
            while (pending := ctl.pending_webhooks()) and time.monotonic() < deadline:
                time.sleep(0.5)
        if pending:
            run.console.print(f"[yellow]{pending} status webhooks still pending at the deadline[/]")
        counters = ctl.counters()
    finally:
        ctl.close()
    scheduled = Counter(counters["webhooks"]["statuses_scheduled"])
    failed_async = sum(counters["failed_async"].values())
    outcomes = tracker.outcomes(groups.all())
    sync_failed = outcomes.get("FAILED", 0) + outcomes.get("DEAD", 0)
    tenants = tuple(t.tenant_id for t in run.plan.tenants()) + (UNKNOWN_TENANT,)
    # The report covers this run's commands (every idempotency key carries the run id); the
    # comparison with the sandbox covers every message the sandbox accepted in its lifetime (a
    # command an earlier run left undispatched may be sent during this one).
    scope = Scope(tenants=tenants, key_contains=run.run_id)
    seen_by_sandbox = Scope(tenants=tenants, accepted_since=run.sandbox_started)

    reader = open_reader(run.s)
    try:
        # The sink batches (and Meta's statuses trickle in): wait until ClickHouse has what the
        # sandbox sent, or nothing changes for a while.
        want = {"requested": len(groups.all()), "accepted": counters["accepted"],
                "delivered": scheduled.get("delivered", 0), "read": scheduled.get("read", 0)}
        last, still_since = None, time.monotonic()
        with run.console.status("waiting for ClickHouse to hold every result and status ..."):
            while time.monotonic() < deadline:
                tot, sb = totals(reader, scope), totals(reader, seen_by_sandbox)
                got = {"requested": tot.requested, **{k: getattr(sb, k) for k in ("accepted", "delivered", "read")}}
                if got == want and sb.failed == failed_async:
                    break
                if got != last:
                    last, still_since = got, time.monotonic()
                elif time.monotonic() - still_since > 30:
                    break
                time.sleep(1.0)
        run.summary["settle_s"] = round(time.monotonic() - t0, 1)
        data = collect(reader, scope)
        sb = totals(reader, seen_by_sandbox)
    finally:
        close = getattr(reader, "close", None)
        if close:
            close()

    run.console.rule("delivery report (read back from ClickHouse)")
    print_report(data, run.console)
    path = write_html(data, run.s.reports_dir)
    run.summary["report"] = str(path)

    t = data.totals
    checks = [
        ("commands in ClickHouse", t.requested, len(groups.all()), "published by the ERP SDK"),
        ("accepted by Meta", sb.accepted, counters["accepted"], "sandbox: messages accepted"),
        ("delivered", sb.delivered, scheduled.get("delivered", 0), "sandbox: delivered statuses sent"),
        ("read", sb.read, scheduled.get("read", 0), "sandbox: read statuses sent"),
        ("failed after acceptance", sb.failed, failed_async, "sandbox: failed statuses sent"),
        ("refused by Meta / dead", data.outcomes.get("FAILED", 0) + data.outcomes.get("DEAD", 0), sync_failed,
         "FAILED/DEAD results read from wa.send.results"),
        ("rejected / expired", t.rejected, sum(run.expected.invalid.values()), "invalid commands published"),
        ("duplicates", t.duplicate, run.expected.duplicates, "re-sent idempotency keys"),
        ("unreadable → dead letter", tracker.dead_letters, run.expected.unreadable, "garbage records published"),
    ]
    table = Table("check", "report (ClickHouse)", "expected", "source of the expectation", "",
                  title="Report vs what the sandbox saw", title_justify="left")
    ok_all = True
    for name, got, exp, src in checks:
        ok = got == exp
        ok_all &= ok
        table.add_row(name, str(got), str(exp), src, "[green]ok[/]" if ok else "[red]MISMATCH[/]")
    run.console.print(table)
    if sb.accepted != t.accepted:
        run.console.print(f"note: {sb.accepted - t.accepted} of the messages the sandbox accepted belong to commands of "
                          "earlier runs, dispatched during this one (their rows are in the checks, not in this "
                          "run's report)")

    limits = Table("number", "limit msg/s", "max accepted in any 1 s", "throttled (130429)", "accepted",
                   title="Throughput limits as the sandbox measured them", title_justify="left")
    for tnt in run.plan.tenants():
        c = counters["numbers"].get(tnt.phone_number_id, {})
        limits.add_row(tnt.phone_number_id, str(tnt.throughput), str(c.get("max_accepted_1s", 0)),
                       str(c.get("rejected", {}).get("130429", 0)), str(c.get("accepted", 0)))
    run.console.print(limits)
    run.summary.update({
        "commands": len(groups.all()), "accepted": t.accepted, "delivered": t.delivered, "read": t.read,
        "failed": t.failed, "rejected": t.rejected, "duplicates": t.duplicate, "dead_letters": tracker.dead_letters,
        "checks_ok": ok_all,
    })
    run.summary["sandbox"] = {"accepted": counters["accepted"], "statuses": dict(scheduled),
                              "failed_async": counters["failed_async"],
                              "numbers": {k: {"accepted": v.get("accepted"), "max_accepted_1s": v.get("max_accepted_1s"),
                                              "rejected": v.get("rejected")} for k, v in counters["numbers"].items()}}
    run.summary["sandbox_scope_totals"] = {c: getattr(sb, c) for c in ("accepted", "sent", "delivered", "read", "failed")}
    run.summary["report_totals"] = {c: getattr(t, c) for c in ("requested", "accepted", "sent", "delivered", "read",
                                                                "failed", "rejected", "duplicate", "pending")}
    run.summary["checks"] = [{"check": n, "report": g, "expected": e} for n, g, e, _src in checks]
    run.console.print(f"HTML report: {path}")
    return 0 if ok_all else 1
