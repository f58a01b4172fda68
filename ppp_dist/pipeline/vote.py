"""The vote stage: per block, consensus -> scores -> local selection -> patch graph; keep what the core owns.

A block reads its patches (a :mod:`~ppp_dist.pipeline.sources` source: the stored prediction, or computed
on the fly in the fused mode) on its core + :func:`~ppp_dist.pipeline.settings.vote_halo` (clipped at the
volume border, exactly as the whole volume sees it), runs the ``ppp_dist.ops`` steps with consensus rows
limited to core + 7h (``owned=``), and keeps what the core owns: the selected patches centred in the core
(node id = global linear index of the centre + 1) and the patch-graph edges whose first (smaller-id) patch
lies there and that carry votes. The halo makes the selection exact within core + 4h, so the other end of
every owned edge is selected in its own block's computation too.

What it stores (:class:`VoteStage`):

* **the graph, contracted** (``partition = "connected_components"``, ``ppp_dist.ops.contract``): the local
  clusters of the block's internal tier-1 attractive edges, the map patch -> cluster of its boundary
  patches, and the few links that the rest of the volume can still change. Rows grow with the block's
  faces, not with its patch pairs. ``mutex_watershed`` cannot be contracted: every selected patch is its own
  cluster and the full edge list goes to the ``edges`` table (``count`` = +pairs tier 1, -pairs tier 2).
* **what paint needs** (:class:`VoteArtifacts`), so that paint reads no prediction, runs no network and
  queries no graph: the patch -> cluster map of the core as a chunk-aligned zarr array (cluster id at each
  selected centre), numinst of the core (zarr, uint8), and the rows of the selected patches centred within
  h of the core (a ``.npz`` per block: centres and values in the prediction's dtype).

The selection must be "local" (greedy is refused: it is sequential over the whole volume).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ppp_dist.geometry import BlockGrid, BlockSpec, Box
from ppp_dist.pipeline.settings import AssemblySettings, owned_rows_margin, vote_halo
from ppp_dist.pipeline.sources import PatchSource, StoredPrediction

logger = logging.getLogger(__name__)

STAGE = "vote"
CLUSTERS, NUMINST = "clusters", "numinst"  # arrays in <work>/vote.zarr


def set_threads(threads: int | None) -> None:
    """Limit numba's threads in this worker process (None: leave as is). Results do not depend on it."""
    if threads:
        import numba

        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]  # set at run time


@dataclass(frozen=True)
class BlockGraph:
    """What one block owns (global ids and coordinates) and what its paint needs."""

    ids: np.ndarray  # (N,) int64 node ids of the selected patches centred in the core, ascending
    positions: np.ndarray  # (N, 3) int64 centres
    u: np.ndarray  # (E,) int64 first node id (owned), u < v
    v: np.ndarray
    weights: np.ndarray  # (E,) float64 (float32 values)
    counts: np.ndarray  # (E,) int64: +pairs tier 1, -pairs tier 2
    boundary: np.ndarray  # (N,) bool: a selected patch of another block lies within the pair range
    paint_centres: np.ndarray  # (M, 3) int64 selected patches centred in core + h (clipped to the volume)
    paint_rows: np.ndarray  # (M, P) their values in the prediction's dtype
    numinst: np.ndarray  # core shape, uint8 0/1/2
    voxels: int
    foreground: int

    @property
    def tiers(self) -> np.ndarray:
        return np.where(self.counts > 0, 1, 2)


def _empty_graph(block: BlockSpec, patch_size: int, dtype: Any) -> BlockGraph:
    e = np.zeros(0, dtype=np.int64)
    return BlockGraph(e, np.zeros((0, 3), np.int64), e, e, np.zeros(0), e, np.zeros(0, bool),
                      np.zeros((0, 3), np.int64),
                      np.zeros((0, patch_size), dtype), np.zeros(block.write_box.shape, np.uint8),
                      int(np.prod(block.write_box.shape)), 0)


def _near_foreign(coords: np.ndarray, in_core: np.ndarray, shape: tuple[int, ...], reach: np.ndarray) -> np.ndarray:
    """For each owned patch: is a selected patch outside the core within ``reach`` per axis? (box max filter)"""
    from scipy import ndimage

    foreign = np.zeros(shape, dtype=bool)
    out = coords[~in_core]
    foreign[tuple(out.T)] = True
    near = ndimage.maximum_filter(foreign, size=tuple(int(2 * r + 1) for r in reach), mode="constant")
    return near[tuple(coords[in_core].T)]


