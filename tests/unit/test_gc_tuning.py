"""The load quiets Python's cycle collector while it plans and delivers, and always gives it back."""

import gc

import pytest

from reverse_etl import gc_tuning


def test_paused_turns_automatic_collection_off_and_back_on_even_after_a_failure():
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_tuning.paused():
        assert not gc.isenabled()
        raise RuntimeError("a chunk failed")
    assert gc.isenabled()


def test_fewer_passes_raises_the_young_threshold_and_restores_it():
    before = gc.get_threshold()
    with gc_tuning.fewer_passes(123_456):
        assert gc.get_threshold() == (123_456, *before[1:])
    assert gc.get_threshold() == before


def test_collect_young_frees_a_cycle_left_by_a_chunk():
    class Node:
        pass

    with gc_tuning.paused():
        gc.collect()  # start from empty young generations
        node = Node()
        node.self = node
        del node
        assert any(type(o) is Node for o in gc.get_objects(generation=0))
        gc_tuning.collect_young()
        assert not any(type(o) is Node for o in gc.get_objects())
