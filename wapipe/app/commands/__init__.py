"""The commands of each area (``wapipe <area> ...``), registered by ``wapipe.app.cli``."""
