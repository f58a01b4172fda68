"""Selection, patch-pair weights, partition, painting and post-processing on small hand-made inputs."""

import numpy as np
import pytest
from _assembly_helpers import crossing_tubes_3d, oracle

from ppp_dist.errors import InputDataError
from ppp_dist.ops._geometry import numinst_from_prob
from ppp_dist.ops._reference import pair_weights_numpy
from ppp_dist.ops.consensus import compute_consensus, compute_scores, prepare_field
from ppp_dist.ops.paint import paint_instances
from ppp_dist.ops.partition import partition
from ppp_dist.ops.patch_graph import node_ids, patch_graph
from ppp_dist.ops.postprocess import dilate, remove_small_and_relabel
from ppp_dist.ops.selection import select_patches


@pytest.fixture(scope="module")
def noisy_tubes():
    ps = (5, 5, 5)
    p, ni = oracle(crossing_tubes_3d((18, 18, 18), 2), ps)
    rng = np.random.default_rng(3)
    p = np.clip(p * 0.6 + 0.2 + rng.normal(0, 0.15, p.shape), 0, 1).astype(np.float32)
    field = prepare_field(p, numinst_from_prob(ni), ps)
    cons = compute_consensus(field)
    return field, cons, compute_scores(field, cons)


@pytest.mark.parametrize("mode", ["local", "greedy"])
def test_pair_weights_match_brute_force(noisy_tubes, mode):
    field, cons, scores = noisy_tubes
    sel = select_patches(field, cons, scores, mode=mode)
    graph = patch_graph(field, cons, sel)
    assert len(graph.pairs) > 50
    d = np.abs(graph.coords[graph.pairs[:, 1]] - graph.coords[graph.pairs[:, 0]])
    assert (d <= 8).all() and (d == 8).any()  # 2 (ps - 1) = 4h per axis
    w, n, t = pair_weights_numpy(field, cons, field.candidates[sel], graph.pairs)
    np.testing.assert_allclose(graph.weights, w, atol=1e-6)
    np.testing.assert_array_equal(graph.counts, n)
    np.testing.assert_array_equal(graph.tiers, t)


def test_local_selection_covers_every_coverable_voxel(noisy_tubes):
    field, cons, scores = noisy_tubes
    sel = select_patches(field, cons, scores, mode="local")
    vi = field.candidates[sel]
    covered = np.zeros(field.n_members, bool)
    coverable = np.zeros(field.n_members, bool)
    for v in range(len(field.voter_coords)):
        s, e = field.vm_ptr[v], field.vm_ptr[v + 1]
        hit = field.vrows[v, field.vm_pos[s:e]] > 0.5
        if field.vkind[v] == 1:
            coverable[field.vm_mem[s:e][hit]] = True
    for v in vi:
        s, e = field.vm_ptr[v], field.vm_ptr[v + 1]
        covered[field.vm_mem[s:e][field.vrows[v, field.vm_pos[s:e]] > 0.5]] = True
    np.testing.assert_array_equal(covered, coverable)
    greedy = select_patches(field, cons, scores, mode="greedy")
    assert 0 < len(greedy) < len(sel)
    # without the thin-out the ranked cover keeps its redundant patches: a strict superset
    ranked = select_patches(field, cons, scores, mode="greedy", thin_out=False)
    assert set(greedy) < set(ranked)


def test_greedy_terminates_when_voxels_are_uncoverable():
    ps = (1, 3, 3)
    p = np.zeros((9, 1, 5, 5), dtype=np.float32)
    p[4, 0, 1:4, 1:4] = 1.0  # each patch covers only its centre...
    p[4, 0, 2, 2] = 0.2  # ...except the middle one, which covers nothing: uncoverable
    field = prepare_field(p, np.ones((1, 5, 5), dtype=np.uint8), ps)
    cons = compute_consensus(field)
    sel = select_patches(field, cons, compute_scores(field, cons), mode="greedy")
    assert len(sel) == 8


def test_connected_components_keeps_isolated_nodes_and_orders_ids():
    pairs = np.array([[0, 1], [2, 3], [1, 3], [4, 5]])
    labels = partition(7, pairs, np.array([0.5, 0.2, -0.3, 0.0]))
    np.testing.assert_array_equal(labels, [1, 1, 2, 2, 3, 4, 5])  # weight 0 does not merge; node 6 kept
    labels = partition(7, pairs, np.array([0.5, 0.2, 0.3, 0.1]), threshold=0.15)
    np.testing.assert_array_equal(labels, [1, 1, 1, 1, 2, 3, 4])


def test_mutex_watershed_respects_strong_repulsion():
    # triangle: 0-1 attractive 0.9, 1-2 attractive 0.4, 0-2 repulsive -0.8 -> {0, 1}, {2}
    pairs = np.array([[0, 1], [1, 2], [0, 2]])
    w = np.array([0.9, 0.4, -0.8])
    np.testing.assert_array_equal(partition(3, pairs, w, method="mutex_watershed"), [1, 1, 2])
    np.testing.assert_array_equal(partition(3, pairs, w), [1, 1, 1])  # CC ignores repulsion


