"""The layer contracts (pyproject.toml, [tool.importlinter]) hold, and are really checked: the
same contracts on a copy of the code with one import against them are broken."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("wapipe", "processors", "producers", "sinks", "connectors")
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy, not the editable install
    return subprocess.run([str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def copy(tmp_path) -> Path:
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    return tmp_path


@pytest.mark.parametrize("module, line, says", [
    ("wapipe/topics.py", "from wapipe.app import cli", "wapipe.topics -> wapipe.app.cli"),
    ("wapipe/config.py", "import wapipe.tenants.models", "wapipe.config -> wapipe.tenants.models"),
    ("sinks/rows.py", "from processors.normalise import status", "sinks.rows -> processors.normalise.status"),
    ("connectors/meta/client.py", "from wapipe.privacy import kek", "connectors.meta.client -> wapipe.privacy.kek"),
])
def test_an_import_against_the_layers_is_caught(copy, module, line, says):
    assert lint(copy).returncode == 0  # the copy as it is: kept
    path = copy / module
    path.write_text(path.read_text() + f"\n{line}  # against the layers\n")
    p = lint(copy)
    assert p.returncode == 1, p.stdout + p.stderr
    assert says in p.stdout, p.stdout


def test_every_package_has_a_layer():
    """A new module of wapipe (or a new top-level package) must be placed in a layer, or the
    contracts say nothing about it."""
    import pkgutil
    import tomllib

    import wapipe

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    placed = {name.strip().strip("()") for layer in layers for name in layer.replace("|", ":").split(":")}
    children = {f"wapipe.{m.name}" for m in pkgutil.iter_modules(wapipe.__path__)} - {"wapipe.__main__"}
    assert children - placed == set()
    assert {"processors", "producers", "sinks", "connectors"} <= placed
    assert set(config["root_packages"]) == {"wapipe", *{p for p in placed if "." not in p}}
