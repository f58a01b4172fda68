"""Consensus of patch votes for voxel pairs, and patch scores against it (ppp_reference §4.2–4.3).

Who takes part (one foreground definition, from numinst only):

* *members* — foreground voxels that are not overlap (numinst == 1). Only members are pair members.
* *voters* — every foreground voxel's patch votes. Patches centred on members are *primary*: their
  votes decide a pair whenever at least one of them voted on it. Patches centred on overlap voxels
  (whose oracle target is the union of several instances) are *fallback* voters, used only for pairs
  no primary patch voted on — they are what links the two halves of an instance cut by a crossing,
  without letting their unreliable "same" votes override the "different" votes of primary patches.
* *candidates* — patches centred on members; only they can be selected (as the original cover step).

Refinement (``refine=True``, the default): a second pass in which every candidate patch votes only
with the entries that the first-pass consensus with its own centre does not contradict (a value > TH
on a voxel the consensus calls different from the centre, or < the "different" bound on a voxel it
calls the same, takes part in no vote; ``agreeing_rows``). A wrong entry of one patch otherwise casts
"different"/"same" votes on every pair it forms: on pairs across a crossing, that only fallback
patches see, one such *primary* vote overrode all the (correct) fallback votes; with oracle patches
nothing is dropped and the result is bit-identical to one pass. Cost: the rows within 2h of the
computed ones (columns within h) and one copy of the patch rows (4 * P * N_fg bytes) while it runs; the
second pass recomputes only rows that a voter with a dropped entry votes on; input halo 4h instead of 2h.

Storage: one row per member voxel u and one column per lexicographically positive offset d with
|d_i| <= ps_i - 1, for the pair (u, u + d): mean vote (float32, in [-1, 1]) and vote count (int16,
negated for fallback consensus).
Bytes = 6 * N_members * n_pos, n_pos = ((4hz+1)(4hy+1)(4hx+1) - 1) / 2 (1098 for 7³, 3280 for 1×41×41).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ppp_dist.ops import _vote_kernels as _k
from ppp_dist.ops._geometry import (
    CONSENSUS_RULES,
    DIFFERENT_RULES,
    Grid,
    PairOffsets,
    check_numinst,
    check_patch_array,
    check_patch_shape,
    check_threshold,
    numinst_from_prob,
    pair_offsets,
    patch_rows,
    window_positions,
)
from ppp_dist.ops._schedule import schedule

__all__ = ["PatchField", "Consensus", "numinst_from_prob", "prepare_field", "compute_consensus", "compute_scores",
           "agreeing_rows", "supports", "vote_parameters"]


OVERLAP_VOTES = ("fallback", "ignore")


@dataclass(frozen=True)
class PatchField:
    """Patches of the foreground voxels in voxel-major layout, plus the index structures all steps share."""

    patch_shape: tuple[int, int, int]
    grid: Grid  # padded flat indexing, pad = 4h (enough for pair search)
    numinst: np.ndarray  # (Z, Y, X) uint8
    member_coords: np.ndarray  # (N_m, 3) int64, C order
    member_pflat: np.ndarray  # (N_m,) int64 padded flat index
    mem_pad: np.ndarray  # padded flat int32 member index volume
    voter_coords: np.ndarray  # (N_v, 3) int64: all foreground voxels, C order
    voter_pflat: np.ndarray
    vot_pad: np.ndarray  # padded flat int32 voter index volume
    vrows: np.ndarray  # (N_v, P) float32 patch of each voter
    vkind: np.ndarray  # (N_v,) uint8: 1 = centred on a member, 2 = centred on an overlap voxel
    candidates: np.ndarray  # (N_c,) int64 voter indices with vkind 1 (ascending = linear order)
    woff: np.ndarray  # (P,) int64 padded flat window offsets
    vm_ptr: np.ndarray  # CSR over voters: member window positions
    vm_pos: np.ndarray
    vm_mem: np.ndarray
    pairs: PairOffsets

    @property
    def n_members(self) -> int:
        return len(self.member_coords)

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.member_coords, self.member_pflat, self.mem_pad, self.voter_coords,
                                          self.voter_pflat, self.vot_pad, self.vrows, self.vkind, self.candidates,
                                          self.vm_ptr, self.vm_pos, self.vm_mem)))


@dataclass(frozen=True)
class Consensus:
    values: np.ndarray  # (N_m, n_pos) float32 mean vote in [-1, 1]
    counts: np.ndarray  # (N_m, n_pos) int16 votes: > 0 primary, < 0 -(fallback votes), 0 = no information
    threshold: float
    rule: str
    different_rule: str

    def nbytes(self) -> int:
        return int(self.values.nbytes + self.counts.nbytes)


def vote_parameters(threshold: float, rule: str, different_rule: str) -> tuple[float, float, int]:
    """(diff_hi, diff_l, mode) for the kernels.

    A "different" vote needs one value a > TH and the other b < diff_hi (TH, 1 - TH or TH / 2 for the
    three rules). Its magnitude is (a (1 - b) - L) / (1 - L) with L = min(TH², TH (1 - diff_hi)), the
    smallest value a (1 - b) can take; L = TH² (the original formula) wherever that is sign-safe, so the
    vote can never flip sign for TH > 0.5 (ppp_reference §4.2, bug 6).
    """
    if rule not in CONSENSUS_RULES:
        raise ValueError(f"consensus must be one of {CONSENSUS_RULES}; got {rule!r}")
    if different_rule not in DIFFERENT_RULES:
        raise ValueError(f"different_rule must be one of {DIFFERENT_RULES}; got {different_rule!r}")
    th = threshold
    diff_hi = {"less_than_threshold": th, "inverse_threshold": 1.0 - th, "half_threshold": th / 2.0}[different_rule]
    diff_l = min(th * th, th * (1.0 - diff_hi))
    return diff_hi, diff_l, _k.COUNT if rule == "count" else _k.PROB_PRODUCT


def prepare_field(patches: np.ndarray, numinst: np.ndarray, patch_shape) -> PatchField:
    """Validate inputs and gather the patches of all foreground voxels (voxel-major, float32; the values
    of other voxels are not read)."""
    ps = check_patch_shape(patch_shape)
    patches = check_patch_array(patches, ps)
    numinst = check_numinst(numinst, patches.shape[1:])
    h = np.asarray(ps, dtype=np.int64) // 2
    nz, ny, nx = (int(s) for s in numinst.shape)  # (Z, Y, X): check_numinst
    grid = Grid((nz, ny, nx), ps, (int(4 * h[0]), int(4 * h[1]), int(4 * h[2])))
    member_coords = np.argwhere(numinst == 1).astype(np.int64)
    voter_coords = np.argwhere(numinst >= 1).astype(np.int64)
    vkind = np.where(numinst[tuple(voter_coords.T)] == 1, 1, 2).astype(np.uint8)
    vrows = patch_rows(patches, voter_coords)
    mem_pad = grid.index_volume(member_coords)
    vot_pad = grid.index_volume(voter_coords)
    member_pflat = grid.flat(member_coords)
    voter_pflat = grid.flat(voter_coords)
    woff = grid.window_offsets()
    vm_ptr, vm_pos, vm_mem = _k.window_member_lists(voter_pflat, woff, mem_pad)
    return PatchField(ps, grid, numinst, member_coords, member_pflat, mem_pad, voter_coords, voter_pflat, vot_pad,
                      vrows, vkind, np.flatnonzero(vkind == 1).astype(np.int64), woff, vm_ptr, vm_pos, vm_mem,
                      pair_offsets(ps))


def compute_consensus(field: PatchField, *, threshold: float = 0.5, rule: str = "prob_product",
                      different_rule: str = "less_than_threshold", overlap_votes: str = "fallback",
                      refine: bool = True, owned: np.ndarray | None = None) -> Consensus:
    """Mean vote for every pair of member voxels at most ps - 1 apart per axis.

    ``refine`` (default True): two passes; the second counts only the patch entries that the first
    pass's consensus with the patch centre does not contradict (module docstring, ``agreeing_rows``).
    ``owned`` (bool (Z, Y, X), optional): compute only the rows of members inside it (a block core);
    the other rows stay zero-count. A row needs the patches within h of its voxel and the membership
    of the voxels within 2h (input halo 2h); refined, those patches' entries are checked against the
    first-pass rows within 2h of the voxel (input halo 4h).
    """
    th = check_threshold("patch_threshold", threshold)
    diff_hi, diff_l, mode = vote_parameters(th, rule, different_rule)
    if overlap_votes not in OVERLAP_VOTES:
        raise ValueError(f"overlap_votes must be one of {OVERLAP_VOTES}; got {overlap_votes!r}")
    vkind = field.vkind if overlap_votes == "fallback" else np.where(field.vkind == 1, 1, 0).astype(np.uint8)
    rows = _owned_rows(field.member_coords, owned, field.numinst.shape)
    values = np.zeros((field.n_members, field.pairs.n), dtype=np.float32)
    counts = np.zeros((field.n_members, field.pairs.n), dtype=np.int16)
    args: tuple[np.ndarray, np.ndarray, np.ndarray] = _k.member_voter_lists(field.vm_ptr, field.vm_mem,
                                                                            field.n_members)
    vals, lbase = _k.listed(field.vm_ptr, field.vm_pos, field.vrows, field.pairs.base)
    tail = (vkind, field.vm_ptr, field.vm_pos, field.pairs.lut, lbase, field.pairs.centre, th, diff_hi,
            diff_l, mode, values, counts, window_positions(field.patch_shape))
    h = np.asarray(field.patch_shape, dtype=np.int64) // 2
    no_rows = np.zeros((0, 1), dtype=np.int32)
    if not refine:
        _k.consensus_rows(rows, *args, vals, *tail, 2 * h, no_rows, *schedule(len(rows)))
        return Consensus(values, counts, th, rule, different_rule)
    # pass 1 on every row that a checked entry reads: pairs (centre, u) with the centre within h of an
    # owned member and u within h of the centre, stored in the row of the first of the two (within 2h).
    # The owned rows get every column (pass 2 keeps them where no voter changed); the ring around them
    # only the offsets within h that the refinement reads (43% of the columns for 7^3 patches)
    ring = np.setdiff1d(_rows_within(field, rows, 2), rows, assume_unique=True)
    _k.consensus_rows(rows, *args, vals, *tail, 2 * h, no_rows, *schedule(len(rows)))
    if len(ring):
        pz, py, px = field.patch_shape
        row_starts = _k.window_row_starts(field.vm_ptr, field.vm_pos, px, pz * py)
        _k.consensus_rows(ring, *args, vals, *tail, h, row_starts, *schedule(len(ring)))
        del row_starts
    refined, dirty = _agreeing_rows(field, Consensus(values, counts, th, rule, different_rule))
    values[ring] = 0.0
    counts[ring] = 0
    # pass 2 recomputes only the rows with a voter that lost an entry: every other row would get the
    # same votes in the same order, i.e. the same bytes (oracle patches lose none)
    redo = _k.rows_with_voters(rows, args[0], args[1], vkind, dirty)
    if len(redo):
        del vals
        vals, _ = _k.listed(field.vm_ptr, field.vm_pos, refined, field.pairs.base)
        _k.consensus_rows(redo, *args, vals, *tail, 2 * h, no_rows, *schedule(len(redo)))
    return Consensus(values, counts, th, rule, different_rule)


def agreeing_rows(field: PatchField, consensus: Consensus) -> np.ndarray:
    """Copy of ``field.vrows`` in which the entries of candidate (member-centred) patches that the
    consensus with their centre contradicts are NaN: a value > TH on a member whose consensus with the
    centre is < 0, or a value < the "different" bound (TH for the default rule) on a member whose
    consensus with the centre is > 0. NaN casts no vote in the consensus kernels (both vote tests are
    False). Pairs without consensus and the centre entry are kept; fallback (overlap-centred) patches
    have no consensus row at their centre and are kept whole. Only for the consensus: the other steps
    read the patches themselves (scores measure the raw patch against the consensus)."""
    return _agreeing_rows(field, consensus)[0]


def _agreeing_rows(field: PatchField, consensus: Consensus) -> tuple[np.ndarray, np.ndarray]:
    """``agreeing_rows`` and a bool per voter: True where at least one entry was dropped."""
    diff_hi, _, _ = vote_parameters(consensus.threshold, consensus.rule, consensus.different_rule)
    out = field.vrows.copy()
    dirty = np.zeros(len(field.vrows), dtype=np.bool_)
    cand_mem = field.mem_pad[field.voter_pflat[field.candidates]].astype(np.int64)
    coords, h2, lut, lstr, values, counts = lookup_args(field, consensus)
    _k.drop_contradicted(field.candidates, cand_mem, field.vrows, field.vm_ptr, field.vm_pos, field.vm_mem, coords,
                         h2, lut, lstr, values, counts, consensus.threshold, diff_hi, out, dirty)
    return out, dirty


def compute_scores(field: PatchField, consensus: Consensus) -> np.ndarray:
    """Score of every candidate patch (field.candidates order): mean agreement with the consensus, in [-1, 1].

    "Same" votes add the pair's consensus, "different" votes subtract it (ppp_reference §4.3); pairs
    without consensus are skipped. A patch that votes on no pair scores 0. Input halo: consensus + h
    (5h refined, 3h with refine=False).
    """
    diff_hi, diff_l, mode = vote_parameters(consensus.threshold, consensus.rule, consensus.different_rule)
    out = np.zeros(len(field.candidates), dtype=np.float32)
    _k.patch_scores(field.candidates, field.vrows, field.vm_ptr, field.vm_pos, field.vm_mem, field.pairs.lut,
                    field.pairs.base, field.pairs.centre, consensus.threshold, diff_hi, diff_l, mode,
                    consensus.values, consensus.counts, out, *schedule(len(field.candidates)))
    return out


def supports(field: PatchField, voter_index: np.ndarray, threshold: float):
    """CSR (ptr, member indices) of each patch's support: member voxels with patch value > threshold."""
    voter_index = np.asarray(voter_index, dtype=np.int64)
    dummy_i = np.zeros((1, 3), dtype=np.int64)
    return _k.support_lists(voter_index, np.full(len(voter_index), -1, dtype=np.int64), field.vrows, field.vm_ptr,
                            field.vm_pos, field.vm_mem, float(threshold), False, dummy_i, dummy_i[0],
                            np.zeros(1, dtype=np.int64), dummy_i[0], np.zeros((1, 1), dtype=np.float32),
                            np.zeros((1, 1), dtype=np.int16))


