"""The paint stage: per block, accumulated patch votes -> (K, Z, Y, X) uint32 labels of the core.

Paint reads only what the vote stage left for it (``pipeline.vote.VoteArtifacts``) and a slice of the
``instances`` table: no prediction, no network, no graph.

* the rows of the selected patches centred within h of the core (the block's own ``.npz``: the selected
  patches that cover a core voxel are centred there);
* the patch -> cluster map on core + h (a chunk-aligned zarr array) and the cluster -> instance ids of the
  vote blocks that box touches (``GraphStore.instances_of_blocks``);
* numinst of the core.

``ops.paint.paint_core`` then sums the votes exactly as the whole-volume ``ops.paint.paint_instances`` does
(the same float32 values in the same order), so the labels are bit for bit those of ``ops.assemble``.

Ids. The instance ids are the whole-volume partition ids (1..n by smallest patch centre). ``ops.assemble``
then drops instances that received no voxel (or <= ``min_instance_size`` voxels, counted over all
channels) and compacts the ids (``ops.postprocess.remove_small_and_relabel``). That needs global sizes, so
painting is:

1. stage ``paint``: paint, write the labels, and save the block's (id, voxel count) table to
   ``<work_dir>/paint_sizes/<block>.npz``;
2. the driver sums the tables; if an instance must go, it writes the sorted removed ids to
   ``<work_dir>/removed_ids.npy`` and runs stage ``relabel``: each block paints again and writes the
   compacted ids (id - number of removed ids below it; removed -> 0; labels moved to the lowest channels).
   Both stages recompute from their inputs, so a retried or resumed block writes the same bytes.

Paint blocks are the vote blocks (same grid and ids); they must be whole chunks of the output
(``geometry.check_chunk_alignment``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ppp_dist.errors import BlockError
from ppp_dist.geometry import BlockGrid, BlockSpec
from ppp_dist.io.graph_store import GraphStore
from ppp_dist.pipeline.settings import AssemblySettings, paint_halo
from ppp_dist.pipeline.vote import CLUSTERS, NUMINST, VoteArtifacts, set_threads, vote_blocks_touching

logger = logging.getLogger(__name__)

STAGE = "paint"
REMOVED_IDS = "removed_ids.npy"  # in the work folder: what the relabel stage removes


def _as_rows(values: np.ndarray) -> np.ndarray:
    """Patch values as ``prepare_field`` converts them: uint8 / 255 or float32."""
    if values.dtype == np.uint8:
        return values.astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(values, dtype=np.float32)


def paint_block(block: BlockSpec, grid: BlockGrid, artifacts: VoteArtifacts, store: GraphStore,
                settings: AssemblySettings) -> tuple[np.ndarray, int]:
    """(K, *core) uint32 labels (instance ids) of ``block``'s core, and the number of patches used."""
    from ppp_dist.io.volumes import open_array, read_box
    from ppp_dist.ops.paint import paint_core

    core = block.write_box
    numinst = read_box(open_array(artifacts.array(NUMINST)), core)
    centres, values = artifacts.load_rows(block.block_id)
    if not len(centres) or not numinst.any():
        return np.zeros((settings.max_num_inst,) + core.shape, dtype=np.uint32), 0
    box = block.read_box  # core + h, clipped to the volume: where those centres lie
    cmap = read_box(open_array(artifacts.array(CLUSTERS)), box)
    clusters = cmap[tuple((centres - np.asarray(box.begin)).T)]
    if not (clusters > 0).all():
        bad = tuple(int(c) for c in centres[np.argmin(clusters > 0)])
        raise BlockError(block.block_id, f"the selected patch centred at {bad} has no cluster in the vote's map: "
                                         "a vote block was redone after this one; rerun vote, agglomerate and paint")
    known, instances = store.instances_of_blocks(vote_blocks_touching(box, grid))
    pos = np.minimum(np.searchsorted(known, clusters), max(len(known) - 1, 0))
    if not len(known) or not (known[pos] == clusters).all():
        raise BlockError(block.block_id, "a cluster of this block's patches has no instance id: agglomerate did not "
                                         "finish after the last vote; rerun agglomerate and paint")
    labels = paint_core(numinst, centres - np.asarray(core.begin), _as_rows(values), instances[pos],
                        settings.patch_shape, patch_threshold=settings.patch_threshold,
                        max_num_inst=settings.max_num_inst, accumulate=settings.accumulate)
    return labels, len(centres)


