"""The one size-grouping batcher behind ``model.infer_batch``, ``predict`` and the temporal analysis."""

from __future__ import annotations

import pytest

from clip2depth.models.infer import size_batches
from clip2depth.training.datasets import EpochBatchSampler

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


def _order(epoch: int, *, rank: int = 0, world: int = 1, start_batch: int = 0) -> list[int]:
    sampler = EpochBatchSampler(12, seed=3, epoch=epoch, global_batch=4, rank=rank, world=world,
                                start_batch=start_batch)
    keys = list(sampler)
    assert all(e == epoch for e, _ in keys) and len(keys) == len(sampler)
    return [index for _, index in keys]


def test_training_order_is_a_new_permutation_each_epoch_and_a_pure_function_of_it() -> None:
    orders = [_order(epoch) for epoch in range(3)]

    assert all(sorted(order) == list(range(12)) for order in orders)  # every sample once per epoch
    assert len({tuple(order) for order in orders}) == 3
    assert _order(1) == orders[1]
    assert _order(1, start_batch=2) == orders[1][8:]  # a resumed epoch continues where it stopped


def test_data_parallel_ranks_split_each_global_batch_in_order() -> None:
    single = _order(0)
    ranks = [_order(0, rank=r, world=2) for r in range(2)]

    for b in range(3):  # global batch b is rank 0's two samples, then rank 1's
        assert ranks[0][2 * b : 2 * b + 2] + ranks[1][2 * b : 2 * b + 2] == single[4 * b : 4 * b + 4]
