"""Private numba kernels: patch selection, patch-pair weights, partitions and painting.

Parallel kernels are gathers (each output element computed by one thread in a fixed inner order;
the heavy ones take chunks of rows in the order of ``_schedule``); sequential
kernels (greedy cover, union-find, mutex watershed) process items in an explicit sorted order.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _pair_consensus(mu, mw, coords, h2, lut, lstr, cons, cnt):
    """(tier, value) of the consensus of member voxels mu, mw (any order): tier 1 primary, 2 fallback,
    0 unknown."""
    d0 = coords[mw, 0] - coords[mu, 0]
    d1 = coords[mw, 1] - coords[mu, 1]
    d2 = coords[mw, 2] - coords[mu, 2]
    if abs(d0) > h2[0] or abs(d1) > h2[1] or abs(d2) > h2[2]:
        return 0, 0.0
    first = mu
    if d0 < 0 or (d0 == 0 and (d1 < 0 or (d1 == 0 and d2 < 0))):
        first = mw
        d0 = -d0
        d1 = -d1
        d2 = -d2
    col = lut[(d0 + h2[0]) * lstr[0] + (d1 + h2[1]) * lstr[1] + (d2 + h2[2]) * lstr[2]]
    if col < 0 or cnt[first, col] == 0:
        return 0, 0.0
    return (1 if cnt[first, col] > 0 else 2), float(cons[first, col])


@njit(parallel=True, cache=True)
def elect(voxels_pflat, nelect, woff, cand_pad, cand_vi, cand_mem, vrows, scores, sizes, cover_th,
          coords, h2, lut, lstr, cons, cnt, out):
    """Each voxel elects up to nelect[i] covering candidates (value > cover_th), best first: higher
    score, then larger cover size, then smaller index (= smaller linear index); the k-th must be
    separated (negative consensus between the centres) from the ones elected before."""
    npos = len(woff)
    for i in prange(len(voxels_pflat)):
        xp = voxels_pflat[i]
        for k in range(nelect[i]):
            best = -1
            bs = 0.0
            bz = 0
            for e in range(npos):
                ci = cand_pad[xp - woff[e]]
                if ci < 0 or vrows[cand_vi[ci], e] <= cover_th:
                    continue
                if best >= 0:
                    sc = scores[ci]
                    if sc < bs or (sc == bs and (sizes[ci] < bz or (sizes[ci] == bz and ci > best))):
                        continue
                ok = True
                for j in range(k):
                    prev = out[i, j]
                    if prev == ci:
                        ok = False
                        break
                    has, val = _pair_consensus(cand_mem[prev], cand_mem[ci], coords, h2, lut, lstr, cons, cnt)
                    if has == 0 or val >= 0.0:
                        ok = False
                        break
                if ok:
                    best = ci
                    bs = scores[ci]
                    bz = sizes[ci]
            if best < 0:
                break
            out[i, k] = best


@njit(cache=True)
def greedy_cover(order, cand_pflat, cand_vi, vrows, woff, mem_pad, cover_th, n_members, thin_out=True):
    """Ranked cover with pixTh = 0 then (``thin_out``) thin-out greedy set cover (ppp_reference §4.4–4.5).

    Returns a bool per candidate. The thin-out loop stops when no selected patch covers any
    remaining voxel, so it always terminates (bug 3)."""
    npos = len(woff)
    ncand = len(cand_pflat)
    covered = np.zeros(n_members, dtype=np.bool_)
    sel = np.zeros(ncand, dtype=np.bool_)
    for ci in order:
        c = cand_pflat[ci]
        vi = cand_vi[ci]
        new = False
        for e in range(npos):
            m = mem_pad[c + woff[e]]
            if m >= 0 and not covered[m] and vrows[vi, e] > cover_th:
                new = True
                break
        if new:
            sel[ci] = True
            for e in range(npos):
                m = mem_pad[c + woff[e]]
                if m >= 0 and vrows[vi, e] > cover_th:
                    covered[m] = True
    if not thin_out:
        return sel
    # thin-out over the selected, in rank order
    chosen = np.empty(ncand, dtype=np.int64)
    ns = 0
    for ci in order:
        if sel[ci]:
            chosen[ns] = ci
            ns += 1
    chosen = chosen[:ns]
    ptr = np.zeros(ns + 1, dtype=np.int64)
    for s in range(ns):
        c = cand_pflat[chosen[s]]
        vi = cand_vi[chosen[s]]
        k = 0
        for e in range(npos):
            if mem_pad[c + woff[e]] >= 0 and vrows[vi, e] > cover_th:
                k += 1
        ptr[s + 1] = ptr[s] + k
    sets = np.empty(ptr[ns], dtype=np.int64)
    inv_cnt = np.zeros(n_members + 1, dtype=np.int64)
    for s in range(ns):
        c = cand_pflat[chosen[s]]
        vi = cand_vi[chosen[s]]
        k = ptr[s]
        for e in range(npos):
            m = mem_pad[c + woff[e]]
            if m >= 0 and vrows[vi, e] > cover_th:
                sets[k] = m
                inv_cnt[m + 1] += 1
                k += 1
    inv_ptr = np.cumsum(inv_cnt)
    inv = np.empty(inv_ptr[n_members], dtype=np.int64)
    fill = inv_ptr[:-1].copy()
    for s in range(ns):
        for k in range(ptr[s], ptr[s + 1]):
            m = sets[k]
            inv[fill[m]] = s
            fill[m] += 1
    gain = ptr[1:] - ptr[:-1]
    done = np.zeros(n_members, dtype=np.bool_)
    keep = np.zeros(ncand, dtype=np.bool_)
    while True:
        best = -1
        bg = 0
        for s in range(ns):
            if gain[s] > bg:
                bg = gain[s]
                best = s
        if best < 0:
            break
        keep[chosen[best]] = True
        for k in range(ptr[best], ptr[best + 1]):
            m = sets[k]
            if not done[m]:
                done[m] = True
                for t in range(inv_ptr[m], inv_ptr[m + 1]):
                    gain[inv[t]] -= 1
    return keep


@njit(parallel=True, cache=True)
def candidate_pairs(sel_pflat, sel_pad, box_off):
    """All pairs (i, j), j = the selected patch at sel_pflat[i] + box_off[k] (positive offsets only)."""
    n = len(sel_pflat)
    counts = np.zeros(n + 1, dtype=np.int64)
    for i in prange(n):
        k = 0
        for o in range(len(box_off)):
            if sel_pad[sel_pflat[i] + box_off[o]] >= 0:
                k += 1
        counts[i + 1] = k
    ptr = np.cumsum(counts)
    pairs = np.empty((ptr[n], 2), dtype=np.int64)
    for i in prange(n):
        k = ptr[i]
        for o in range(len(box_off)):
            j = sel_pad[sel_pflat[i] + box_off[o]]
            if j >= 0:
                pairs[k, 0] = i
                pairs[k, 1] = j
                k += 1
    return pairs


@njit(cache=True)
def first_support(sup_ptr, sup_mem, n_members):
    """Per member: the first (smallest) selected patch whose support holds it, -1 if none."""
    out = np.full(n_members, -1, dtype=np.int64)
    for j in range(len(sup_ptr) - 1):
        for q in range(sup_ptr[j], sup_ptr[j + 1]):
            if out[sup_mem[q]] < 0:
                out[sup_mem[q]] = j
    return out


@njit(parallel=True, cache=True)
def voxel_patch_capacity(rows_mem, coords, jfirst, line_ptr, img_zy, sel_coords, h):
    """Per row of voxel_patch_sums: the selected patches j > jfirst[u] within 3h of u (an upper bound
    of its entries: those with at least one consensus pair)."""
    out = np.empty(len(rows_mem), dtype=np.int64)
    e_i = np.zeros(1, dtype=np.int64)
    e_f = np.zeros(1, dtype=np.float32)
    e_2f = np.zeros((1, 2), dtype=np.float64)
    e_2i = np.zeros((1, 2), dtype=np.int32)
    e_rows = np.zeros((1, 1), dtype=np.int64)
    for r in prange(len(rows_mem)):
        u = rows_mem[r]
        out[r] = _voxel_patch_row(r, u, coords, jfirst[u], line_ptr, img_zy, sel_coords, e_i, e_rows, h, h, 0, e_2f,
                                  e_f, e_i, e_i, e_2f, e_2i, True)
    return out


@njit(parallel=True, cache=True)
def voxel_patch_sums(rows_mem, mem_pflat, coords, mem_pad, nb_off, nb_d, jfirst, line_ptr, img_zy, sel_coords,
                     sup_rel, sup_rows, h, bw, h2, lut, lstr, cons, cnt, b_ptr, b_end, b_sel, b_val, b_num, chunk_rows,
                     order):
    """B[u, j] = sums and counts of the consensus between member u and the support of selected patch j,
    split into [primary, fallback], for every u in rows_mem and every selected j within 3h of u that
    comes after the first patch whose support holds u (jfirst[u]; the only entries pair_weights reads).

    Per row u: the consensus of u with every voxel within 2h goes into a scratch box (both halves of
    the stored pairs; zero where there is none), then each B[u, j] is a gather over the support
    entries of j in the window rows within 2h of u, in window order (= ascending voxel order, the
    order every sum is added in). The box ``bw`` = (4h+1, 4h+1, 8h+1) is 4h wide in x, so entries
    beyond 2h read zeros; ``sup_rel``: box index of each support entry relative to its patch centre;
    ``sup_rows``: ``window_row_starts`` of the supports.
    ``line_ptr``: the selected patches (ascending linear index) of each image line z * Y + y.
    b_ptr: CSR capacity per row (voxel_patch_capacity), filled in ascending j up to b_end (written);
    the rest of the capacity is not written. ``order``: the chunks of ``chunk_rows`` rows (one scratch
    box each) in the order the threads take them (``_schedule``)."""
    nbox = bw[0] * bw[1] * bw[2]
    centre = ((2 * h[0]) * bw[1] + 2 * h[1]) * bw[2] + 4 * h[2]
    nb_box = (nb_d[:, 0] * bw[1] + nb_d[:, 1]) * bw[2] + nb_d[:, 2] + centre
    # the pair (u, u + d) is stored in row u for lexicographically positive d, else in row u + d at column -d
    nb_pos = np.empty(len(nb_d), dtype=np.bool_)
    nb_col = np.empty(len(nb_d), dtype=np.int64)
    for o in range(len(nb_d)):
        d0 = nb_d[o, 0]
        d1 = nb_d[o, 1]
        d2 = nb_d[o, 2]
        pos = d0 > 0 or (d0 == 0 and (d1 > 0 or (d1 == 0 and d2 > 0)))
        if not pos:
            d0 = -d0
            d1 = -d1
            d2 = -d2
        nb_pos[o] = pos
        nb_col[o] = lut[(d0 + h2[0]) * lstr[0] + (d1 + h2[1]) * lstr[1] + (d2 + h2[2]) * lstr[2]]
    nrows = len(rows_mem)
    nchunks = (nrows + chunk_rows - 1) // chunk_rows
    for it in prange(nchunks):
        chunk = order[it]
        bv = np.zeros((nbox, 2), dtype=np.float64)  # primary value, count code side by side (one cache line)
        bv1 = np.zeros(nbox, dtype=np.float32)  # fallback value
        for r in range(chunk * chunk_rows, min(nrows, (chunk + 1) * chunk_rows)):
            u = rows_mem[r]
            up = mem_pflat[u]
            for o in range(len(nb_off)):  # every box cell within 2h is written: no clearing needed
                w = mem_pad[up + nb_off[o]]
                bi = nb_box[o]
                v = np.float32(0.0)
                c = 0
                if w >= 0:
                    first = u if nb_pos[o] else w
                    c = cnt[first, nb_col[o]]
                    v = cons[first, nb_col[o]]
                if c > 0:  # count code: 1 primary, 2^32 fallback, 0 no consensus (both counts in one exact sum)
                    bv[bi, 0] = v
                    bv[bi, 1] = 1.0
                    bv1[bi] = 0.0
                elif c < 0:
                    bv[bi, 0] = 0.0
                    bv[bi, 1] = 4294967296.0
                    bv1[bi] = v
                else:
                    bv[bi, 0] = 0.0
                    bv[bi, 1] = 0.0
                    bv1[bi] = 0.0
            b_end[r] = _voxel_patch_row(r, u, coords, jfirst[u], line_ptr, img_zy, sel_coords, sup_rel, sup_rows, h,
                                        bw, centre, bv, bv1, b_ptr, b_sel, b_val, b_num, False)


@njit(cache=True)
def _voxel_patch_row(r, u, coords, jmin, line_ptr, img_zy, sel_coords, sup_rel, sup_rows, h, bw, centre, bv, bv1, b_ptr,
                     b_sel, b_val, b_num, count_only):
    """The entries B[u, j], j > jmin, of row r, from the scratch box of u (filled by voxel_patch_sums).
    Returns the end of the row's filled entries; with ``count_only`` (nothing read or written but
    coords, line_ptr and sel_coords) the number of selected j > jmin within 3h: the row's capacity."""
    u0 = coords[u, 0]
    u1 = coords[u, 1]
    u2 = coords[u, 2]
    py = 2 * h[1] + 1
    k = 0 if count_only else b_ptr[r]
    for z in range(max(0, u0 - 3 * h[0]), min(img_zy[0], u0 + 3 * h[0] + 1)):
        rz = z - u0
        dz0 = max(-h[0], -2 * h[0] - rz)
        dz1 = min(h[0], 2 * h[0] - rz)
        for y in range(max(0, u1 - 3 * h[1]), min(img_zy[1], u1 + 3 * h[1] + 1)):
            line = z * img_zy[1] + y
            if line_ptr[line + 1] - 1 <= jmin:  # no patch after jmin on this line
                continue
            ry = y - u1
            dy0 = max(-h[1], -2 * h[1] - ry) + h[1]
            dy1 = min(h[1], 2 * h[1] - ry) + h[1]
            for j in range(max(line_ptr[line], jmin + 1), line_ptr[line + 1]):
                rx = sel_coords[j, 2] - u2
                if rx < -3 * h[2]:
                    continue
                if rx > 3 * h[2]:
                    break
                if count_only:
                    k += 1
                    continue
                base = centre + (rz * bw[1] + ry) * bw[2] + rx
                a0 = 0.0
                a2 = 0.0  # second partial sum of the primary values (odd entries): half the add latency chain
                a1 = 0.0
                n = 0.0
                for dz in range(dz0, dz1 + 1):
                    row = (dz + h[0]) * py
                    q0 = sup_rows[j, row + dy0]
                    q1 = sup_rows[j, row + dy1 + 1]
                    q = q0
                    while q + 1 < q1:
                        bi = base + sup_rel[q]
                        bj = base + sup_rel[q + 1]
                        a0 += bv[bi, 0]
                        a2 += bv[bj, 0]
                        n += bv[bi, 1] + bv[bj, 1]
                        q += 2
                    if q < q1:
                        bi = base + sup_rel[q]
                        a0 += bv[bi, 0]
                        n += bv[bi, 1]
                nf = int(n) >> 32
                np_ = int(n) & 0xFFFFFFFF
                if nf != 0:  # fallback pairs (rare): their own sum
                    for dz in range(dz0, dz1 + 1):
                        row = (dz + h[0]) * py
                        for q in range(sup_rows[j, row + dy0], sup_rows[j, row + dy1 + 1]):
                            a1 += bv1[base + sup_rel[q]]
                a0 += a2
                if n != 0.0:
                    b_sel[k] = j
                    b_val[k, 0] = a0
                    b_val[k, 1] = a1
                    b_num[k, 0] = np_
                    b_num[k, 1] = nf
                    k += 1
    return k


