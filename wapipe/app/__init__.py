"""The app layer: the ``wapipe`` CLI, the demo, the service supervisor and the local stack.

It sits on top of everything and nothing below imports it (the import-linter contracts in
pyproject.toml); ``python -m wapipe`` and the ``wapipe`` script are its entry points."""