def _stored_rows(rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float32 rows (as ``prepare_field`` converted them) back in the prediction's dtype, exactly: uint8 values
    k are k / 255 in float32, and rint(255 x) gives k back; float16 converts to float32 and back unchanged."""
    if dtype == np.uint8:
        return np.rint(rows * np.float32(255.0)).astype(np.uint8)
    return np.ascontiguousarray(rows.astype(dtype))


def vote_block(source: PatchSource, block: BlockSpec, volume_shape, settings: AssemblySettings) -> BlockGraph:
    """Run the vote steps for one block (inputs on ``block.read_box``) and keep what its core owns."""
    from ppp_dist.ops.consensus import compute_consensus, compute_scores, prepare_field
    from ppp_dist.ops.patch_graph import patch_graph
    from ppp_dist.ops.selection import select_patches

    read = block.read_box
    patch_size = int(np.prod(settings.patch_shape))
    if not source.has_foreground(read, settings):  # nothing to vote on: skip reading the patches
        return _empty_graph(block, patch_size, np.uint8)
    p, ni = source.read(read, settings)
    field = prepare_field(p, ni, settings.patch_shape)
    dtype = np.dtype(p.dtype)
    del p  # the field holds the foreground voxels' rows (float32)
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
    origin = np.asarray(read.begin, dtype=np.int64)
    centres = graph.coords + origin
    core = block.write_box
    in_core = np.all((centres >= np.asarray(core.begin)) & (centres < np.asarray(core.end)), axis=1)
    keep = in_core[graph.pairs[:, 0]] & (graph.counts > 0) & (graph.tiers > 0) if len(graph.pairs) else \
        np.zeros(0, dtype=bool)
    pairs = graph.pairs[keep]
    u, v = graph.node_ids[pairs[:, 0]], graph.node_ids[pairs[:, 1]]
    if len(u) and not (u < v).all():  # nodes are in C order of the centres, as global ids are
        raise AssertionError(f"block {block.block_id}: patch graph pairs are not ordered by node id")
    tiers = graph.tiers[keep]
    counts = np.where(tiers == 1, graph.counts[keep], -graph.counts[keep]).astype(np.int64)
    # the pair range is 4h (patch_graph's max_distance); selection is exact within core + 4h
    boundary = _near_foreign(graph.coords, in_core, read.shape, 4 * np.asarray(settings.h))
    near = core.grow(settings.h)
    paint = np.all((centres >= np.asarray(near.begin)) & (centres < np.asarray(near.end)), axis=1)
    paint_rows = _stored_rows(field.vrows[field.candidates[selected[paint]]], dtype)
    return BlockGraph(graph.node_ids[in_core].astype(np.int64), centres[in_core], u.astype(np.int64),
                      v.astype(np.int64), graph.weights[keep].astype(np.float64), counts, boundary, centres[paint],
                      paint_rows, np.ascontiguousarray(ni[block.write_in_read]), int(np.prod(core.shape)),
                      int(np.count_nonzero(ni[block.write_in_read])))


# ---------------------------------------------------------------------------------------------------------
# What the vote leaves for paint


@dataclass(frozen=True)
class VoteArtifacts:
    """Where the vote stage leaves what paint needs (paths on a file system every worker sees)."""

    work_dir: str  # the experiment's pipeline/ folder

    @property
    def zarr(self) -> str:
        return str(Path(self.work_dir) / "vote.zarr")

    def array(self, name: str) -> str:
        return f"{self.zarr}/{name}"

    def rows_path(self, block_id: int) -> Path:
        return Path(self.work_dir) / "vote_rows" / f"{int(block_id)}.npz"

    def prepare(self, volume_shape: tuple[int, ...], block_shape: tuple[int, ...], fresh: bool) -> None:
        """Create the arrays (chunks = the vote blocks); ``fresh`` replaces earlier ones and their rows."""
        import shutil

        from ppp_dist.io.volumes import prepare_array

        if fresh:
            shutil.rmtree(self.zarr, ignore_errors=True)
            shutil.rmtree(Path(self.work_dir) / "vote_rows", ignore_errors=True)
        chunks = tuple(min(b, s) for b, s in zip(block_shape, volume_shape))
        for name, dtype in ((CLUSTERS, "int64"), (NUMINST, "uint8")):
            prepare_array(self.array(name), shape=tuple(volume_shape), chunks=chunks, dtype=dtype, axes="zyx",
                          overwrite=True if fresh else False)

    def save(self, block: BlockSpec, clusters_of_owned: np.ndarray, g: BlockGraph) -> None:
        """Write the block's part: rows file (atomic), then its chunks of the cluster map and numinst."""
        from ppp_dist.io.volumes import open_array, write_box

        path = self.rows_path(block.block_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, centres=g.paint_centres.astype(np.int64), rows=g.paint_rows)
        os.replace(tmp, path)
        core = block.write_box
        cmap = np.zeros(core.shape, dtype=np.int64)
        if len(g.ids):
            cmap[tuple((g.positions - np.asarray(core.begin)).T)] = clusters_of_owned
        write_box(open_array(self.array(CLUSTERS), "r+"), core, cmap)
        write_box(open_array(self.array(NUMINST), "r+"), core, g.numinst)

    def load_rows(self, block_id: int) -> tuple[np.ndarray, np.ndarray]:
        """``(centres (M, 3), rows (M, P))`` that vote saved for ``block_id``."""
        from ppp_dist.errors import BlockError

        path = self.rows_path(block_id)
        if not path.exists():
            raise BlockError(block_id, f"{path} is missing although the vote stage marks the block done; the work "
                                       "folder must be shared by all workers (rerun vote with resume off)")
        with np.load(path) as data:
            return data["centres"], data["rows"]


@dataclass(frozen=True)
class VoteStage:
    """The vote stage (picklable: a source of paths and settings, and the settings): per block, the
    consensus, selection and contracted patch graph; the graph rows go to the database, what paint needs to
    the work folder (:class:`VoteArtifacts`)."""

    source: PatchSource
    settings: AssemblySettings
    artifacts: VoteArtifacts
    threads: int | None = None  # numba threads per worker process
    block_shape: tuple[int, int, int] | None = None  # the vote (= paint) block; needed for grid()
    cuda: bool = False  # a network runs inside the blocks on GPU workers (fused)
    volume_shape: tuple[int, int, int] | None = None  # the source's (Z, Y, X) when the caller read it already
    name = STAGE

    @classmethod
    def stored(cls, patches: str, numinst: str, settings: AssemblySettings, work_dir: str,
               threads: int | None = None) -> VoteStage:
        """On a stored prediction: ``"pred.zarr/patches"`` and ``"pred.zarr/numinst"`` (or fg)."""
        return cls(StoredPrediction(patches, numinst), settings, VoteArtifacts(work_dir), threads)

    @property
    def resources(self) -> dict[str, float] | None:
        return {"GPU": 1} if self.cuda else None

    def grid(self) -> BlockGrid:
        if self.block_shape is None:
            raise ValueError("VoteStage.grid needs block_shape")
        volume = self.volume_shape or self.source.volume_shape(self.settings)  # the source validates on reading
        return vote_grid(volume, self.block_shape, self.settings)

    def params(self) -> dict[str, Any]:
        """What the vote rows depend on (the contraction depends on partition and edge_threshold; the paint
        options only change later stages)."""
        later = ("min_instance_size", "accumulate", "overlap_channels")
        return {"source": self.source.describe(), "block": self.block_shape,
                "settings": {k: v for k, v in asdict(self.settings).items() if k not in later}}

    def prepare(self, fresh: bool) -> None:
        grid = self.grid()
        self.artifacts.prepare(tuple(grid.volume_shape), grid.block_shape, fresh)

    def forget(self, store: Any) -> None:
        """Drop the stage's ledger rows (all blocks, also of another grid), the graph, and the agglomeration."""
        from ppp_dist.pipeline.agglomerate import INSTANCES_STAGE
        from ppp_dist.pipeline.agglomerate import STAGE as AGGLOMERATE

        store.reset_blocks(self.name)
        store.clear_graph()
        for later in (AGGLOMERATE, INSTANCES_STAGE):
            store.reset_blocks(later)

    def finalize(self) -> None:
        """Nothing: the agglomeration (on the driver) reads what the blocks wrote."""

    def __call__(self, block: BlockSpec) -> Any:
        return self.process_block(block)

    def process_block(self, block: BlockSpec) -> Any:
        from ppp_dist.io.graph_store import make_clusters, make_edges, make_map
        from ppp_dist.ops.contract import ATTRACT, MUTEX, TIER2, contract_block
        from ppp_dist.pipeline.worker import BlockOutput

        set_threads(self.threads)
        s = self.settings
        shape = self.source.volume_shape(s)
        g = vote_block(self.source, block, shape, s)
        counts = {"voxels": g.voxels, "foreground": g.foreground, "patches": len(g.ids),
                  "patch_edges": len(g.u), "tier2_edges": int(np.count_nonzero(g.counts < 0))}
        if s.partition == "mutex_watershed":  # the full graph; every patch its own cluster
            self.artifacts.save(block, g.ids, g)
            return BlockOutput(edges=make_edges(g.u, g.v, g.weights, g.counts), clusters=make_clusters(g.ids),
                               counts=counts)
        c = contract_block(g.ids, g.u, g.v, g.weights, g.tiers, threshold=s.edge_threshold, boundary=g.boundary)
        self.artifacts.save(block, c.patch_clusters, g)
        kinds = c.links["kind"]
        counts.update({"attract_links": int((kinds == ATTRACT).sum()), "mutex_links": int((kinds == MUTEX).sum()),
                       "tier2_links": int((kinds == TIER2).sum())})
        return BlockOutput(clusters=make_clusters(c.cluster_ids, c.cluster_sizes),
                           patch_map=make_map(c.map_patches, c.map_clusters), links=c.links, counts=counts)


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


__all__ = ["BlockGraph", "CLUSTERS", "NUMINST", "STAGE", "VoteArtifacts", "VoteStage", "set_threads", "vote_block",
           "vote_blocks_touching", "vote_grid"]
