"""Private numba kernels: window member lists, consensus of patch votes, patch scores.

Every kernel is a gather: each output row is computed by one thread in a fixed order (the heavy
kernels take chunks of rows in the order of ``_schedule``), so the result does not depend on the
number of threads (no atomics, no shared accumulators).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# vote modes
PROB_PRODUCT = 0
COUNT = 1


@njit(cache=True, inline="always")
def _vote(a, b, th, diff_hi, diff_l, mode):
    """Vote of one patch on the pair (u, w) with patch values a = patch(u), b = patch(w).

    Returns (kind, value): kind 0 = no vote, 1 = "same", 2 = "different"; value is signed.
    """
    if a > th:
        if b > th:
            if mode == COUNT:
                return 1, 1.0
            return 1, (a * b - th * th) / (1.0 - th * th)
        if b < diff_hi:
            if mode == COUNT:
                return 2, -1.0
            return 2, -(a * (1.0 - b) - diff_l) / (1.0 - diff_l)
        return 0, 0.0
    if b > th and a < diff_hi:
        if mode == COUNT:
            return 2, -1.0
        return 2, -(b * (1.0 - a) - diff_l) / (1.0 - diff_l)
    return 0, 0.0


@njit(parallel=True, cache=True)
def window_member_lists(centres_pflat, woff, mem_pad):
    """CSR per centre: window positions (ascending) holding a member voxel, and that voxel's member index."""
    n = len(centres_pflat)
    npos = len(woff)
    counts = np.zeros(n + 1, dtype=np.int64)
    for i in prange(n):
        c = centres_pflat[i]
        k = 0
        for e in range(npos):
            if mem_pad[c + woff[e]] >= 0:
                k += 1
        counts[i + 1] = k
    ptr = np.cumsum(counts)
    pos = np.empty(ptr[n], dtype=np.int32)
    mem = np.empty(ptr[n], dtype=np.int32)
    for i in prange(n):
        c = centres_pflat[i]
        k = ptr[i]
        for e in range(npos):
            m = mem_pad[c + woff[e]]
            if m >= 0:
                pos[k] = e
                mem[k] = m
                k += 1
    return ptr, pos, mem


@njit(cache=True)
def member_voter_lists(vm_ptr, vm_mem, n_members):
    """Transpose of the window member lists: per member u, the voters whose window holds u, as
    (voter, index into vm_pos/vm_mem), in ascending window position of u. Voters are walked in
    descending order: a voter further before u sees u at a later window position."""
    cnt = np.zeros(n_members + 1, dtype=np.int64)
    for k in range(len(vm_mem)):
        cnt[vm_mem[k] + 1] += 1
    ptr = np.cumsum(cnt)
    fill = ptr[:-1].copy()
    voter = np.empty(len(vm_mem), dtype=np.int32)
    index = np.empty(len(vm_mem), dtype=np.int64)
    for vi in range(len(vm_ptr) - 2, -1, -1):
        for k in range(vm_ptr[vi], vm_ptr[vi + 1]):
            m = vm_mem[k]
            voter[fill[m]] = vi
            index[fill[m]] = k
            fill[m] += 1
    return ptr, voter, index


@njit(cache=True, inline="always")
def _in_support(vi, k, c, vrows, vm_pos, vm_mem, th, agree, coords, h2, lut, lstr, cons, cnt):
    """Is listed entry k of voter vi (centred on member c, -1 if none) in its support: value > th and,
    with ``agree``, the member is the centre or its consensus with the centre is known and positive."""
    if not vrows[vi, vm_pos[k]] > th:
        return False
    if not agree:
        return True
    u = vm_mem[k]
    if u == c:
        return True
    if c < 0:
        return False
    first = c
    d0 = coords[u, 0] - coords[c, 0]
    d1 = coords[u, 1] - coords[c, 1]
    d2 = coords[u, 2] - coords[c, 2]
    if u < c:
        first = u
        d0 = -d0
        d1 = -d1
        d2 = -d2
    col = lut[(d0 + h2[0]) * lstr[0] + (d1 + h2[1]) * lstr[1] + (d2 + h2[2]) * lstr[2]]
    return cnt[first, col] != 0 and cons[first, col] > 0.0


