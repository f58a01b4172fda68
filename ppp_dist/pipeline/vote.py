"""The vote stage: per block, consensus -> scores -> local selection -> patch graph; keep what the core owns.

A block reads its patches (a :mod:`~ppp_dist.pipeline.sources` source: the stored prediction, or computed
on the fly in the fused mode) on its core + :func:`~ppp_dist.pipeline.settings.vote_halo` (clipped at the
volume border, exactly as the whole volume sees it), runs the ``ppp_dist.ops`` steps with consensus rows
limited to core + 7h (``owned=``), and returns a :class:`~ppp_dist.runner.BlockOutput`:

* **fragments** = the selected patches whose centre lies in the core; one fragment per patch, id = the
  global node id (linear index of the centre + 1, ``ops.patch_graph.node_ids``), position = the centre.
  Fragments are single patches (not per-block connected components) because the whole-volume partition
  is not plain union-find: tier-1 edges <= threshold are mutexes against tier-2 merges
  (``ops.partition``), which needs the patch-level edges (see ``ppp_dist.pipeline.segments``).
* **edges** = patch-graph edges whose first (smaller id) patch lies in the core and that carry votes
  (``counts > 0``; tier-0 edges are ignored by the partition): ``weight`` = mean consensus (float32
  value, stored exactly as float64), ``count`` = +pairs for tier 1 (primary consensus) and -pairs for
  tier 2 (fallback consensus only). The other endpoint is selected in its own block's computation too
  (the halo makes the selection exact within core + 4h), so every edge names a stored fragment.

The selection must be "local" (greedy is refused: it is sequential over the whole volume).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ppp_dist.geometry import BlockGrid, BlockSpec, Box
from ppp_dist.pipeline.settings import AssemblySettings, owned_rows_margin, vote_halo
from ppp_dist.pipeline.sources import PatchSource, StoredPrediction

logger = logging.getLogger(__name__)

STAGE = "vote"


def set_threads(threads: int | None) -> None:
    """Limit numba's threads in this worker process (None: leave as is). Results do not depend on it."""
    if threads:
        import numba

        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))


@dataclass(frozen=True)
class BlockGraph:
    """What one block owns (global ids and coordinates)."""

    ids: np.ndarray  # (N,) int64 node ids of the selected patches centred in the core, ascending
    positions: np.ndarray  # (N, 3) int64 centres
    u: np.ndarray  # (E,) int64 first node id (owned), u < v
    v: np.ndarray
    weights: np.ndarray  # (E,) float64 (float32 values)
    counts: np.ndarray  # (E,) int64: +pairs tier 1, -pairs tier 2
    voxels: int
    foreground: int