@njit(parallel=True, cache=True)
def pair_weights(pair_ptr, pairs, sup_ptr, sup_mem, row_of, b_ptr, b_end, b_sel, b_val, b_num, weights, npairs,
                 tier, chunk_nodes, order):
    """Edge (i, j): mean of the consensus over all member pairs (u in support i, w in support j, u != w)
    with votes: W = sum over u in S_i of B[u, j]. Tier 1 if any pair has primary consensus, else tier
    2 (fallback consensus only). One iteration per source node i (its pairs are contiguous); ``order``:
    the chunks of ``chunk_nodes`` nodes (one scratch map each) in the order the threads take them
    (``_schedule``)."""
    nodes = len(pair_ptr) - 1
    nchunks = (nodes + chunk_nodes - 1) // chunk_nodes
    for it in prange(nchunks):
        chunk = order[it]
        slot = np.full(nodes, -1, dtype=np.int32)
        for i in range(chunk * chunk_nodes, min(nodes, (chunk + 1) * chunk_nodes)):
            _pair_weights_node(i, pair_ptr, pairs, sup_ptr, sup_mem, row_of, b_ptr, b_end, b_sel, b_val, b_num,
                               weights, npairs, tier, slot)


@njit(cache=True)
def _pair_weights_node(i, pair_ptr, pairs, sup_ptr, sup_mem, row_of, b_ptr, b_end, b_sel, b_val, b_num, weights,
                       npairs, tier, slot):
    """The edges of source node i; ``slot`` (node -> edge of i, -1) is all -1 and is left so."""
    p0 = pair_ptr[i]
    p1 = pair_ptr[i + 1]
    if p0 == p1:
        return
    for p in range(p0, p1):
        slot[pairs[p, 1]] = p - p0
    acc = np.zeros((p1 - p0, 2))
    num = np.zeros((p1 - p0, 2), dtype=np.int64)
    jmax = pairs[p1 - 1, 1]  # the pairs of i are in ascending j, and so is every row of B
    for a in range(sup_ptr[i], sup_ptr[i + 1]):
        r = row_of[sup_mem[a]]
        lo = b_ptr[r]
        hi = b_end[r]
        while lo < hi:  # first entry with j > i
            mid = (lo + hi) // 2
            if b_sel[mid] <= i:
                lo = mid + 1
            else:
                hi = mid
        for k in range(lo, b_end[r]):
            j = b_sel[k]
            if j > jmax:
                break
            s = slot[j]
            if s < 0:
                continue
            for t in range(2):
                acc[s, t] += b_val[k, t]
                num[s, t] += b_num[k, t]
    for s in range(p1 - p0):
        p = p0 + s
        for t in range(2):
            if num[s, t] > 0:
                weights[p] = acc[s, t] / num[s, t]
                npairs[p] = num[s, t]
                tier[p] = t + 1
                break
    for p in range(p0, p1):
        slot[pairs[p, 1]] = -1


