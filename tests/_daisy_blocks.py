"""daisy 2 as a second description of our block grids and of the order of chained stages (a test helper).

It lives with the tests because only ``tests/test_daisy_blocks.py`` uses it: dask runs the blocks, and
daisy has no job at run time (docs/geometry.md, section "daisy"), so daisy is a test dependency (the
``test`` extra), not a dependency of ``ppp_dist``.

What this module is for: express a ``geometry.BlockGrid`` as a daisy task (``total_roi``, template
``read_roi`` / ``write_roi``, ``fit="shrink"``), let daisy enumerate the blocks and the block-level
dependencies between chained stages, and map them back to our block ids. The tests check that daisy and
``geometry`` agree, so daisy is an independent cross-check of the tiling and of which upstream blocks a
downstream block needs. Nothing here runs blocks: the runner, the ledger and dask do that (docs/geometry.md,
section "daisy").

The correspondence (all coordinates are voxels; daisy's ROIs are ``funlib.geometry.Roi``)::

    total_roi  = grid.roi grown by the halo        (may leave the volume: daisy has no notion of a volume)
    write_roi  = Roi(halo, block_shape)            (template; daisy shifts it by multiples of block_shape)
    read_roi   = Roi(0, block_shape + 2 * halo)
    fit        = "shrink"                          (the last block per axis is cut to the ROI end, as ours)

daisy's write ROIs then equal our write boxes exactly, and daisy's read ROIs equal our
``read_box_unclipped`` (write box grown by the halo); our ``read_box`` is that clipped to the volume.

Only ``daisy.v2`` (the native API, no 1.x shims) is used, imported lazily (a test that does not need it
runs without it). Tested with daisy 2.0.0 (``DAISY_TESTED``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ppp_dist.geometry import BlockGrid, Box

DAISY_TESTED = "2.0.0"
FIT = "shrink"


def _daisy() -> Any:
    import daisy.v2 as daisy

    return daisy


def _roi(box: Box) -> Any:
    from funlib.geometry import Roi

    return Roi(box.begin, box.shape)


def _box(roi: Any) -> Box:
    return Box(tuple(roi.begin), tuple(roi.end))


@dataclass(frozen=True)
class DaisyRois:
    """daisy's description of a ``BlockGrid``: the arguments of ``daisy.v2.Task`` that define blocks.

    ``total_roi`` is the total *read* region (daisy derives the total write region by shrinking it by the
    context ``write_roi.begin - read_roi.begin`` on each side); ``read_roi`` / ``write_roi`` are the
    templates of block 0. All three are ``funlib.geometry.Roi``.
    """

    total_roi: Any
    read_roi: Any
    write_roi: Any
    fit: str = FIT


def daisy_task_rois(grid: BlockGrid) -> DaisyRois:
    """The daisy ROIs (``total_roi``, ``read_roi``, ``write_roi``, ``fit``) that tile like ``grid``."""
    from funlib.geometry import Roi

    halo, block = grid.halo, grid.block_shape
    return DaisyRois(total_roi=_roi(grid.roi.grow(halo)),
                     read_roi=Roi((0,) * grid.ndim, tuple(b + 2 * h for b, h in zip(block, halo))),
                     write_roi=Roi(halo, block))


def to_daisy_task(grid: BlockGrid, task_id: str, *, read_write_conflict: bool = False) -> Any:
    """A ``daisy.v2.Task`` with ``grid``'s blocks and no process function (for ``Pipeline`` / ``Scheduler``).

    ``read_write_conflict=False`` because no stage of ours reads what its own neighbours write; ``True``
    makes daisy split the blocks into levels (see ``conflict_waves``).
    """
    r = daisy_task_rois(grid)
    return _daisy().Task(task_id, r.total_roi, r.read_roi, r.write_roi, process_function=None,
                         read_write_conflict=read_write_conflict, fit=r.fit)


def daisy_graph(grid: BlockGrid, task_id: str = "blocks", *, read_write_conflict: bool = False) -> Any:
    """daisy's ``BlockwiseDependencyGraph`` for ``grid`` (blocks and intra-task conflict levels)."""
    r = daisy_task_rois(grid)
    return _daisy().BlockwiseDependencyGraph(task_id, r.read_roi, r.write_roi, read_write_conflict, r.fit,
                                             total_read_roi=r.total_roi)


def our_block_id(grid: BlockGrid, block: Any) -> int:
    """Our id of a daisy block of ``grid``'s task: the owner of its write ROI's first voxel."""
    return grid.owner_of(tuple(block.write_roi.begin))


@dataclass(frozen=True)
class DaisyBlock:
    """One block as daisy enumerates it, with our id.

    ``read_box`` is daisy's read ROI, which equals our ``read_box_unclipped`` (not clipped to the volume).
    """

    block_id: int
    daisy_id: int
    write_box: Box
    read_box: Box


def to_daisy_blocks(grid: BlockGrid, task_id: str = "blocks") -> list[DaisyBlock]:
    """daisy's enumeration of ``grid``'s blocks, sorted by our block id."""
    blocks = [b for b, _ in daisy_graph(grid, task_id).enumerate_all_dependencies()]
    writes = [_box(b.write_roi) for b in blocks]
    ids: np.ndarray | list[int] = []
    if blocks:
        ids = grid.owners_of(np.asarray([w.begin for w in writes], dtype=np.int64))
    out = [DaisyBlock(int(i), int(b.block_id[1]), w, _box(b.read_roi)) for i, b, w in zip(ids, blocks, writes)]
    return sorted(out, key=lambda d: d.block_id)


