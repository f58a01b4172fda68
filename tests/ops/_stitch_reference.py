"""An in-memory stitch of contracted blocks (the test oracle of the distributed agglomeration's logic):
resolve the foreign ends through the blocks' maps, phase 1 over the attractive links, phase 2 over the
tier-2 links with the mutexes, ids = rank of the smallest patch id."""

from __future__ import annotations

import numpy as np

from ppp_dist.ops.contract import ATTRACT, MUTEX, TIER2, ContractedBlock
from ppp_dist.ops.partition import merge_tier2
from ppp_dist.ops.union_find import UnionFind, apply_table


def stitch(blocks: list[ContractedBlock], patch_ids: list[np.ndarray],
           threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(patch ids ascending, instance id 1..n of each) from the blocks' contracted graphs."""
    map_p = np.concatenate([b.map_patches for b in blocks])
    map_c = np.concatenate([b.map_clusters for b in blocks])
    order = np.argsort(map_p)
    map_p, map_c = map_p[order], map_c[order]
    links = np.concatenate([b.links for b in blocks])
    b = links["b"].copy()
    foreign = b == 0
    pos = np.searchsorted(map_p, links["v"][foreign])
    pos = np.minimum(pos, max(len(map_p) - 1, 0))
    if foreign.any():
        assert (map_p[pos] == links["v"][foreign]).all(), "a link names a patch that no block maps"
        b[foreign] = map_c[pos]
    a = links["a"]
    clusters = np.concatenate([blk.cluster_ids for blk in blocks])
    uf = UnionFind(clusters)
    att = links["kind"] == ATTRACT
    uf.union(a[att], b[att])
    seg_nodes, seg = uf.ids, uf.labels()
    sa, sb = apply_table(a, seg_nodes, seg), apply_table(b, seg_nodes, seg)
    t2 = (links["kind"] == TIER2) & (sa != sb)
    if t2.any():
        mx = (links["kind"] == MUTEX) & (sa != sb)
        nodes = np.unique(np.concatenate([sa[t2], sb[t2], sa[mx], sb[mx]]))
        roots = merge_tier2(nodes, sa[mx], sb[mx], sa[t2], sb[t2], links["weight"][t2], links["u"][t2],
                            links["v"][t2], threshold=threshold)
        seg = apply_table(seg, nodes, roots)
    ids = np.concatenate(patch_ids)
    patch_cluster = np.concatenate([blk.patch_clusters for blk in blocks])
    root = apply_table(patch_cluster, seg_nodes, seg)
    order = np.argsort(ids)
    ids, root = ids[order], root[order]
    _, rank = np.unique(root, return_inverse=True)
    return ids, rank.astype(np.int64) + 1
