"""`TORGHUT_GC_FREEZE`: the worker moves its start-up objects out of the collector's reach once
its context is built (`streams.app.freeze_startup_objects`)."""

from __future__ import annotations

import gc

from streams.app import freeze_startup_objects
from streams.settings import Settings


def test_start_up_objects_are_frozen_and_later_garbage_is_still_collected() -> None:
    gc.unfreeze()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 10_000  # the imported modules and their objects

        class Cycle:
            other: object = None

        a, b = Cycle(), Cycle()
        a.other, b.other = b, a  # a cycle made after the freeze: the collector still sees it
        collected = gc.collect()
        del a, b
        assert gc.collect() >= 2 and collected >= 0
    finally:
        gc.unfreeze()


def test_the_setting_is_on_by_default_and_can_be_switched_off() -> None:
    assert Settings().gc_freeze is True
    assert Settings(TORGHUT_GC_FREEZE=False).gc_freeze is False  # type: ignore[call-arg]
