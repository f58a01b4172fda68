"""The relabel stage, after paint when instances must go: every paint block is painted again and written with
compacted ids (id - number of removed ids below it; removed -> 0; labels moved to the lowest channels), so the
labels equal ``ops.assemble``'s after ``ops.postprocess.remove_small_and_relabel`` (see ``pipeline.paint``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ppp_dist.geometry import BlockSpec
from ppp_dist.pipeline.paint import REMOVED_IDS, PaintStage

STAGE = "relabel"


@dataclass(frozen=True)
class RelabelStage(PaintStage):
    """Paint again, then compact the ids with the removed ids that paint's ``finalize`` saved."""

    removed: int = 0  # how many instances go (a new set redoes every block)
    name = STAGE

    def params(self) -> dict[str, Any]:
        return {**super().params(), "removed": self.removed}

    def finalize(self) -> np.ndarray:
        """Nothing to remove after the relabel."""
        return np.zeros(0, np.int64)

    def process_block(self, block: BlockSpec) -> dict[str, Any]:
        labels, patches = self.paint(block)
        path = Path(self.work_dir) / REMOVED_IDS
        return self.write(block, compact(labels, _removed_ids(str(path), path.stat().st_mtime_ns)), patches)


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


__all__ = ["RelabelStage", "STAGE", "compact"]