def conflict_waves(grid: BlockGrid, task_id: str = "blocks") -> list[list[int]]:
    """Our block ids in the waves daisy's scheduler releases them with ``read_write_conflict=True``.

    daisy splits the blocks into levels; per axis with several blocks: 1 without halo, 2 when
    0 < halo <= block, ``ceil((block + halo) / block)`` beyond, at most the number of blocks along the axis
    (so 8 in 3D for a halo up to the block). A block waits for the blocks of the previous level that
    conflict with it. A wave is every block ready once all earlier waves succeeded; no block of a wave reads
    what another block of it writes, and the tests find as many waves as daisy reports levels. Our stages
    do not need this: none reads what its own neighbours write.
    """
    sched = _daisy().Scheduler(to_daisy_task(grid, task_id, read_write_conflict=True))
    return [wave[task_id] for wave in _drain(sched, {task_id: grid})]


def daisy_pipeline(stages: Sequence[tuple[str, BlockGrid]]) -> Any:
    """A serial daisy ``Pipeline`` ``stages[0] + stages[1] + ...``, one task per ``(name, grid)``.

    A global step (agglomerate) is a one-block grid, ``BlockGrid(volume, volume)``: it then waits for every
    upstream block, and every downstream block waits for it.

    All stages must tile the same region (``grid.roi``). daisy 2.0.0 links a downstream block to the
    upstream blocks whose *unshrunk* write ROI (full block shape, reaching past the region end) meets its
    read ROI, and a downstream block with no upstream block is never released: the scheduler refuses some
    such pipelines (``ValueError: ... read nothing their upstream task ... writes``) and silently strands
    the others (``run_blockwise`` returns False with the block neither failed nor orphaned). Over one
    common region neither happens and daisy's links are exactly ``vote.vote_blocks_touching``.
    """
    names = [name for name, _ in stages]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"daisy_pipeline needs one or more stages with distinct names, got {names}")
    regions = {str(grid.roi) for _, grid in stages}
    if len(regions) > 1:
        raise ValueError(f"the stages tile different regions ({', '.join(f'{n}: {g.roi}' for n, g in stages)}); "
                         "daisy 2.0.0 mis-orders such pipelines (it strands or refuses downstream blocks that "
                         "read no upstream block), so give every stage the same roi")
    tasks = [to_daisy_task(grid, name) for name, grid in stages]
    pipe = _daisy().Pipeline.from_task(tasks[0])
    for task in tasks[1:]:
        pipe = pipe + task
    return pipe


def chained_dependencies(upstream: BlockGrid, downstream: BlockGrid, *, names: tuple[str, str] = ("vote", "paint")
                         ) -> dict[int, list[int]]:
    """For each downstream block id, the sorted upstream block ids daisy makes it wait for.

    daisy computes them from the serial pipeline ``upstream + downstream``: the upstream blocks whose write
    ROI intersects the downstream block's read ROI (``vote.vote_blocks_touching(read_box, upstream)``).
    """
    up_name, down_name = names
    daisy = _daisy()
    deps = daisy.Scheduler(daisy_pipeline([(up_name, upstream), (down_name, downstream)])).dependency_graph
    out: dict[int, list[int]] = {}
    # blocks taken from daisy's own enumeration: an off-grid Block makes upstream() panic
    for block, _ in daisy_graph(downstream, down_name).enumerate_all_dependencies():
        ups = deps.upstream(block)
        if any(u.task_id != up_name for u in ups):
            raise RuntimeError(f"daisy reports upstream blocks of other tasks: {[u.block_id for u in ups]}")
        out[our_block_id(downstream, block)] = sorted(our_block_id(upstream, u) for u in ups)
    return dict(sorted(out.items()))


def daisy_waves(stages: Sequence[tuple[str, BlockGrid]]) -> list[dict[str, list[int]]]:
    """The order daisy's scheduler releases the blocks of chained ``stages``, as waves of our block ids.

    Each wave is every block ready after all earlier waves succeeded: ``{stage name: sorted ids}``.
    """
    daisy = _daisy()
    return _drain(daisy.Scheduler(daisy_pipeline(stages)), dict(stages))


def _drain(sched: Any, grids: dict[str, BlockGrid]) -> list[dict[str, list[int]]]:
    daisy = _daisy()
    waves = []
    while True:
        ready: dict[str, list[int]] = {name: [] for name in grids}
        blocks = []
        for name in grids:
            while (block := sched.acquire_block(name)) is not None:
                blocks.append(block)
                ready[name].append(our_block_id(grids[name], block))
        if not blocks:
            break
        waves.append({name: sorted(ids) for name, ids in ready.items() if ids})
        for block in blocks:
            block.status = daisy.BlockStatus.SUCCESS
            sched.release_block(block)
    left = {name: s.total_block_count - s.completed_count for name, s in sched.task_states.items()}
    if any(left.values()):
        raise RuntimeError(f"daisy's scheduler stopped with blocks left: {left}")
    return waves


__all__ = ["DAISY_TESTED", "DaisyBlock", "DaisyRois", "chained_dependencies", "conflict_waves", "daisy_graph",
           "daisy_pipeline", "daisy_task_rois", "daisy_waves", "our_block_id", "to_daisy_blocks", "to_daisy_task"]
