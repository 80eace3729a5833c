"""The edge's reaches into Faust/aiokafka/mode (wapipe/edge/faust_internals.py) against the installed
libraries: each one's shape is checked, and where it can run without a broker, it runs on the real
objects. A library upgrade that renames one of them fails here."""

from __future__ import annotations

import asyncio

import faust
import pytest
from faust.types import TP

from wapipe.edge import faust_internals as fi


def test_the_installed_libraries_have_every_internal_the_edge_reaches():
    assert fi.shape_problems() == {}
    assert fi.check_shape(require=("current_event",)) == {}


@pytest.mark.parametrize("module, cls, name, key", [
    ("faust.streams", None, "_current_event", "current_event"),
])
def test_a_missing_internal_is_reported_by_name(monkeypatch, module, cls, name, key):
    import importlib

    target = importlib.import_module(module)
    monkeypatch.delattr(getattr(target, cls) if cls else target, name)
    assert list(fi.shape_problems()) == [key]
    if key == "current_event":
        with pytest.raises(fi.FaustShapeError, match="_current_event"):
            fi.check_shape(require=("current_event",))
        with pytest.raises(fi.FaustShapeError):
            with fi.as_current_event(object()):
                pass
    else:
        assert list(fi.check_shape(require=("current_event",))) == [key]  # logged, not fatal


def test_as_current_event_is_fausts_current_event_inside_only():
    from faust.streams import current_event

    class Event:
        pass

    event = Event()

    async def main() -> tuple[object | None, ...]:
        before = current_event()
        with fi.as_current_event(event):
            inside = current_event()
            in_other_task = await asyncio.create_task(_current())
        return before, inside, in_other_task, current_event()

    async def _current() -> object | None:
        return current_event()

    before, inside, in_other_task, after = asyncio.run(main())
    assert (before, inside, after) == (None, event, None)
    assert in_other_task is event  # a task started inside copies the context, as Faust's own does


@pytest.fixture
def consumer():
    app = faust.App("edge-internals-test", broker="kafka://127.0.0.1:9", web_enabled=False)
    return app.consumer  # built, never started: no broker needed


def test_paused_partitions_follow_fausts_public_pause_and_resume(consumer):
    tp = TP("t", 0)
    assert fi.paused_partitions(consumer) == frozenset()
    consumer.pause_partitions({tp})
    assert fi.paused_partitions(consumer) == {tp}
    consumer.resume_partitions({tp})
    assert fi.paused_partitions(consumer) == frozenset()


def test_committed_offset_reads_fausts_own_book(consumer):
    tp = TP("t", 1)
    assert fi.committed_offset(consumer, tp) is None
    consumer._committed_offset[tp] = 7  # the book a real consumer keeps, as Faust writes it
    assert fi.committed_offset(consumer, tp) == 7
