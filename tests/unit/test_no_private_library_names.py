"""No module of the project reaches a private name of Faust, aiokafka or mode, except the edge's
``wapipe/edge/faust_internals.py`` (issue 22). Read from the source (AST), in the known ways:

* ``from faust.x import _name`` (or aiokafka, mode);
* ``obj._name`` on anything but ``self``/``cls``, where ``_name`` is a private name those libraries
  define (a ``self._name`` they assign, a ``_name`` function, method or module/class attribute) and
  our own code does not, or one of the names we used to reach (``REACHED``) whatever defines it;
* ``getattr``/``setattr``/``hasattr``/``delattr(obj, "_name")`` with such a name.
"""

from __future__ import annotations

import ast
import importlib
from functools import lru_cache
from pathlib import Path

import pytest

from wapipe.config import REPO_ROOT

LIBRARIES = ("faust", "aiokafka", "mode")
SOURCES = ("wapipe", "processors", "producers", "sinks", "connectors", "bench")
ALLOWED = REPO_ROOT / "wapipe" / "edge" / "faust_internals.py"
# Reached before issue 22 (offset_guard, fetch_rotation, normalise, send views): flagged even where
# a class of ours happens to define the same name.
REACHED = frozenset({"_committed_offset", "_paused_partitions", "_thread", "_fetch_records", "_consumer",
                     "_fetcher", "_records", "_wait_next_records", "_fetch_max_wait_ms", "_prefetch_backoff",
                     "_current_event", "_client", "_coordinator", "_subscriptions", "_ensure_consumer"})
ATTR_FUNCS = frozenset({"getattr", "setattr", "hasattr", "delattr"})


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def defined_private_names(tree: ast.AST) -> set[str]:
    """Private names a module defines: ``self._x =``, ``def _x``, ``_x =`` / ``_x: T`` at module or class level."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for t in targets:
            for leaf in ast.walk(t):
                if isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Name) and leaf.value.id == "self":
                    out.add(leaf.attr)
                elif isinstance(leaf, ast.Name):
                    out.add(leaf.id)
    return {n for n in out if _private(n)}


def _parse(path: Path) -> ast.AST | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError):
        return None


@lru_cache(maxsize=1)
def library_private_names() -> frozenset[str]:
    names: set[str] = set()
    for lib in LIBRARIES:
        folder = Path(importlib.import_module(lib).__file__).parent  # faust's lazy module has no __spec__
        for path in folder.rglob("*.py"):
            tree = _parse(path)
            if tree is not None:
                names |= defined_private_names(tree)
    return frozenset(names)


def project_files() -> list[Path]:
    return sorted(p for folder in SOURCES for p in (REPO_ROOT / folder).rglob("*.py"))


@lru_cache(maxsize=1)
def own_private_names() -> frozenset[str]:
    names: set[str] = set()
    for path in project_files():
        tree = _parse(path)
        if tree is not None:
            names |= defined_private_names(tree)
    return frozenset(names)


def reaches(tree: ast.AST, lib_names: frozenset[str], own_names: frozenset[str]) -> list[tuple[int, str]]:
    """Where ``tree`` reaches a private name of the libraries: (line, what)."""

    def theirs(name: str) -> bool:
        return _private(name) and (name in REACHED or (name in lib_names and name not in own_names))

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
            for alias in node.names:
                if _private(alias.name):
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in LIBRARIES and any(_private(p) for p in alias.name.split(".")):
                    found.append((node.lineno, f"import {alias.name}"))
        elif isinstance(node, ast.Attribute) and theirs(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append((node.lineno, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ATTR_FUNCS
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str) and theirs(node.args[1].value)):
            if not (isinstance(node.args[0], ast.Name) and node.args[0].id in ("self", "cls")):
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_module_outside_the_edge_reaches_a_private_name_of_faust_aiokafka_or_mode():
    lib, own = library_private_names(), own_private_names()
    offenders = []
    for path in project_files():
        if path == ALLOWED:
            continue
        tree = _parse(path)
        assert tree is not None, f"{path} does not parse"
        offenders += [f"{path.relative_to(REPO_ROOT)}:{line}: {what}" for line, what in reaches(tree, lib, own)]
    assert not offenders, "private names of faust/aiokafka/mode outside wapipe/edge/faust_internals.py:\n" + \
        "\n".join(offenders)


def test_the_allowed_module_is_where_the_reaches_are():
    """The exemption is not empty: the scan sees the reaches in faust_internals (it would see them anywhere)."""
    found = {what for _, what in reaches(_parse(ALLOWED), library_private_names(), own_private_names())}
    assert {"getattr(consumer, '_paused_partitions', ())", "getattr(consumer, '_committed_offset', None)"} <= found


@pytest.mark.parametrize("source", [
    "from faust.streams import _current_event",
    "from aiokafka.consumer.fetcher import _SOMETHING as x",
    "from mode.utils.locks import _private_thing",
    "import faust._private",
    "x = consumer._client.fetch_all_metadata()",
    "seen = app.consumer._paused_partitions",
    "fetcher._fetch_max_wait_ms = 50",
    "c = getattr(consumer, '_committed_offset', {})",
    "setattr(thread, '_fetch_records', f)",
    "import faust.streams\nfaust.streams._current_event.set(None)",
])
def test_each_known_way_is_caught(source):
    assert reaches(ast.parse(source), library_private_names(), own_private_names()), source


@pytest.mark.parametrize("source", [
    "self._client = None",
    "x = cls._cache",
    "from faust.streams import current_event",
    "from confluent_kafka import KafkaError\ncode = KafkaError._PARTITION_EOF",
    "os._exit(1)",
])
def test_what_is_ours_or_public_is_not_flagged(source):
    assert not reaches(ast.parse(source), library_private_names(), own_private_names()), source