@njit(cache=True, inline="always")
def _find(parent, a):
    r = a
    while parent[r] != r:
        r = parent[r]
    while parent[a] != r:
        nxt = parent[a]
        parent[a] = r
        a = nxt
    return r


@njit(cache=True)
def union_find(n, pairs, keep):
    """Component representative (smallest node index) of every node, merging pairs where keep."""
    parent = np.arange(n)
    for k in range(len(pairs)):
        if not keep[k]:
            continue
        ra = _find(parent, pairs[k, 0])
        rb = _find(parent, pairs[k, 1])
        if ra < rb:
            parent[rb] = ra
        elif rb < ra:
            parent[ra] = rb
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = _find(parent, i)
    return out


@njit(cache=True)
def mutex_watershed(n, pairs, attractive, order):
    """Mutex watershed: edges in the given order; attractive edges merge unless a mutex separates
    the clusters, repulsive edges add a mutex. Returns the smallest node index of each cluster."""
    parent = np.arange(n)
    head = np.full(n, -1, dtype=np.int64)
    tail = np.full(n, -1, dtype=np.int64)
    length = np.zeros(n, dtype=np.int64)
    m = len(order)
    nxt = np.full(2 * m, -1, dtype=np.int64)
    other = np.empty(2 * m, dtype=np.int64)
    nm = 0
    for k in order:
        ra = _find(parent, pairs[k, 0])
        rb = _find(parent, pairs[k, 1])
        if ra == rb:
            continue
        # is there a mutex between ra and rb? scan the shorter list
        sa, sb = (ra, rb) if length[ra] <= length[rb] else (rb, ra)
        mutex = False
        t = head[sa]
        while t >= 0:
            if _find(parent, other[t]) == sb:
                mutex = True
                break
            t = nxt[t]
        if mutex:
            continue
        if attractive[k]:
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            parent[hi] = lo
            if head[hi] >= 0:
                if head[lo] < 0:
                    head[lo] = head[hi]
                else:
                    nxt[tail[lo]] = head[hi]
                tail[lo] = tail[hi]
                length[lo] += length[hi]
        else:
            for r, o in ((ra, rb), (rb, ra)):
                other[nm] = o
                if head[r] < 0:
                    head[r] = nm
                else:
                    nxt[tail[r]] = nm
                tail[r] = nm
                length[r] += 1
                nm += 1
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = _find(parent, i)
    return out


