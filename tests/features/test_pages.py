"""The retrieval's numpy passes run without numpy's huge-page advice, and the advice is
restored when the last such pass in the process ends, however they nest or overlap."""

from __future__ import annotations

import threading

import pytest

from kiln.features import _pages
from kiln.features._pages import ordinary_pages


def _advice() -> bool:
    assert _pages._set is not None
    before = _pages._set(False)
    _pages._set(before)
    return before


@pytest.fixture(autouse=True)
def _advice_on() -> object:
    if _pages._set is None:
        pytest.skip("this numpy has no huge-page switch")
    before = _pages._set(True)
    yield
    _pages._set(before)


def test_off_inside_and_restored_after_nesting() -> None:
    with ordinary_pages():
        assert _advice() is False
        with ordinary_pages():
            assert _advice() is False
        assert _advice() is False  # the outer block still runs
    assert _advice() is True


def test_overlapping_threads_restore_it_once_both_are_done() -> None:
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with ordinary_pages():
            inside.set()
            leave.wait(5)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(5)
    with ordinary_pages():
        assert _advice() is False
    assert _advice() is False  # the other thread's pass has not ended
    leave.set()
    thread.join(5)
    assert _advice() is True


def test_restored_when_the_pass_fails() -> None:
    with pytest.raises(RuntimeError), ordinary_pages():
        raise RuntimeError("a failing pass")
    assert _advice() is True
