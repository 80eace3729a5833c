"""The demo's live view: progress bars per tenant's campaign, stall and timeout detection."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from wapipe.app.demo.plan import DemoError
from wapipe.app.demo.tracker import Tracker

if TYPE_CHECKING:
    from wapipe.app.demo.run import DemoRun
    from wapipe.app.demo.workload import Groups, Publisher


def show_progress(run: "DemoRun", pub: Publisher, tracker: Tracker, groups: Groups, deadline: float) -> bool:
    plan = run.plan
    tenants = plan.tenants()
    cols = (TextColumn("{task.description:<34}"), BarColumn(bar_width=36), MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"), TimeElapsedColumn())
    with Progress(*cols, console=run.console, refresh_per_second=4) as progress:
        t_seal = progress.add_task("commands built, personal data sealed", total=None, note="")
        t_pub = progress.add_task("published to wa.send.requested", total=None, note="")
        t_camp = {t.tenant_id: progress.add_task(f"campaign {t.display_name} ({t.throughput}/s)", total=None, note="")
                  for t in tenants}
        t_tx = progress.add_task("transactional (during the campaign)", total=plan.transactional or None, note="")
        t_odd = progress.add_task("invalid + duplicate commands", total=(plan.invalid + plan.duplicates) or None,
                                  note="")
        sizes = dict(zip((t.tenant_id for t in tenants), plan.campaign_split()))
        last_rate: dict[str, tuple[float, int]] = {}
        last_moved, last_change = (-1, -1), time.monotonic()
        while True:
            now = time.monotonic()
            progress.update(t_seal, completed=pub.built, total=pub.to_build or None)
            progress.update(t_pub, completed=pub.published, total=pub.total or None)
            for t in tenants:
                ids = groups.campaign.get(t.tenant_id, set())
                done = tracker.finished(ids)
                prev_t, prev_n = last_rate.get(t.tenant_id, (now, done))
                rate = (done - prev_n) / (now - prev_t) if now - prev_t >= 2 else None
                if rate is not None or t.tenant_id not in last_rate:
                    last_rate[t.tenant_id] = (now, done)
                size = sizes[t.tenant_id]
                note = f"{rate:6.0f} msg/s" if rate is not None else ""
                progress.update(t_camp[t.tenant_id], completed=done, total=size or None,
                                note=note if note else progress.tasks[t_camp[t.tenant_id]].fields["note"])
            progress.update(t_tx, completed=tracker.finished(groups.transactional))
            progress.update(t_odd, completed=tracker.finished(groups.invalid | groups.duplicate))
            run.check_interrupted()
            if pub.error is not None:
                raise DemoError(f"publishing the workload failed: {pub.error}")
            dead = run.sup.dead() if run.sup else []
            if dead:
                d = dead[0]
                raise DemoError(f"{d.spec.name} exited with code {d.proc.returncode} (log {d.log_path}):\n"
                                f"{d.tail()[-1500:]}")
            ids = groups.all()
            done_all = tracker.finished(ids)
            if not pub.is_alive() and pub.published and done_all >= len(ids):
                return True
            # Progress is any result: a run interrupted earlier can leave its commands queued ahead
            # of this run's, and the worker answering those is not a stall.
            moved = (done_all, tracker.results_read)
            if moved != last_moved or pub.is_alive():
                last_moved, last_change = moved, now
            elif now - last_change > run.plan.stall_s:
                stuck = Counter(t for t, tids in groups.campaign.items() for cid in tids if cid not in tracker.final)
                stuck.update("transactional" for cid in groups.transactional if cid not in tracker.final)
                stuck.update("invalid/duplicate" for cid in groups.invalid | groups.duplicate
                             if cid not in tracker.final)
                run.console.print(f"[red]dispatch stalled:[/] no command got a final result for "
                                  f"{run.plan.stall_s:.0f}s; {len(ids) - done_all} still open: "
                                  + ", ".join(f"{k} {v}" for k, v in stuck.most_common())
                                  + f" (see {run.s.log_dir / 'worker.log'})")
                run.summary["stalled"] = dict(stuck)
                return False
            if now > deadline:
                earlier = sum(1 for cid in tracker.seen.copy() if cid not in ids)
                run.console.print(f"[red]timeout:[/] {len(ids) - tracker.finished(ids)} commands have no final "
                                  f"result after {run.plan.timeout_s:.0f}s"
                                  + (f"; meanwhile {earlier} commands from earlier runs were answered (a run "
                                     "interrupted before its commands were sent leaves them queued ahead of this "
                                     "one's; `make clean` starts from empty topics)" if earlier > 0 else ""))
                return False
            time.sleep(0.5)
