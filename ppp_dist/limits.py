"""What a volume may ask for: refused before a run when its shape, block count or memory is absurd.

A zarr array's shape is metadata: a 24 KB store may declare 10^7 x 10^7 voxels. Such a volume would end deep
inside a run in a MemoryError (a list of 10^10 blocks, or one whole-volume read), or keep ``plan`` busy for
minutes. These checks are O(1) (arithmetic on the shape, never a loop over blocks) and run before anything is
written (``Preflight``) and in ``plan``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ppp_dist.errors import InputDataError

MAX_VOXELS = 2 ** 48  # spatial voxels of one volume (a 65536^3 volume): ids, offsets and counts stay in int64
MAX_BLOCKS = 10_000_000  # blocks of one blockwise stage (ledger rows, dask tasks, the driver's block list)


def grid_blocks(spatial: Sequence[int], block: Sequence[int]) -> int:
    """Blocks of ``block`` (clipped to the volume) that tile ``spatial``: O(1), no block is made."""
    return math.prod(-(-int(s) // max(1, min(int(b), int(s)))) for s, b in zip(spatial, block))


def check_volume(spatial: Sequence[int], what: str, block: Sequence[int] | None = None,
                 block_key: str = "[vote] block_shape") -> None:
    """InputDataError if the volume ``what`` of ``spatial`` (Z, Y, X) voxels is too large to process, or
    would be cut into more than :data:`MAX_BLOCKS` blocks of ``block``."""
    voxels = math.prod(int(s) for s in spatial)
    if voxels > MAX_VOXELS:
        raise InputDataError(f"{what} declares {tuple(int(s) for s in spatial)} = {voxels:.3g} voxels, more than "
                             f"ppp_dist handles ({MAX_VOXELS:.3g}); check its zarr metadata (a damaged or crafted "
                             "shape?) or process a part of it")
    if block is not None:
        blocks = grid_blocks(spatial, block)
        if blocks > MAX_BLOCKS:
            raise InputDataError(f"{what} of shape {tuple(int(s) for s in spatial)} would be cut into {blocks:,} "
                                 f"blocks of {tuple(int(b) for b in block)}, more than {MAX_BLOCKS:,}; raise "
                                 f"{block_key} (or check the volume's zarr metadata)")


def available_memory() -> int:
    """Bytes of memory this machine has (total, not free: other processes come and go)."""
    import psutil

    return int(psutil.virtual_memory().total)


def check_memory(nbytes: int, what: str, fix: str) -> None:
    """InputDataError if ``what`` needs more than this machine's memory (``fix`` says what to do instead)."""
    have = available_memory()
    if nbytes > have:
        raise InputDataError(f"{what} needs about {nbytes / 2 ** 30:,.1f} GiB of memory but this machine has "
                             f"{have / 2 ** 30:,.1f} GiB; {fix}")


__all__ = ["MAX_BLOCKS", "MAX_VOXELS", "available_memory", "check_memory", "check_volume", "grid_blocks"]