def vote_block(source: PatchSource, block: BlockSpec, volume_shape, settings: AssemblySettings) -> BlockGraph:
    """Run the vote steps for one block (inputs on ``block.read_box``) and keep what its core owns."""
    from ppp_dist.ops.consensus import compute_consensus, compute_scores, prepare_field
    from ppp_dist.ops.patch_graph import patch_graph
    from ppp_dist.ops.selection import select_patches

    read = block.read_box
    if not source.has_foreground(read, settings):  # nothing to vote on: skip reading the patches
        empty = np.zeros(0, dtype=np.int64)
        return BlockGraph(empty, np.zeros((0, 3), np.int64), empty, empty, np.zeros(0), empty,
                          int(np.prod(block.write_box.shape)), 0)
    p, ni = source.read(read, settings)
    field = prepare_field(p, ni, settings.patch_shape)
    del p
    owned = np.zeros(read.shape, dtype=bool)
    rows_box = block.write_box.grow(owned_rows_margin(settings)).intersect(read)
    owned[rows_box.relative_to(read)] = True
    cons = compute_consensus(field, threshold=settings.patch_threshold, rule=settings.consensus,
                             different_rule=settings.different_rule, overlap_votes=settings.overlap_votes,
                             refine=settings.refine_consensus, owned=owned)
    scores = compute_scores(field, cons)
    selected = select_patches(field, cons, scores, mode=settings.selection, cover_threshold=settings.cover_threshold,
                              max_num_inst=settings.max_num_inst)
    graph = patch_graph(field, cons, selected, patch_threshold=settings.patch_threshold, origin=read.begin,
                        global_shape=tuple(volume_shape))
    centres = graph.coords + np.asarray(read.begin, dtype=np.int64)
    lo = np.asarray(block.write_box.begin, dtype=np.int64)
    hi = np.asarray(block.write_box.end, dtype=np.int64)
    in_core = np.all((centres >= lo) & (centres < hi), axis=1)
    keep = in_core[graph.pairs[:, 0]] & (graph.counts > 0) & (graph.tiers > 0) if len(graph.pairs) else \
        np.zeros(0, dtype=bool)
    pairs = graph.pairs[keep]
    u, v = graph.node_ids[pairs[:, 0]], graph.node_ids[pairs[:, 1]]
    if len(u) and not (u < v).all():  # nodes are in C order of the centres, as global ids are
        raise AssertionError(f"block {block.block_id}: patch graph pairs are not ordered by node id")
    tiers = graph.tiers[keep]
    counts = np.where(tiers == 1, graph.counts[keep], -graph.counts[keep]).astype(np.int64)
    return BlockGraph(graph.node_ids[in_core].astype(np.int64), centres[in_core], u.astype(np.int64),
                      v.astype(np.int64), graph.weights[keep].astype(np.float64), counts,
                      int(np.prod(block.write_box.shape)), int(np.count_nonzero(ni[block.write_in_read])))


@dataclass(frozen=True)
class VoteStage:
    """``process_block`` of the vote stage (picklable: a source of paths and settings, and the settings)."""

    source: PatchSource
    settings: AssemblySettings
    threads: int | None = None  # numba threads per worker process

    @classmethod
    def stored(cls, patches: str, numinst: str, settings: AssemblySettings, threads: int | None = None
               ) -> "VoteStage":
        """On a stored prediction: ``"pred.zarr/patches"`` and ``"pred.zarr/numinst"`` (or fg)."""
        return cls(StoredPrediction(patches, numinst), settings, threads)

    def __call__(self, block: BlockSpec) -> Any:
        from ppp_dist.io.graph_store import make_edges, make_fragments
        from ppp_dist.runner import BlockOutput

        set_threads(self.threads)
        shape = self.source.volume_shape(self.settings)
        g = vote_block(self.source, block, shape, self.settings)
        tier2 = int(np.count_nonzero(g.counts < 0))
        # (make_fragments cannot reshape an empty (0, 3) position array)
        positions = g.positions if len(g.ids) else None
        return BlockOutput(make_fragments(g.ids, positions, np.ones(len(g.ids), np.int64)),
                           make_edges(g.u, g.v, g.weights, g.counts),
                           {"voxels": g.voxels, "foreground": g.foreground, "patches": len(g.ids),
                            "tier2_edges": tier2})


def vote_grid(volume_shape, block_shape, settings: AssemblySettings) -> BlockGrid:
    """The vote stage's block grid (write boxes of ``block_shape``, read boxes + the vote halo)."""
    return BlockGrid(volume_shape, block_shape, vote_halo(settings))


def vote_blocks_touching(box: Box, grid: BlockGrid) -> list[int]:
    """Ids of the blocks of ``grid`` whose write box intersects ``box`` (clipped to the tiled region)."""
    box = box.intersect(grid.roi)
    if box.empty:
        return []
    lo = [(b - r) // s for b, r, s in zip(box.begin, grid.roi.begin, grid.block_shape)]
    hi = [(e - 1 - r) // s for e, r, s in zip(box.end, grid.roi.begin, grid.block_shape)]
    ranges = [range(a, b + 1) for a, b in zip(lo, hi)]
    index = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, grid.ndim)
    return sorted(int(i) for i in np.ravel_multi_index(tuple(index.T), grid.shape))


__all__ = ["BlockGraph", "STAGE", "VoteStage", "set_threads", "vote_block", "vote_blocks_touching", "vote_grid"]
