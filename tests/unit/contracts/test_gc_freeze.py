"""`TORGHUT_GC_FREEZE`: the worker moves its start-up objects out of the collector's reach once
its context is built (`streams.app.freeze_startup_objects`)."""

from __future__ import annotations

import gc

from streams.app import RecoveryFreeze, freeze_startup_objects, tune_collector
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


def test_the_first_recovery_freezes_once_more_and_later_ones_do_not() -> None:
    gc.unfreeze()
    try:
        freeze = RecoveryFreeze(enabled=True)
        before = gc.get_freeze_count()
        survivor = [object() for _ in range(1000)]  # alive once the first recovery is done
        assert freeze.recovered() is True
        assert gc.get_freeze_count() >= before + len(survivor)
        assert freeze.recovered() is False  # a rebalance later: nothing frozen again
        frozen = gc.get_freeze_count()
        later = [object() for _ in range(1000)]
        freeze.recovered()
        assert gc.get_freeze_count() == frozen and later
    finally:
        gc.unfreeze()


def test_switched_off_no_recovery_freezes() -> None:
    gc.unfreeze()
    try:
        freeze = RecoveryFreeze(enabled=False)
        assert freeze.recovered() is False and gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


def test_the_young_generation_threshold_is_set_and_zero_keeps_pythons() -> None:
    saved = gc.get_threshold()
    gc.unfreeze()
    try:
        gc.set_threshold(700, 10, 10)
        tune_collector(Settings(TORGHUT_GC_FREEZE=False))  # type: ignore[call-arg]
        assert gc.get_threshold() == (Settings().gc_gen0_threshold, 10, 10)
        assert Settings().gc_gen0_threshold > 700 and gc.get_freeze_count() == 0
        gc.set_threshold(700, 10, 10)
        off = Settings(TORGHUT_GC_GEN0_THRESHOLD=0, TORGHUT_GC_FREEZE=False)  # type: ignore[call-arg]
        tune_collector(off)
        assert gc.get_threshold() == (700, 10, 10)
        tune_collector(Settings(TORGHUT_GC_GEN0_THRESHOLD=0))  # type: ignore[call-arg]
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()
