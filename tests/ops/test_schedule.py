"""The order in which the parallel kernels hand out chunks of rows (ops/_schedule.py)."""

import numba
import numpy as np
import pytest

from ppp_dist.ops._schedule import chunk_order, chunk_size, schedule, spread


@pytest.mark.parametrize("n, group", [(1, 1), (7, 1), (100, 1), (100, 8), (341, 8), (5, 8)])
def test_spread_is_a_permutation_balanced_over_the_range(n, group):
    order = spread(n, group, 2)
    assert sorted(order.tolist()) == list(range(n))
    if group > 1 and n % group == 0:  # runs of `group` consecutive items stay together
        assert (np.diff(order.reshape(-1, group), axis=1) == 1).all()
    if n >= 100:  # each thread's contiguous half of the iterations covers both halves of the rows evenly
        first = order[: n // 2]
        share = (first < n // 2).mean()
        assert 0.4 <= share <= 0.6, share


def test_one_thread_keeps_the_natural_order():
    assert spread(50, 8, 1).tolist() == list(range(50))


def test_chunk_size_leaves_every_thread_work():
    threads = numba.get_num_threads()
    assert chunk_size(10**6) == 64
    assert chunk_size(0) == 1
    small = 40 * threads
    assert chunk_size(small) == max(1, small // (16 * threads))
    order = chunk_order(1000, chunk_size(1000))
    assert sorted(order.tolist()) == list(range(-(-1000 // chunk_size(1000))))
    chunk, order = schedule(1000)
    assert chunk == chunk_size(1000) and order.tolist() == chunk_order(1000, chunk).tolist()
