"""Straightforward vectorised NumPy versions of the consensus, scores and patch-pair weights.

Slow reference for tests and scripts/bench_assembly.py: one Python iteration per patch, NumPy over
its voxel pairs. Same math as the numba kernels (consensus.py, patch_graph.py).

Nothing in the package calls it. It stays in the package (private, underscore) rather than next to the
tests because the benchmark ``scripts/bench_assembly.py`` times the kernels against it as well, and the
scripts import only the installed package, not ``tests/``; it also imports the package's private
``PatchField``/``vote_parameters``, so it has to change together with ``consensus.py``.
"""

from __future__ import annotations

import numpy as np

from ppp_dist.ops.consensus import Consensus, PatchField, vote_parameters


def _votes(a, b, th, diff_hi, diff_l, count):
    same = (a > th) & (b > th)
    d1 = (a > th) & (b < diff_hi)
    d2 = (b > th) & (a < diff_hi)
    if count:
        val = np.where(same, 1.0, -1.0)
    else:
        hi = np.where(d2, b, a)
        lo = np.where(d2, a, b)
        val = np.where(same, (a * b - th * th) / (1 - th * th), -(hi * (1 - lo) - diff_l) / (1 - diff_l))
    kind = np.where(same, 1, np.where(d1 | d2, 2, 0))
    return kind, val


def _pairs_of(field: PatchField, vi: int):
    s, e = field.vm_ptr[vi], field.vm_ptr[vi + 1]
    pos = field.vm_pos[s:e].astype(np.int64)
    mem = field.vm_mem[s:e].astype(np.int64)
    i1, i2 = np.triu_indices(len(pos), k=1)
    return pos, mem, i1, i2


def consensus_numpy(field: PatchField, threshold=0.5, rule="prob_product", different_rule="less_than_threshold",
                    overlap_votes="fallback", voters=None, rows=None) -> Consensus:
    """One pass (compute_consensus with refine=False). ``voters``: optional subset of voter indices (for
    timing extrapolation in the benchmark); ``rows``: patch rows to use instead of field.vrows (NaN
    entries cast no vote), e.g. agreeing_rows_numpy for the refined pass."""
    diff_hi, diff_l, mode = vote_parameters(threshold, rule, different_rule)
    shape = (field.n_members, field.pairs.n)
    acc = [np.zeros(shape), np.zeros(shape)]
    num = [np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)]
    base, lut, centre = field.pairs.base, field.pairs.lut, field.pairs.centre
    for vi in (range(len(field.voter_coords)) if voters is None else voters):
        tier = 0 if field.vkind[vi] == 1 else 1
        if tier == 1 and overlap_votes == "ignore":
            continue
        pos, mem, i1, i2 = _pairs_of(field, vi)
        row = (field.vrows if rows is None else rows)[vi].astype(np.float64)
        kind, val = _votes(row[pos[i1]], row[pos[i2]], threshold, diff_hi, diff_l, mode == 1)
        ok = kind > 0
        cols = lut[base[pos[i2]] - base[pos[i1]] + centre]
        np.add.at(acc[tier], (mem[i1][ok], cols[ok]), val[ok])
        np.add.at(num[tier], (mem[i1][ok], cols[ok]), 1)
    values = np.where(num[0] > 0, acc[0] / np.maximum(num[0], 1),
                      np.where(num[1] > 0, acc[1] / np.maximum(num[1], 1), 0))
    counts = np.where(num[0] > 0, num[0], -num[1])
    return Consensus(values.astype(np.float32), counts.astype(np.int16), threshold, rule, different_rule)


