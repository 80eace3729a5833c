"""``wapipe health``: ask the services' probes whether they are alive (or ready)."""

from __future__ import annotations

import typer

from wapipe.app.commands.output import console, fail
from wapipe.config import Settings


def health_command(
    services: list[str] = typer.Argument(None, help="services to check (default: every one running here)"),
    url: str = typer.Option(None, "--url", help="a probe's base URL instead (a container's healthcheck)"),
    ready: bool = typer.Option(False, "--ready", help="ask /readyz (can it work now?) instead of /healthz"),
) -> None:
    """Ask the services' probes whether they are alive (or ready); exit 1 if any is not."""
    import json

    import httpx

    from wapipe.probe import probe_file

    s = Settings()
    if url:
        targets = {url: url}
    else:
        folder = s.state_dir / "probes"
        names = services or sorted(p.stem for p in folder.glob("*.json"))
        if not names:
            fail(f"no service probe found in {folder}: is anything running here?")
        targets = {}
        for name in names:
            try:
                targets[name] = json.loads(probe_file(s, name).read_text())["url"]
            except (OSError, ValueError, KeyError):
                targets[name] = ""
    path = "/readyz" if ready else "/healthz"
    bad = 0
    for name, base in targets.items():
        if not base:
            console.print(f"{name}: [red]not running[/] (no probe file)")
            bad += 1
            continue
        try:
            r = httpx.get(base.rstrip("/") + path, timeout=5)
            ok, text = r.status_code == 200, r.text.strip()
        except httpx.HTTPError as exc:
            ok, text = False, f"no answer ({type(exc).__name__})"
        bad += not ok
        console.print(f"{name}: {'[green]ok[/]' if ok else '[red]' + text + '[/]'}")
    if bad:
        raise typer.Exit(1)
