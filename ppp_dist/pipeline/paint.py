"""The paint stage: per block, accumulated patch votes -> (K, Z, Y, X) uint32 labels of the core.

A block reads its patches (``pipeline.sources``: stored, or recomputed in the fused mode) on core + h (the selected patches covering a core voxel are centred within
h), the selected patches centred there with their instance ids from the graph DB (fragments of the vote
blocks touching that box, joined with the LUT that :func:`~ppp_dist.pipeline.segments.agglomerate_instances`
wrote), and calls ``ops.paint.paint_instances`` exactly as the whole-volume run does. Nothing is
recomputed from the consensus.

Ids. The LUT ids are the whole-volume partition ids (1..n by smallest patch centre). ``ops.assemble`` then
drops instances that received no voxel (or <= ``min_instance_size`` voxels, counted over all channels) and
compacts the ids (``ops.postprocess.remove_small_and_relabel``). That needs global sizes, so painting is:

1. stage ``paint``: paint, write the labels (LUT ids), and save the block's (id, voxel count) table to
   ``<work_dir>/paint_sizes/<block>.npz``;
2. the driver sums the tables; if an instance must go, it writes the sorted removed ids to
   ``<work_dir>/removed_ids.npy`` and runs stage ``relabel``: each block paints again and writes the
   compacted ids (id - number of removed ids below it; removed -> 0; labels moved to the lowest channels).
   Both stages recompute from their inputs, so a retried or resumed block writes the same bytes.

Blocks must be whole chunks of the output (``geometry.check_chunk_alignment``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ppp_dist.errors import BlockError
from ppp_dist.geometry import BlockGrid, BlockSpec, Box
from ppp_dist.io.graph_store import GraphStore
from ppp_dist.pipeline.settings import AssemblySettings, paint_halo
from ppp_dist.pipeline.sources import PatchSource
from ppp_dist.pipeline.vote import set_threads, vote_blocks_touching

logger = logging.getLogger(__name__)

STAGE = "paint"
RELABEL_STAGE = "relabel"


def selected_in_box(store: GraphStore, box: Box, vote: BlockGrid) -> tuple[np.ndarray, np.ndarray]:
    """Centres (N, 3) and instance ids (N,) of the selected patches centred in ``box`` (one query)."""
    blocks = vote_blocks_touching(box, vote)
    if not blocks:
        return np.zeros((0, 3), np.int64), np.zeros(0, np.int64)
    marks = ", ".join("?" * len(blocks))
    rows = store.db.execute(f"SELECT f.z, f.y, f.x, l.segment, f.id FROM fragments f JOIN lut l ON l.fragment = f.id "
                            f"WHERE f.block IN ({marks})", blocks)
    arr = np.array(rows, dtype=np.int64).reshape(-1, 5)
    lo, hi = np.asarray(box.begin), np.asarray(box.end)
    inside = np.all((arr[:, :3] >= lo) & (arr[:, :3] < hi), axis=1)
    arr = arr[inside]
    return arr[:, :3], arr[:, 3]


def paint_block(source: PatchSource, block: BlockSpec, centres: np.ndarray, instance_ids: np.ndarray,
                settings: AssemblySettings) -> np.ndarray:
    """(K, *core) uint32 labels (LUT ids) of ``block``'s core; ``centres`` are global, in ``block.read_box``."""
    from ppp_dist.ops.consensus import prepare_field
    from ppp_dist.ops.paint import paint_instances

    read = block.read_box
    if not len(centres) and not source.has_foreground(read, settings):  # nothing to paint
        return np.zeros((settings.max_num_inst,) + block.write_box.shape, dtype=np.uint32)
    p, ni = source.read(read, settings)
    field = prepare_field(p, ni, settings.patch_shape)
    del p
    local = centres - np.asarray(read.begin, dtype=np.int64)
    cand = field.voter_coords[field.candidates]
    shape = read.shape
    cand_lin = np.ravel_multi_index(tuple(cand.T), shape) if len(cand) else np.zeros(0, np.int64)
    want = np.ravel_multi_index(tuple(local.T), shape) if len(local) else np.zeros(0, np.int64)
    pos = np.searchsorted(cand_lin, want)
    ok = (pos < len(cand_lin)) & (cand_lin[np.minimum(pos, max(len(cand_lin) - 1, 0))] == want) if len(cand_lin) \
        else np.zeros(len(want), bool)
    if not ok.all():
        bad = tuple(int(c) for c in centres[np.argmin(ok)])
        raise BlockError(block.block_id, f"selected patch centred at {bad} is not a candidate (a non-overlap "
                                         "foreground voxel) of the prediction: the prediction changed since the "
                                         "vote stage; rerun vote, agglomerate and paint")
    order = np.argsort(pos, kind="stable")
    labels = paint_instances(field, pos[order].astype(np.int64), instance_ids[order].astype(np.int64),
                             patch_threshold=settings.patch_threshold, max_num_inst=settings.max_num_inst,
                             accumulate=settings.accumulate)
    return np.ascontiguousarray(labels[(slice(None), *block.write_in_read)])


