"""Patch selection: which candidate patches form the patch graph (ppp_reference §4.4–4.5).

* ``"local"`` (default, block invariant): every non-overlap foreground voxel elects the best-scoring
  candidate patch covering it (value > cover_threshold; ties -> larger cover size = number of
  non-overlap foreground voxels it covers, then smaller centre linear index); a patch is
  selected iff it is elected at least once. Halo: a patch is elected by voxels within h, whose
  elections read the scores of patches within h of them: the selected status of the candidates in a
  core needs scores on core + 2h, i.e. inputs on core + 7h (5h with the single-pass consensus;
  docs/assembly.md).
* ``"greedy"`` (the original, sequential): ranked cover with pixTh = 0, then thin-out greedy set cover.
  Not block invariant.

Both modes add the *overlap supplement*: every overlap voxel (numinst >= 2) elects up to max_num_inst
covering candidates, best first, each separated from the earlier ones by a negative consensus between
the patch centres. Without it an overlap voxel may be covered by selected patches of only one of its
instances, and the painting could not give it its second label.
"""

from __future__ import annotations

import numpy as np

from ppp_dist.ops import _graph_kernels as _g
from ppp_dist.ops._geometry import check_threshold
from ppp_dist.ops.consensus import Consensus, PatchField, lookup_args, supports

SELECTION_MODES = ("local", "greedy")


def select_patches(field: PatchField, consensus: Consensus, scores: np.ndarray, *, mode: str = "local",
                   cover_threshold: float = 0.5, max_num_inst: int = 2, thin_out: bool = True) -> np.ndarray:
    """Selected candidates: ascending indices into ``field.candidates`` (= ascending centre linear index).

    ``thin_out`` (greedy mode only): drop the ranked cover's redundant patches by greedy set cover."""
    if mode not in SELECTION_MODES:
        raise ValueError(f"selection must be one of {SELECTION_MODES}; got {mode!r}")
    cover_th = check_threshold("cover_threshold", cover_threshold)
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape != field.candidates.shape:
        raise ValueError(f"scores must have one entry per candidate patch ({len(field.candidates)}); "
                         f"got {scores.shape}")
    if int(max_num_inst) < 1:
        raise ValueError(f"max_num_inst must be >= 1; got {max_num_inst}")
    cand_pflat = field.voter_pflat[field.candidates]
    cand_pad = field.grid.index_volume(field.voter_coords[field.candidates])
    cand_mem = field.mem_pad[cand_pflat].astype(np.int64)
    overlap = field.vkind == 2
    if mode == "local":
        nelect = np.where(overlap, int(max_num_inst), 1).astype(np.int64)
    else:
        nelect = np.where(overlap, int(max_num_inst), 0).astype(np.int64)
    voters = np.flatnonzero(nelect > 0)
    elected = np.full((len(voters), max(1, int(max_num_inst))), -1, dtype=np.int64)
    sizes = np.diff(supports(field, field.candidates, cover_th)[0])
    _g.elect(field.voter_pflat[voters], nelect[voters], field.woff, cand_pad, field.candidates, cand_mem,
             field.vrows, scores, sizes, cover_th, *lookup_args(field, consensus), elected)
    chosen = np.zeros(len(field.candidates), dtype=bool)
    chosen[elected[elected >= 0]] = True
    if mode == "greedy":
        order = np.lexsort((np.arange(len(scores)), -scores.astype(np.float64)))
        chosen |= _g.greedy_cover(order, cand_pflat, field.candidates, field.vrows, field.woff, field.mem_pad,
                                  cover_th, field.n_members, bool(thin_out))
    return np.flatnonzero(chosen).astype(np.int64)