def agreeing_rows_numpy(field: PatchField, consensus: Consensus) -> np.ndarray:
    """consensus.agreeing_rows by a Python loop over the candidate patches (NaN = entry dropped)."""
    diff_hi, _, _ = vote_parameters(consensus.threshold, consensus.rule, consensus.different_rule)
    h2 = 2 * (np.asarray(field.patch_shape) // 2)
    ls = np.asarray(field.pairs.lut_shape)
    lstr = np.array([ls[1] * ls[2], ls[2], 1])
    out = field.vrows.copy()
    for vi in field.candidates:
        c = int(field.mem_pad[field.voter_pflat[vi]])
        s, e = field.vm_ptr[vi], field.vm_ptr[vi + 1]
        mem = field.vm_mem[s:e].astype(np.int64)
        pos = field.vm_pos[s:e].astype(np.int64)
        other = mem != c
        mem, pos = mem[other], pos[other]
        first, second = np.minimum(mem, c), np.maximum(mem, c)
        d = field.member_coords[second] - field.member_coords[first]
        cols = field.pairs.lut[(d + h2) @ lstr]
        cnt, val = consensus.counts[first, cols], consensus.values[first, cols]
        a = field.vrows[vi, pos]
        drop = (cnt != 0) & (((a > consensus.threshold) & (val < 0)) | ((a < diff_hi) & (val > 0)))
        out[vi, pos[drop]] = np.nan
    return out


def scores_numpy(field: PatchField, consensus: Consensus) -> np.ndarray:
    diff_hi, diff_l, mode = vote_parameters(consensus.threshold, consensus.rule, consensus.different_rule)
    base, lut, centre = field.pairs.base, field.pairs.lut, field.pairs.centre
    out = np.zeros(len(field.candidates), dtype=np.float32)
    for k, vi in enumerate(field.candidates):
        pos, mem, i1, i2 = _pairs_of(field, vi)
        row = field.vrows[vi].astype(np.float64)
        kind, _ = _votes(row[pos[i1]], row[pos[i2]], consensus.threshold, diff_hi, diff_l, mode == 1)
        cols = lut[base[pos[i2]] - base[pos[i1]] + centre]
        c = consensus.values[mem[i1], cols].astype(np.float64)
        ok = (kind > 0) & (consensus.counts[mem[i1], cols] != 0)
        sgn = np.where(kind == 1, 1.0, -1.0)
        out[k] = (sgn * c)[ok].sum() / ok.sum() if ok.any() else 0.0
    return out


def pair_weights_numpy(field: PatchField, consensus: Consensus, sel_voters: np.ndarray, pairs: np.ndarray,
                       threshold: float = 0.5):
    """(weights, counts, tiers) of the given selected-patch pairs, by brute force over support pairs."""
    h2 = 2 * (np.asarray(field.patch_shape) // 2)
    ls = np.asarray(field.pairs.lut_shape)
    lstr = np.array([ls[1] * ls[2], ls[2], 1])
    sup = []
    for vi in sel_voters:
        s, e = field.vm_ptr[vi], field.vm_ptr[vi + 1]
        keep = field.vrows[vi, field.vm_pos[s:e]] > threshold
        mem = field.vm_mem[s:e][keep].astype(np.int64)
        c = field.mem_pad[field.voter_pflat[vi]]
        ok = []
        for m in mem:  # consensus with the centre must be positive
            a, b = min(c, m), max(c, m)
            d = field.member_coords[b] - field.member_coords[a]
            col = field.pairs.lut[(d + h2) @ lstr]
            ok.append(m == c or (consensus.counts[a, col] != 0 and consensus.values[a, col] > 0))
        sup.append(mem[np.array(ok, dtype=bool)] if len(mem) else mem)
    w = np.zeros(len(pairs), dtype=np.float64)
    n = np.zeros(len(pairs), dtype=np.int64)
    t = np.zeros(len(pairs), dtype=np.uint8)
    for p, (i, j) in enumerate(pairs):
        u, v = np.meshgrid(sup[i], sup[j], indexing="ij")
        u, v = u.ravel(), v.ravel()
        keep = u != v
        first, second = np.minimum(u, v)[keep], np.maximum(u, v)[keep]
        d = field.member_coords[second] - field.member_coords[first]
        ok = (np.abs(d) <= h2).all(axis=1)
        cols = field.pairs.lut[(d[ok] + h2) @ lstr]
        c = consensus.counts[first[ok], cols]
        vals = consensus.values[first[ok], cols].astype(np.float64)
        for tier, m in ((1, c > 0), (2, c < 0)):
            if m.any():
                w[p], n[p], t[p] = vals[m].mean(), m.sum(), tier
                break
    return w, n, t