@njit(parallel=True, cache=True)
def support_lists(voters, centres, vrows, vm_ptr, vm_pos, vm_mem, th, agree, coords, h2, lut, lstr, cons, cnt):
    """CSR (ptr, member indices in window order) of the supports of ``voters`` (``_in_support``);
    members are numbered in C order, so the smaller index is the first of a pair."""
    n = len(voters)
    counts = np.zeros(n + 1, dtype=np.int64)
    for i in prange(n):
        vi = voters[i]
        k_n = 0
        for k in range(vm_ptr[vi], vm_ptr[vi + 1]):
            if _in_support(vi, k, centres[i], vrows, vm_pos, vm_mem, th, agree, coords, h2, lut, lstr, cons, cnt):
                k_n += 1
        counts[i + 1] = k_n
    ptr = np.cumsum(counts)
    mem = np.empty(ptr[n], dtype=np.int64)
    for i in prange(n):
        vi = voters[i]
        q = ptr[i]
        for k in range(vm_ptr[vi], vm_ptr[vi + 1]):
            if _in_support(vi, k, centres[i], vrows, vm_pos, vm_mem, th, agree, coords, h2, lut, lstr, cons, cnt):
                mem[q] = vm_mem[k]
                q += 1
    return ptr, mem


@njit(cache=True)
def rows_with_voters(rows, mv_ptr, mv_voter, vkind, flag):
    """The members of ``rows`` (same order) with at least one voting (vkind > 0) flagged voter."""
    out = np.empty(len(rows), dtype=np.int64)
    n = 0
    for r in range(len(rows)):
        u = rows[r]
        for q in range(mv_ptr[u], mv_ptr[u + 1]):
            vi = mv_voter[q]
            if flag[vi] and vkind[vi] > 0:
                out[n] = u
                n += 1
                break
    return out[:n]


@njit(parallel=True, cache=True)
def window_row_starts(vm_ptr, vm_pos, row_len, n_rows):
    """(N, n_rows + 1) int32: index into vm_pos of each voter's first member in window row z * py + y
    (``row_len`` = px positions per row); row r of voter i spans [out[i, r], out[i, r + 1])."""
    n = len(vm_ptr) - 1
    out = np.empty((n, n_rows + 1), dtype=np.int32)
    for i in prange(n):
        k = vm_ptr[i]
        end = vm_ptr[i + 1]
        for r in range(n_rows + 1):
            while k < end and vm_pos[k] < r * row_len:
                k += 1
            out[i, r] = k
    return out


@njit(parallel=True, cache=True)
def listed(vm_ptr, vm_pos, vrows, base):
    """Per entry of the window member lists: its voter's patch value and the LUT-flat position."""
    vals = np.empty(len(vm_pos), dtype=np.float32)
    lbase = np.empty(len(vm_pos), dtype=np.int32)
    for vi in prange(len(vm_ptr) - 1):
        for k in range(vm_ptr[vi], vm_ptr[vi + 1]):
            vals[k] = vrows[vi, vm_pos[k]]
            lbase[k] = base[vm_pos[k]]
    return vals, lbase


@njit(cache=True, inline="always")
def _vote_range(k0, k1, vals, vm_pos, wpos, xlo, xhi, filt, lut, lbase, bu, s, c, t, high, a, th, diff_hi,
                mode, same_k, inv_same, diff_k, inv_diff):
    """Add the votes of a patch on the pairs (u, w) for its listed members w, entries k0:k1 of the
    window member lists (``vals``, ``lbase``: their patch values and LUT-flat positions, ``listed``)
    (with ``filt``: only those whose window x lies in [xlo, xhi]). The formulas of _vote, expanded per
    case of the value a at u (same numbers, fewer branches)."""
    if mode == COUNT:
        for k in range(k0, k1):
            if filt and (wpos[vm_pos[k], 2] < xlo or wpos[vm_pos[k], 2] > xhi):
                continue
            b = vals[k]
            if high:
                if b > th:
                    val = 1.0
                elif b < diff_hi:
                    val = -1.0
                else:
                    continue
            elif b > th:
                val = -1.0
            else:
                continue
            col = lut[lbase[k] - bu]
            s[t, col] += val
            c[t, col] += 1
    elif high:
        a_same = a * inv_same
        a_diff = a * inv_diff
        for k in range(k0, k1):
            if filt and (wpos[vm_pos[k], 2] < xlo or wpos[vm_pos[k], 2] > xhi):
                continue
            b = vals[k]
            if b > th:
                val = a_same * b - same_k
            elif b < diff_hi:
                val = diff_k - a_diff * (1.0 - b)
            else:
                continue
            col = lut[lbase[k] - bu]
            s[t, col] += val
            c[t, col] += 1
    else:
        a_diff = (1.0 - a) * inv_diff
        for k in range(k0, k1):
            if filt and (wpos[vm_pos[k], 2] < xlo or wpos[vm_pos[k], 2] > xhi):
                continue
            b = vals[k]
            if b > th:
                col = lut[lbase[k] - bu]
                s[t, col] += diff_k - a_diff * b
                c[t, col] += 1


