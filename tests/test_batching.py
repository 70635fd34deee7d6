"""The one size-grouping batcher behind ``model.infer_batch``, ``predict`` and the temporal analysis."""

from __future__ import annotations

import pytest

from clip2depth.models.infer import size_batches

SIZES = ["A", "A", "B", "A", "B", "B", "A"]  # item i has size SIZES[i]


def _batches(**kwargs: object) -> list[list[int]]:
    return list(size_batches(range(len(SIZES)), size=lambda i: (SIZES[i],), **kwargs))


def test_pools_fill_per_size_and_flush_at_the_end() -> None:
    assert _batches(batch_size=2) == [[0, 1], [2, 4], [3, 6], [5]]


def test_in_order_batches_break_at_a_size_change() -> None:
    batches = _batches(batch_size=2, in_order=True)

    assert batches == [[0, 1], [2], [3], [4, 5], [6]]
    assert [i for batch in batches for i in batch] == list(range(len(SIZES)))


def test_at_most_four_batches_of_items_wait_then_the_oldest_pool_goes() -> None:
    held: list[int] = []  # items pulled from the stream but not yet handed out in a batch
    peak = 0

    def stream():
        nonlocal peak
        for i in range(40):
            held.append(i)
            peak = max(peak, len(held))
            yield i

    batches = []
    for batch in size_batches(stream(), size=lambda i: (i % 7,), batch_size=3):  # 7 sizes in turn: pools fill slowly
        for i in batch:
            held.remove(i)
        batches.append(batch)

    assert peak == 12  # 4 × batch_size
    assert batches[:3] == [[0, 7], [1, 8], [2, 9]]  # the oldest pools go early, before they are full
    assert sorted(i for b in batches for i in b) == list(range(40))


def test_items_are_pulled_lazily() -> None:
    pulled: list[int] = []

    def stream():
        for i in range(10):
            pulled.append(i)
            yield i

    first = next(size_batches(stream(), size=lambda i: (1,), batch_size=3))

    assert first == [0, 1, 2] and pulled == [0, 1, 2]
    with pytest.raises(ValueError, match="at least 1"):
        next(size_batches([1], size=lambda i: (1,), batch_size=0))
