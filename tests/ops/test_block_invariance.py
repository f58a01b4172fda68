"""Block invariance of every step: computed on a crop = core + the halo stated in docs/assembly.md,
the results for what the core owns equal the whole-volume results (bit for bit)."""

import numpy as np
import pytest
from _assembly_helpers import crossing_worms_2d, oracle

from ppp_dist.ops._geometry import numinst_from_prob
from ppp_dist.ops.consensus import compute_consensus, compute_scores, prepare_field
from ppp_dist.ops.paint import paint_instances
from ppp_dist.ops.partition import partition
from ppp_dist.ops.patch_graph import node_ids, patch_graph
from ppp_dist.ops.selection import select_patches

PS = (1, 5, 5)
H = 2  # h in y and x
CORE = (slice(0, 1), slice(40, 64), slice(36, 60))


def _run(patches, numinst, box=None):
    """All steps on the crop box (or the whole volume); returns results keyed by global coordinates."""
    origin = np.zeros(3, dtype=np.int64)
    if box is not None:
        origin = np.array([s.start for s in box])
        patches, numinst = patches[(slice(None),) + box], numinst[box]
    field = prepare_field(patches, numinst, PS)
    cons = compute_consensus(field)
    scores = compute_scores(field, cons)
    sel = select_patches(field, cons, scores)
    graph = patch_graph(field, cons, sel, origin=origin, global_shape=GLOBAL_SHAPE)
    return dict(field=field, cons=cons, scores=scores, sel=sel, graph=graph, origin=origin)


def _box(halo):
    return tuple(slice(max(0, s.start - (halo if a else 0)), min(n, s.stop + (halo if a else 0)))
                 for a, (s, n) in enumerate(zip(CORE, GLOBAL_SHAPE)))


def _in_core(coords):
    return np.all([(coords[:, a] >= s.start) & (coords[:, a] < s.stop) for a, s in enumerate(CORE)], axis=0)


GLOBAL_SHAPE = (1, 96, 96)


@pytest.fixture(scope="module")
def volume():
    inst = crossing_worms_2d(GLOBAL_SHAPE, seed=2)
    patches, ni = oracle(inst, PS)
    rng = np.random.default_rng(5)
    patches = np.where(patches > 0.5, 0.8, 0.2).astype(np.float32)
    flip = rng.random(patches.shape) < 0.05
    patches[flip] = 1 - patches[flip]
    numinst = numinst_from_prob(ni)
    return patches, numinst, _run(patches, numinst)


def _rows_by_coord(run, coords_global):
    f = run["field"]
    index = {tuple(c): i for i, c in enumerate(f.member_coords + run["origin"])}
    return np.array([index[tuple(c)] for c in coords_global])


def test_consensus_rows_need_halo_4h(volume):
    # 2h for one pass; the refinement checks the entries of the patches within h of a row against the
    # first-pass rows within 2h, which read inputs within 4h
    patches, numinst, whole = volume
    crop = _run(patches, numinst, _box(4 * H))
    fw, fc = whole["field"], crop["field"]
    core = fw.member_coords[_in_core(fw.member_coords)]
    rw, rc = _rows_by_coord(whole, core), _rows_by_coord(crop, core)
    np.testing.assert_array_equal(whole["cons"].values[rw], crop["cons"].values[rc])
    np.testing.assert_array_equal(whole["cons"].counts[rw], crop["cons"].counts[rc])
    # and `owned` computes just those rows
    owned = np.zeros(fc.numinst.shape, bool)
    owned[tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(CORE, _box(4 * H)))] = True
    only = compute_consensus(fc, owned=owned)
    np.testing.assert_array_equal(only.values[rc], crop["cons"].values[rc])
    assert not only.counts[np.setdiff1d(np.arange(fc.n_members), rc)].any()


def _cand_coords(run):
    f = run["field"]
    return f.voter_coords[f.candidates] + run["origin"]


def test_scores_need_5h_and_selection_7h(volume):
    patches, numinst, whole = volume
    cw = _cand_coords(whole)
    core = _in_core(cw)
    for halo, check in ((5 * H, "scores"), (7 * H, "selection")):
        crop = _run(patches, numinst, _box(halo))
        cc = _cand_coords(crop)
        index = {tuple(c): i for i, c in enumerate(cc)}
        idx = np.array([index[tuple(c)] for c in cw[core]])
        np.testing.assert_array_equal(whole["scores"][core], crop["scores"][idx])
        if check == "selection":
            sel_w = np.zeros(len(cw), bool)
            sel_w[whole["sel"]] = True
            sel_c = np.zeros(len(cc), bool)
            sel_c[crop["sel"]] = True
            np.testing.assert_array_equal(sel_w[core], sel_c[idx])
            assert sel_w[core].sum() > 10


def test_edges_need_11h_and_paint_8h(volume):
    patches, numinst, whole = volume
    gw = whole["graph"]
    crop = _run(patches, numinst, _box(11 * H))
    gc = crop["graph"]
    np.testing.assert_array_equal(gw.node_ids, node_ids(gw.coords, global_shape=GLOBAL_SHAPE))

    def edges(g, origin):
        first = _in_core(g.coords[g.pairs[:, 0]] + origin)
        ids = g.node_ids[g.pairs[first]]
        return {tuple(e): (w, n, t) for e, w, n, t in zip(ids.tolist(), g.weights[first], g.counts[first],
                                                          g.tiers[first])}

    ew, ec = edges(gw, whole["origin"]), edges(gc, crop["origin"])
    assert len(ew) > 20 and ew.keys() == ec.keys()
    assert all(ew[k] == ec[k] for k in ew)
    # paint: node labels from the global partition, looked up by node id
    labels_w = partition(len(gw.nodes), gw.pairs, gw.weights, gw.counts, gw.tiers)
    lut = dict(zip(gw.node_ids.tolist(), labels_w.tolist()))
    whole_paint = paint_instances(whole["field"], whole["sel"], labels_w)
    box = _box(8 * H)
    crop6 = _run(patches, numinst, box)
    g6 = crop6["graph"]
    # selection is exact only within core + h (all a core voxel reads); farther patches may differ
    near = np.all([(g6.coords[:, a] + box[a].start >= s.start - (H if a else 0)) &
                   (g6.coords[:, a] + box[a].start < s.stop + (H if a else 0)) for a, s in enumerate(CORE)], axis=0)
    known = np.array([i in lut for i in g6.node_ids.tolist()])
    assert known[near].all()
    labels_c = np.array([lut[i] for i in g6.node_ids[known].tolist()], dtype=np.int64)
    crop_paint = paint_instances(crop6["field"], crop6["sel"][known], labels_c)
    local_core = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(CORE, box))
    np.testing.assert_array_equal(whole_paint[(slice(None),) + CORE], crop_paint[(slice(None),) + local_core])
    assert (whole_paint[(0,) + CORE] > 0).sum() > 50