def lookup_args(field: PatchField, consensus: Consensus
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Arguments of the kernels' pair-consensus look-up (coords, 2h, lut, lut strides, values, counts)."""
    ls = field.pairs.lut_shape
    lstr = np.array([ls[1] * ls[2], ls[2], 1], dtype=np.int64)
    h2 = 2 * (np.asarray(field.patch_shape, dtype=np.int64) // 2)
    return field.member_coords, h2, field.pairs.lut, lstr, consensus.values, consensus.counts


def _owned_rows(coords: np.ndarray, owned: np.ndarray | None, shape) -> np.ndarray:
    if owned is None:
        return np.arange(len(coords), dtype=np.int64)
    owned = np.asarray(owned, dtype=bool)
    if owned.shape != tuple(shape):
        raise ValueError(f"owned must be a bool mask of shape {tuple(shape)}; got {owned.shape}")
    return np.flatnonzero(owned[tuple(coords.T)]).astype(np.int64)


def _rows_within(field: PatchField, rows: np.ndarray, k: int) -> np.ndarray:
    """Members within k·h (per axis) of the members ``rows`` (all members if rows are all of them)."""
    if len(rows) == field.n_members:
        return rows
    mask = np.zeros(field.numinst.shape, dtype=bool)
    mask[tuple(field.member_coords[rows].T)] = True
    size = tuple(int(2 * k * x + 1) for x in np.asarray(field.patch_shape) // 2)
    mask = ndimage.maximum_filter(mask, size=size, mode="constant", cval=False)
    return np.flatnonzero(mask[tuple(field.member_coords.T)]).astype(np.int64)