@njit(parallel=True, cache=True)
def consensus_rows(rows, mv_ptr, mv_voter, mv_index, vals, vkind, vm_ptr, vm_pos, lut, lbase, centre,
                   th, diff_hi, diff_l, mode, cons, cnt, wpos, near, row_starts, chunk_rows, order):
    """Mean vote for every (member u in rows, positive offset d with |d_i| <= near_i) pair.

    Votes of patches centred on non-overlap voxels (vkind 1) take precedence; votes of patches
    centred on overlap voxels (vkind 2) are used only for pairs that no non-overlap patch voted on,
    and their count is stored negated (cnt < 0 marks fallback consensus). vkind 0 does not vote.
    ``wpos`` (P, 3): window position of each patch channel. ``near`` = 2h computes every column; a
    smaller ``near`` (h: all that the refinement reads) only the pairs that close, walking the window
    rows within reach (``row_starts`` of ``window_row_starts``; unused with near = 2h, may be empty);
    the other columns stay zero-count. Every column gets its votes in the same order either way.
    ``mv_*``: the voters of each member in ascending window position (``member_voter_lists``).
    ``vals``, ``lbase``: the patch value and the LUT-flat window position of every entry of the window
    member lists (``listed``; contiguous per voter, read in order instead of gathered). ``order``: the
    chunks of ``chunk_rows`` rows in the order the threads take them (``_schedule``).
    """
    npos = len(wpos)
    ncol = cons.shape[1]
    pz = wpos[npos - 1, 0] + 1
    py = wpos[npos - 1, 1] + 1
    limited = near[1] < py - 1 or near[2] < wpos[npos - 1, 2] or near[0] < pz - 1
    same_k = th * th / (1.0 - th * th)
    inv_same = 1.0 / (1.0 - th * th)
    diff_k = diff_l / (1.0 - diff_l)
    inv_diff = 1.0 / (1.0 - diff_l)
    nrows = len(rows)
    for it in prange((nrows + chunk_rows - 1) // chunk_rows):
        chunk = order[it]
        for r in range(chunk * chunk_rows, min(nrows, (chunk + 1) * chunk_rows)):
            u = rows[r]
            s = np.zeros((2, ncol), dtype=np.float64)  # row 0 primary, row 1 fallback
            c = np.zeros((2, ncol), dtype=np.int32)
            for q in range(mv_ptr[u], mv_ptr[u + 1]):
                vi = mv_voter[q]
                if vkind[vi] == 0:
                    continue
                k_u = mv_index[q]
                a = vals[k_u]
                high = a > th
                if not (high or a < diff_hi):
                    continue
                t = vkind[vi] - 1
                bu = lbase[k_u] - centre
                lo = k_u + 1  # the voter's members after u (its list is ascending)
                if not limited:
                    _vote_range(lo, vm_ptr[vi + 1], vals, vm_pos, wpos, 0, 0, False, lut, lbase, bu, s, c, t, high, a,
                                th, diff_hi, mode, same_k, inv_same, diff_k, inv_diff)
                    continue
                e_u = vm_pos[k_u]
                zu = wpos[e_u, 0]
                yu = wpos[e_u, 1]
                xu = wpos[e_u, 2]
                y1 = min(yu + near[1], py - 1)
                for z in range(zu, min(zu + near[0], pz - 1) + 1):
                    y0 = max(0, yu - near[1]) if z > zu else yu  # rows y0..y1 of plane z are one stretch
                    _vote_range(max(row_starts[vi, z * py + y0], lo), row_starts[vi, z * py + y1 + 1], vals, vm_pos,
                                wpos, xu - near[2], xu + near[2], True, lut, lbase, bu, s, c, t, high, a, th, diff_hi,
                                mode, same_k, inv_same, diff_k, inv_diff)
            for col in range(ncol):  # every cell written (unconditional stores are much faster here)
                c0 = c[0, col]
                c1 = c[1, col]
                v = 0.0
                n = 0
                if c0 > 0:
                    v = s[0, col] / c0
                    n = min(c0, 32767)
                elif c1 > 0:
                    v = s[1, col] / c1
                    n = -min(c1, 32767)
                cons[u, col] = v
                cnt[u, col] = n


@njit(parallel=True, cache=True)
def patch_scores(cands, vrows, vm_ptr, vm_pos, vm_mem, lut, base, centre, th, diff_hi, diff_l, mode,
                 cons, cnt, out, chunk_rows, order):
    """Mean agreement of each candidate patch with the consensus on the pairs it votes on.

    A pair (u, w) of the patch's window is a "same" vote when both values are > th (adds the pair's
    consensus) and a "different" vote when one is > th and the other < diff_hi (subtracts it); the
    vote kinds of _vote, without its magnitudes (the score does not use them). Pairs in window order;
    a "low" entry is only paired with the "high" entries after it (low-low pairs cast no vote). Pairs
    without votes add 0 (their consensus is 0) and are not counted: no branch in the inner loops.
    ``order``: the chunks of ``chunk_rows`` candidates in the order the threads take them (``_schedule``)."""
    ncand = len(cands)
    for it in prange((ncand + chunk_rows - 1) // chunk_rows):
        chunk = order[it]
        for i in range(chunk * chunk_rows, min(ncand, (chunk + 1) * chunk_rows)):
            vi = cands[i]
            p0 = vm_ptr[vi]
            m = vm_ptr[vi + 1] - p0
            vote = np.empty(m, dtype=np.int64)  # listed entries with a value > th or < diff_hi, in order
            sign = np.empty(m, dtype=np.float64)  # +1 for those > th, -1 for the others
            high_base = np.empty(m, dtype=np.int64)  # col_base of the entries > th, in order
            next_high = np.empty(m, dtype=np.int64)  # per vote entry: first index into high_base after it
            col_base = np.empty(m, dtype=np.int64)
            nv = 0
            nh = 0
            for k in range(m):
                e = vm_pos[p0 + k]
                v = vrows[vi, e]
                if v > th:
                    vote[nv] = k
                    sign[nv] = 1.0
                    col_base[nv] = base[e]
                    high_base[nh] = base[e]
                    nh += 1
                    next_high[nv] = nh  # the entry itself is high: the next high one comes after it
                    nv += 1
                elif v < diff_hi:
                    vote[nv] = k
                    sign[nv] = -1.0
                    col_base[nv] = base[e]
                    next_high[nv] = nh
                    nv += 1
            acc = 0.0
            acc2 = 0.0  # two partial sums (even / odd pairs of a row): half the add latency chain
            n = 0
            for a in range(nv):
                u = vm_mem[p0 + vote[a]]
                bu = col_base[a] - centre
                if sign[a] > 0.0:
                    b = a + 1
                    while b + 1 < nv:
                        col = lut[col_base[b] - bu]
                        col2 = lut[col_base[b + 1] - bu]
                        acc += sign[b] * cons[u, col]
                        acc2 += sign[b + 1] * cons[u, col2]
                        n += (cnt[u, col] != 0) + (cnt[u, col2] != 0)
                        b += 2
                    if b < nv:
                        col = lut[col_base[b] - bu]
                        acc += sign[b] * cons[u, col]
                        n += cnt[u, col] != 0
                else:
                    q = next_high[a]
                    while q + 1 < nh:
                        col = lut[high_base[q] - bu]
                        col2 = lut[high_base[q + 1] - bu]
                        acc -= cons[u, col]
                        acc2 -= cons[u, col2]
                        n += (cnt[u, col] != 0) + (cnt[u, col2] != 0)
                        q += 2
                    if q < nh:
                        col = lut[high_base[q] - bu]
                        acc -= cons[u, col]
                        n += cnt[u, col] != 0
            acc += acc2
            out[i] = acc / n if n > 0 else 0.0


@njit(parallel=True, cache=True)
def drop_contradicted(cands, cand_mem, vrows, vm_ptr, vm_pos, vm_mem, coords, h2, lut, lstr, cons, cnt, th, diff_hi,
                      out, dirty):
    """Refinement of the patch rows by a first consensus (consensus.agreeing_rows).

    For every candidate patch (centred on member cand_mem[i]) and every member u of its window other
    than the centre: if the consensus of (centre, u) exists and contradicts the patch's claim about u
    (value > th, i.e. "u is my instance", but consensus < 0; or value < diff_hi, "u is not", but
    consensus > 0), out[patch, position of u] = NaN and dirty[patch] = True. NaN takes part in no vote:
    every vote test (> th, < diff_hi) is False for it. One prange iteration per patch row (no shared
    writes)."""
    for i in prange(len(cands)):
        vi = cands[i]
        c = cand_mem[i]
        c0 = coords[c, 0]
        c1 = coords[c, 1]
        c2 = coords[c, 2]
        for k in range(vm_ptr[vi], vm_ptr[vi + 1]):
            u = vm_mem[k]
            if u == c:
                continue
            d0 = coords[u, 0] - c0
            d1 = coords[u, 1] - c1
            d2 = coords[u, 2] - c2
            first = c
            if d0 < 0 or (d0 == 0 and (d1 < 0 or (d1 == 0 and d2 < 0))):
                first = u
                d0 = -d0
                d1 = -d1
                d2 = -d2
            col = lut[(d0 + h2[0]) * lstr[0] + (d1 + h2[1]) * lstr[1] + (d2 + h2[2]) * lstr[2]]
            if cnt[first, col] == 0:
                continue
            v = cons[first, col]
            e = vm_pos[k]
            a = vrows[vi, e]
            if (a > th and v < 0.0) or (a < diff_hi and v > 0.0):
                out[vi, e] = np.nan
                dirty[vi] = True