@lru_cache(maxsize=4)
def _removed_ids(path: str, mtime_ns: int) -> np.ndarray:
    return np.load(path)


def compact(labels: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """``remove_small_and_relabel`` with a global table: removed ids -> 0, the others shifted down by the
    number of removed ids below them, surviving labels moved to the lowest channels (stable)."""
    if not len(removed):
        return labels
    flat = labels.astype(np.int64)
    shift = np.searchsorted(removed, flat, side="right")
    gone = np.isin(flat, removed)
    out = np.where(gone | (flat == 0), 0, flat - shift).astype(np.uint32)
    if out.shape[0] > 1:
        order = np.argsort(out == 0, axis=0, kind="stable")
        out = np.take_along_axis(out, order, axis=0)
    return out


def _atomic_save(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


@dataclass(frozen=True)
class PaintStage:
    """``process_block`` of the paint (``relabel=False``) and relabel (``relabel=True``) stages."""

    source: PatchSource
    output: str  # "out.zarr/instances" (K, Z, Y, X) uint32, prepared by the driver
    store_factory: Callable[[], GraphStore]
    vote_volume: tuple[int, int, int]
    vote_block_shape: tuple[int, int, int]
    settings: AssemblySettings
    work_dir: str
    relabel: bool = False
    threads: int | None = None

    def __call__(self, block: BlockSpec) -> dict[str, Any]:
        from ppp_dist.io.volumes import open_array, write_box
        from ppp_dist.runner import worker_store

        set_threads(self.threads)
        store = worker_store(self.store_factory)
        vote = BlockGrid(self.vote_volume, self.vote_block_shape)
        centres, ids = selected_in_box(store, block.read_box, vote)
        labels = paint_block(self.source, block, centres, ids, self.settings)
        if self.relabel:
            path = Path(self.work_dir) / "removed_ids.npy"
            labels = compact(labels, _removed_ids(str(path), path.stat().st_mtime_ns))
        else:
            found, sizes = np.unique(labels[labels > 0], return_counts=True)
            _atomic_save(Path(self.work_dir) / "paint_sizes" / f"{block.block_id}.npz", ids=found.astype(np.int64),
                         sizes=sizes.astype(np.int64))
        out = open_array(self.output, "r+")
        write_box(out, block.write_box, labels[:out.shape[0]])
        return {"voxels": int(np.prod(block.write_box.shape)), "labelled": int(np.count_nonzero(labels[0])),
                "patches": int(len(ids))}


def paint_grid(volume_shape, block_shape, settings: AssemblySettings) -> BlockGrid:
    return BlockGrid(volume_shape, block_shape, paint_halo(settings))


def removed_instances(work_dir: Path, block_ids: list[int], n_instances: int, min_size: int) -> np.ndarray:
    """Sorted ids that ``remove_small_and_relabel`` drops: global size (all blocks, all channels) <= min_size."""
    sizes = np.zeros(n_instances + 1, dtype=np.int64)
    for b in block_ids:
        path = Path(work_dir) / "paint_sizes" / f"{b}.npz"
        if not path.exists():
            raise BlockError(b, f"{path} is missing although the paint stage marks the block done; the work "
                                "folder must be shared by all workers (rerun paint with resume off)")
        with np.load(path) as data:
            np.add.at(sizes, data["ids"], data["sizes"])
    keep = sizes > int(min_size)
    keep[0] = True
    return np.flatnonzero(~keep).astype(np.int64)


__all__ = ["PaintStage", "RELABEL_STAGE", "STAGE", "compact", "paint_block", "paint_grid", "removed_instances",
           "selected_in_box"]
