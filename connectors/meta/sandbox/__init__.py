"""The Meta sandbox: a real HTTP server that behaves like the WhatsApp Cloud API (the one simulated
part of wapipe). See docs/sandbox.md.

* ``Sandbox`` — the simulated behaviour; ``create_app(sandbox)`` — its ASGI app.
* ``SandboxThread`` / ``SandboxProcess`` — run it in a background thread or as a subprocess.
* ``SandboxControl`` — sync client of the control API under ``/_sandbox``.
* ``Seed``, ``SandboxConfig``, ``Faults`` … — the boundary models.
"""

from connectors.meta.sandbox.app import create_app
from connectors.meta.sandbox.control_client import SandboxControl
from connectors.meta.sandbox.engine import Sandbox
from connectors.meta.sandbox.models import (AppSeed, BusinessSeed, Dist, Faults, Habits, Limits, NumberSeed,
                                            SandboxConfig, Seed, TemplateSeed, TokenSeed, WabaSeed, WebhookPolicy)
from connectors.meta.sandbox.server import SandboxProcess, SandboxThread

__all__ = [
    "AppSeed", "BusinessSeed", "Dist", "Faults", "Habits", "Limits", "NumberSeed", "Sandbox", "SandboxConfig",
    "SandboxControl", "SandboxProcess", "SandboxThread", "Seed", "TemplateSeed", "TokenSeed", "WabaSeed",
    "WebhookPolicy", "create_app",
]