def test_fallback_edges_cannot_cross_a_primary_mutex():
    pairs = np.array([[0, 1], [1, 2], [2, 3]])
    w = np.array([0.9, -0.5, 0.7])
    tiers = np.array([1, 1, 2])
    counts = np.array([5, 5, 5])
    # 0-1 merge (tier 1), 1-2 mutex (tier 1), 2-3 fallback merge allowed
    np.testing.assert_array_equal(partition(4, pairs, w, counts, tiers), [1, 1, 2, 2])
    pairs = np.array([[0, 1], [2, 3], [0, 2], [1, 3]])
    w = np.array([0.9, 0.9, -0.5, 0.8])
    tiers = np.array([1, 1, 1, 2])
    for method in ("connected_components", "mutex_watershed"):
        labels = partition(4, pairs, w, np.ones(4), tiers, method=method)
        np.testing.assert_array_equal(labels, [1, 1, 2, 2])


def test_partition_errors():
    with pytest.raises(ValueError, match="partition must be one of"):
        partition(2, np.array([[0, 1]]), np.array([1.0]), method="multicut")
    with pytest.raises(ValueError, match="NaN"):
        partition(2, np.array([[0, 1]]), np.array([np.nan]))
    with pytest.raises(ValueError, match="outside"):
        partition(2, np.array([[0, 2]]), np.array([1.0]))


def test_paint_votes_ties_and_overlap_channels():
    ps = (1, 1, 3)
    p = np.zeros((3, 1, 1, 4), dtype=np.float32)
    p[1] = 1.0
    p[2, 0, 0, 0] = 0.8  # patch at x=0 claims x=1 with 0.8
    p[0, 0, 0, 2] = 0.8  # patch at x=2 claims x=1 with 0.8 (tie with the above)
    p[2, 0, 0, 2] = 0.6  # patch at x=2 claims x=3 with 0.6
    numinst = np.array([[[1, 2, 1, 1]]], dtype=np.uint8)
    field = prepare_field(p, numinst, ps)
    sel = np.arange(len(field.candidates))  # candidates x = 0, 2, 3
    out = paint_instances(field, sel, np.array([2, 1, 3]))
    assert out.shape == (2, 1, 1, 4) and out.dtype == np.uint32
    np.testing.assert_array_equal(out[0, 0, 0], [2, 1, 1, 3])  # x=3: 1.0 (own) beats 0.6
    np.testing.assert_array_equal(out[1, 0, 0], [0, 2, 0, 0])  # x=1 overlap: tie 0.8/0.8 -> 1 first, then 2
    out1 = paint_instances(field, sel, np.array([2, 1, 3]), max_num_inst=1)
    assert out1.shape == (1, 1, 1, 4)


def test_remove_small_relabel_and_dilate():
    lab = np.zeros((2, 1, 3, 5), dtype=np.uint32)
    lab[0, 0, 0, :3] = 7
    lab[0, 0, 2, 4] = 3  # size 1: removed
    lab[0, 0, 1, 1] = 9
    lab[1, 0, 1, 1] = 3  # overlap voxel with the small one
    out = remove_small_and_relabel(lab, min_size=1)  # 9 (1 voxel) removed, 3 -> 1, 7 -> 2
    np.testing.assert_array_equal(np.unique(out), [0, 1, 2])
    assert out[0, 0, 1, 1] == 1 and out[1, 0, 1, 1] == 0  # surviving label moved to channel 0
    assert out[0, 0, 2, 4] == 1 and (out[0, 0, 0, :3] == 2).all()
    d = dilate(out)
    assert d[0, 0, 1, 0] == 1  # touches 2 (above) and 1 (right): smallest id
    assert d[0, 0, 1, 1] == 1 and d[0, 0, 0, 3] == 2  # existing labels never overwritten
    with pytest.raises(InputDataError, match="channel stack"):
        remove_small_and_relabel(np.zeros((3, 3, 3), dtype=np.uint32))


def test_node_ids_are_global_linear_index_plus_one():
    ids = node_ids(np.array([[0, 0, 0], [1, 2, 3]]), origin=(10, 0, 0), global_shape=(20, 5, 6))
    np.testing.assert_array_equal(ids, [10 * 30 + 1, 11 * 30 + 2 * 6 + 3 + 1])


@pytest.mark.parametrize("dtype, ids", [(np.uint32, (2_000_000_000, 4_000_000_000)),
                                        (np.uint64, (2 ** 63 + 5, 2 ** 64 - 1)), (np.int64, (1, 2))])
def test_relabel_takes_any_id_without_allocating_by_its_size(dtype, ids):
    """ids near 4e9 or above 2^63 (as evaluate takes them): relabelled 1..n in order, memory by the voxels."""
    lab = np.zeros((1, 1, 24, 24), dtype)
    lab[0, 0, 2:9, 2:9] = ids[0]
    lab[0, 0, 12:20, 12:20] = ids[1]
    out = remove_small_and_relabel(lab)
    assert out.dtype == np.uint32 and out[0, 0, 3, 3] == 1 and out[0, 0, 13, 13] == 2 and out.max() == 2


def test_relabel_refuses_negative_ids():
    from ppp_dist.errors import InputDataError

    with pytest.raises(InputDataError, match="negative ids"):
        remove_small_and_relabel(np.full((1, 1, 4, 4), -3, np.int32))