@njit(cache=True, inline="always")
def _add_vote(labs, acc, nf, lab, v, use_count):
    """Add a vote ``v`` (or 1) for instance ``lab`` to the voxel's list of (labs, acc); returns its length."""
    f = 0
    while f < nf and labs[f] != lab:
        f += 1
    if f == nf:
        labs[nf] = lab
        nf += 1
    acc[f] += 1.0 if use_count else v
    return nf


@njit(cache=True, inline="always")
def _write_winners(labs, acc, nf, n, out, col):
    """``out[k, col]`` = the k-th largest accumulated instance (ties -> smaller id), for k < n."""
    for k in range(min(n, out.shape[0])):
        best = -1
        for f in range(nf):
            if labs[f] == 0:
                continue
            if best < 0 or acc[f] > acc[best] or (acc[f] == acc[best] and labs[f] < labs[best]):
                best = f
        if best < 0:
            break
        out[k, col] = labs[best]
        labs[best] = 0


@njit(parallel=True, cache=True)
def paint(voxels_pflat, voxels_flat, nlab, woff, sel_pad, sel_vi, sel_label, vrows, th, use_count, out):
    """Each voxel takes the nlab[i] instances with the largest summed patch value (or count) over the
    selected patches covering it with value > th; ties -> smaller id."""
    npos = len(woff)
    for i in prange(len(voxels_pflat)):
        xp = voxels_pflat[i]
        labs = np.zeros(npos, dtype=np.int64)
        acc = np.zeros(npos, dtype=np.float64)
        nf = 0
        for e in range(npos):
            si = sel_pad[xp - woff[e]]
            if si < 0:
                continue
            v = vrows[sel_vi[si], e]
            if v > th:
                nf = _add_vote(labs, acc, nf, sel_label[si], v, use_count)
        _write_winners(labs, acc, nf, nlab[i], out, voxels_flat[i])


@njit(parallel=True, cache=True)
def paint_rows(voxels, nlab, dpos, sel_index, box_strides, rows, sel_label, th, use_count, out):
    """``paint`` for voxels given by coordinates and selected patches given by their rows: voxel i (box
    coordinates ``voxels[i]``) sums, over window positions e in order, the value ``rows[s, e]`` of the
    selected patch s centred at ``voxels[i] - dpos[e]`` (``sel_index`` over the box, -1 where none)."""
    npos = dpos.shape[0]
    for i in prange(voxels.shape[0]):
        labs = np.zeros(npos, dtype=np.int64)
        acc = np.zeros(npos, dtype=np.float64)
        nf = 0
        for e in range(npos):
            flat = ((voxels[i, 0] - dpos[e, 0]) * box_strides[0] + (voxels[i, 1] - dpos[e, 1]) * box_strides[1]
                    + (voxels[i, 2] - dpos[e, 2]))
            si = sel_index[flat]
            if si < 0:
                continue
            v = rows[si, e]
            if v > th:
                nf = _add_vote(labs, acc, nf, sel_label[si], v, use_count)
        _write_winners(labs, acc, nf, nlab[i], out, i)
