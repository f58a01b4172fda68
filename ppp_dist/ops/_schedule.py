"""Order in which the parallel kernels hand out their rows to the threads.

numba's ``prange`` gives each thread one contiguous share of the iterations (``parallel_chunksize``
changes nothing with the omp layer), so where the cost per row drifts across a volume — denser
foreground, more patches after a row's first — one thread finishes long before the other. The kernels
therefore loop over chunks of rows and take the chunks in a spread order. Only the order of
independent iterations changes, never a result.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit


@njit(cache=True)
def spread(n, group, threads):
    """A permutation of range(n) that keeps runs of ``group`` consecutive items together and orders the
    runs so that every contiguous part of the permutation is spread over the whole range (golden-ratio
    sequence; runs keep most of the cache locality of neighbouring rows). One thread: the identity."""
    if threads == 1:
        return np.arange(n)
    runs = (n + group - 1) // group
    key = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        key[i] = (i * 0.6180339887498949) % 1.0
    out = np.empty(n, dtype=np.int64)
    k = 0
    for g in np.argsort(key, kind="mergesort"):
        for i in range(g * group, min(n, (g + 1) * group)):
            out[k] = i
            k += 1
    return out


def chunk_size(n: int, largest: int = 64) -> int:
    """Rows per chunk: ``largest``, fewer where that would leave fewer than 16 chunks per thread."""
    return max(1, min(largest, n // (16 * numba.get_num_threads())))


def chunk_order(n: int, chunk: int) -> np.ndarray:
    """The chunks of ``chunk`` rows out of n in the order the threads take them: runs of up to 8 chunks,
    at least 16 runs per thread where there are enough chunks."""
    threads = numba.get_num_threads()
    nchunks = -(-n // chunk)
    return spread(nchunks, max(1, min(8, nchunks // (16 * threads))), threads)


def schedule(n: int, largest: int = 64) -> tuple[int, np.ndarray]:
    """(rows per chunk, chunk order) for a kernel over n rows: the two arguments the kernels take."""
    chunk = chunk_size(n, largest)
    return chunk, chunk_order(n, chunk)
