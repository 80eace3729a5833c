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
  judged stalled: a needless seek at worst);
* ``fetch_internals`` / ``buffered`` / ``set_fetch_wait`` / ``replace_fetch_records`` (Faust's
  consumer thread ``_thread._fetch_records``, its aiokafka consumer ``_consumer._fetcher``, the
  fetcher's ``_records``, ``_fetch_max_wait_ms`` and ``_prefetch_backoff``): None, and the worker
  keeps Faust's own poll order (``fetch_rotation.serve_partitions_in_turn`` logs it);
* ``wrap_wait_next_records`` (Faust ``Consumer._wait_next_records``): False, and ``PollPauses``
  pauses at once (Faust's own behaviour).
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class FetchInternals:
    """Faust's consumer thread (whose ``_fetch_records`` a poll calls) and aiokafka's fetcher."""

    thread: Any
    fetch_records: Callable[..., Awaitable[dict]]
    fetcher: Any


def fetch_internals(faust_consumer: Any) -> FetchInternals | None:
    """The parts of a started Faust aiokafka consumer that decide the poll order; None when the
    driver is not the one this was written against."""
    thread = getattr(faust_consumer, "_thread", None)
    fetch = getattr(thread, "_fetch_records", None)
    fetcher = getattr(getattr(thread, "_consumer", None), "_fetcher", None)
    if fetch is None or fetcher is None or not hasattr(fetcher, "_fetch_max_wait_ms") \
            or not hasattr(fetcher, "_records") or not hasattr(fetcher, "_prefetch_backoff"):
        return None
    return FetchInternals(thread, fetch, fetcher)


def fetcher_of(aiokafka_consumer: Any) -> Any:
    """The fetcher of an aiokafka consumer (the one ``_fetch_records`` is called with)."""
    return aiokafka_consumer._fetcher


def buffered(fetcher: Any) -> Any:
    """The fetcher's buffer: an insertion-ordered map partition → fetched records, served in order."""
    return fetcher._records


def set_fetch_wait(fetcher: Any, max_wait_ms: int, prefetch_backoff_s: float) -> None:
    """How long the broker may hold a fetch, and how long fresh data holds back the next one."""
    fetcher._fetch_max_wait_ms = max_wait_ms
    fetcher._prefetch_backoff = prefetch_backoff_s


def replace_fetch_records(thread: Any, fetch_records: Callable[..., Awaitable[dict]]) -> None:
    thread._fetch_records = fetch_records


def wrap_wait_next_records(faust_consumer: Any, before: Callable[[], None]) -> bool:
    """Call ``before()`` each time the consumer is about to wait for its next poll (between two
    polls, never inside one). False when the consumer has no such step any more."""
    wait_next = getattr(faust_consumer, "_wait_next_records", None)
    if wait_next is None:
        return False

    async def wait_next_records(timeout: float) -> Any:
        before()
        return await wait_next(timeout)

    faust_consumer._wait_next_records = wait_next_records
    return True


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


def _coroutine_with(fn: Any, params: tuple[str, ...]) -> bool:
    return inspect.iscoroutinefunction(fn) and all(p in inspect.signature(fn).parameters for p in params)


def shape_problems() -> dict[str, str]:
    """What of the above the installed Faust/aiokafka no longer has (empty: all of it), by key."""
    import faust.streams
    from aiokafka.consumer.consumer import AIOKafkaConsumer
    from aiokafka.consumer.fetcher import Fetcher
    from faust.transport.consumer import Consumer, ThreadDelegateConsumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    checks: dict[str, tuple[str, Callable[[], bool]]] = {
        "current_event": ("faust.streams._current_event is a ContextVar",
                          lambda: hasattr(getattr(faust.streams, "_current_event", None), "set")),
        "committed_offset": ("faust Consumer._committed_offset", lambda: _sets(Consumer, "_committed_offset")),
        "paused_partitions": ("faust Consumer._paused_partitions", lambda: _sets(Consumer, "_paused_partitions")),
        "wait_next_records": ("faust Consumer._wait_next_records(timeout)",
                              lambda: _coroutine_with(getattr(Consumer, "_wait_next_records", None), ("timeout",))),
        "thread": ("faust ThreadDelegateConsumer._thread", lambda: _sets(ThreadDelegateConsumer, "_thread")),
        "consumer": ("faust AIOKafkaConsumerThread._consumer", lambda: _sets(AIOKafkaConsumerThread, "_consumer")),
        "fetch_records": ("faust AIOKafkaConsumerThread._fetch_records(consumer, active_partitions, timeout, "
                          "max_records)",
                          lambda: _coroutine_with(getattr(AIOKafkaConsumerThread, "_fetch_records", None),
                                                  ("consumer", "active_partitions", "timeout", "max_records"))),
        "fetcher": ("aiokafka AIOKafkaConsumer._fetcher", lambda: _sets(AIOKafkaConsumer, "_fetcher")),
        "records": ("aiokafka Fetcher._records", lambda: _sets(Fetcher, "_records")),
        "fetch_max_wait_ms": ("aiokafka Fetcher._fetch_max_wait_ms", lambda: _sets(Fetcher, "_fetch_max_wait_ms")),
        "prefetch_backoff": ("aiokafka Fetcher._prefetch_backoff", lambda: _sets(Fetcher, "_prefetch_backoff")),
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
