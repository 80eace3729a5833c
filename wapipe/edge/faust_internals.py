"""Every private name of Faust, aiokafka and mode that wapipe reaches, in this one module.

No other module of the project reads or replaces a ``_name`` of those libraries
(``tests/unit/test_no_private_library_names.py`` scans the source for it). Each reach is one small
function below, and ``shape_problems`` checks (against the installed classes and their source,
without a broker) that every one of them is still there; ``check_shape`` runs it when a worker is
built (``offset_guard.watch_stalls``; the normaliser requires ``current_event``) and logs ``edge.faust_internals_changed`` for each one that
is gone, and ``tests/unit/test_faust_internals.py`` fails on it, so a library upgrade that changes
one of them is seen before it is shipped. What each does when its internal is gone:

* ``as_current_event`` (``faust.streams._current_event``, no public setter): table writes of a
  ``take_events`` batch would go to the wrong changelog partition, so it raises ``FaustShapeError``;
* ``committed_offset`` (Faust ``Consumer._committed_offset``): None (the offset guard reads the
  broker's committed offsets at assignment anyway);
* ``paused_partitions`` (Faust ``Consumer._paused_partitions``): empty (a paused partition may be
  judged stalled: a needless seek at worst).

The send worker reaches none of them any more: its lanes are read by ``lane_consumer`` (librdkafka),
and the poll-order reaches it needed into Faust's aiokafka fetcher (``fetch_rotation``) are gone.
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from wapipe.log import get_logger

log = get_logger(__name__)


class FaustShapeError(RuntimeError):
    """An internal of Faust/aiokafka/mode that wapipe cannot do without is gone."""


# --- the reaches ---------------------------------------------------------------------------
@contextlib.contextmanager
def as_current_event(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event (``faust.streams.current_event()``) in this task only:
    a table write goes to the changelog partition of that event."""
    import faust.streams

    var = getattr(faust.streams, "_current_event", None)
    if var is None or not hasattr(var, "set"):
        raise FaustShapeError("faust.streams._current_event is gone: table writes cannot name their event")
    token = var.set(weakref.ref(event))
    try:
        yield
    finally:
        var.reset(token)


def committed_offset(consumer: Any, tp: Any) -> int | None:
    """Faust's own record of ``tp``'s committed offset (None: it has none, or keeps none any more)."""
    book = getattr(consumer, "_committed_offset", None)
    return book.get(tp) if book is not None else None


def paused_partitions(consumer: Any) -> frozenset:
    """The partitions Faust has paused (empty when it keeps no such set any more)."""
    return frozenset(getattr(consumer, "_paused_partitions", ()))


# --- the shape they need -------------------------------------------------------------------
def _sets(cls: type, name: str) -> bool:
    """Whether ``cls`` (or a base) declares or assigns ``self.<name>``."""
    for klass in cls.__mro__:
        if name in getattr(klass, "__annotations__", {}) or name in vars(klass):
            return True
        try:
            if f"self.{name} =" in inspect.getsource(klass):
                return True
        except (OSError, TypeError):
            continue
    return False


def shape_problems() -> dict[str, str]:
    """What of the above the installed Faust/aiokafka no longer has (empty: all of it), by key."""
    import faust.streams
    from faust.transport.consumer import Consumer

    checks: dict[str, tuple[str, Callable[[], bool]]] = {
        "current_event": ("faust.streams._current_event is a ContextVar",
                          lambda: hasattr(getattr(faust.streams, "_current_event", None), "set")),
        "committed_offset": ("faust Consumer._committed_offset", lambda: _sets(Consumer, "_committed_offset")),
        "paused_partitions": ("faust Consumer._paused_partitions", lambda: _sets(Consumer, "_paused_partitions")),
    }
    problems = {}
    for key, (what, ok) in checks.items():
        try:
            if not ok():
                problems[key] = what
        except Exception as exc:  # a class or module renamed: that is the finding
            problems[key] = f"{what} ({exc!r})"
    return problems


def check_shape(require: tuple[str, ...] = ()) -> dict[str, str]:
    """``shape_problems``, each logged as an error (the worker then runs with the fallbacks above);
    one of ``require`` (keys, e.g. ``"current_event"``) missing raises ``FaustShapeError``."""
    problems = shape_problems()
    for what in problems.values():
        log.error("edge.faust_internals_changed", missing=what)
    fatal = [problems[k] for k in require if k in problems]
    if fatal:
        raise FaustShapeError(f"this Faust/aiokafka lacks what wapipe needs: {'; '.join(fatal)}")
    return problems
