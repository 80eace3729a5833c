"""``python -m connectors.meta.sandbox`` — the same as ``wapipe sandbox`` (used by SandboxProcess)."""

from connectors.meta.sandbox.cli import main

main()