def _atomic_save(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]  # the names are array names, none is allow_pickle
    os.replace(tmp, path)


@dataclass(frozen=True)
class PaintStage:
    """The paint stage (picklable: paths and settings): per block, the labels of its core, and the block's
    (id, voxel count) table from which :meth:`finalize` finds the instances to remove."""

    output: str  # "out.zarr/instances" (K, Z, Y, X) uint32, prepared by the driver
    store_factory: Callable[[], GraphStore]
    vote_volume: tuple[int, int, int]
    vote_block_shape: tuple[int, int, int]
    settings: AssemblySettings
    work_dir: str
    threads: int | None = None
    source: str = ""  # what the vote read, as the vote describes it: another input redoes the labels
    chunks: tuple[int, ...] = ()  # the output's chunks: another layout redoes every block
    n_instances: int = 0  # after the agglomeration: the instance ids are 1..n_instances
    name = STAGE
    resources = None

    def grid(self) -> BlockGrid:
        return paint_grid(self.vote_volume, self.vote_block_shape, self.settings)

    def params(self) -> dict[str, Any]:
        return {"source": self.source, "block": self.vote_block_shape, "settings": asdict(self.settings),
                "output": self.output, "chunks": self.chunks}

    def prepare(self, fresh: bool) -> None:
        """Nothing: the driver prepared the output array (its layout decides whether the blocks are redone)."""

    def forget(self, store: Any) -> None:
        store.reset_blocks(self.name)

    def finalize(self) -> np.ndarray:
        """The instances to remove (sizes summed over all blocks); saved for the relabel stage if any."""
        removed = removed_instances(Path(self.work_dir), [b.block_id for b in self.grid()], self.n_instances,
                                    self.settings.min_instance_size)
        if len(removed):
            np.save(Path(self.work_dir) / REMOVED_IDS, removed)
        return removed

    def __call__(self, block: BlockSpec) -> dict[str, Any]:
        return self.process_block(block)

    def paint(self, block: BlockSpec) -> tuple[np.ndarray, int]:
        """The block's labels (instance ids of the agglomeration) and the number of patches used."""
        from ppp_dist.pipeline.worker import worker_store

        set_threads(self.threads)
        store = worker_store(self.store_factory)
        grid = BlockGrid(self.vote_volume, self.vote_block_shape)
        return paint_block(block, grid, VoteArtifacts(self.work_dir), store, self.settings)

    def write(self, block: BlockSpec, labels: np.ndarray, patches: int) -> dict[str, Any]:
        from ppp_dist.io.volumes import open_array, write_box

        out = open_array(self.output, "r+")
        write_box(out, block.write_box, labels[:out.shape[0]])
        return {"voxels": int(np.prod(block.write_box.shape)), "labelled": int(np.count_nonzero(labels[0])),
                "patches": int(patches)}

    def process_block(self, block: BlockSpec) -> dict[str, Any]:
        labels, patches = self.paint(block)
        found, sizes = np.unique(labels[labels > 0], return_counts=True)
        _atomic_save(Path(self.work_dir) / "paint_sizes" / f"{block.block_id}.npz", ids=found.astype(np.int64),
                     sizes=sizes.astype(np.int64))
        return self.write(block, labels, patches)


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


__all__ = ["PaintStage", "REMOVED_IDS", "STAGE", "paint_block", "paint_grid", "removed_instances"]
