"""Patch targets and numinst targets (ppp_reference §1.2)."""

import numpy as np
import pytest

from ppp_dist.errors import InputDataError
from ppp_dist.ops.patches import numinst_onehot, numinst_target, patch_targets


def _reference_targets(seg, ps):
    k, nz, ny, nx = seg.shape
    h = [s // 2 for s in ps]
    out = np.zeros((int(np.prod(ps)), nz, ny, nx), dtype=np.uint8)
    e = 0
    for dz in range(-h[0], h[0] + 1):
        for dy in range(-h[1], h[1] + 1):
            for dx in range(-h[2], h[2] + 1):
                for z, y, x in np.ndindex(nz, ny, nx):
                    z2, y2, x2 = z + dz, y + dy, x + dx
                    if 0 <= z2 < nz and 0 <= y2 < ny and 0 <= x2 < nx:
                        out[e, z, y, x] = any(seg[c, z, y, x] != 0 and seg[c, z, y, x] == seg[c, z2, y2, x2]
                                              for c in range(k))
                e += 1
    return out


def test_patch_targets_match_definition_with_overlaps():
    rng = np.random.default_rng(0)
    seg = np.zeros((2, 4, 5, 6), dtype=np.uint16)
    seg[0][rng.random((4, 5, 6)) < 0.4] = 3
    seg[1][rng.random((4, 5, 6)) < 0.4] = 7
    got = patch_targets(seg, (3, 3, 3))
    assert got.dtype == np.uint8 and got.shape == (27, 4, 5, 6)
    np.testing.assert_array_equal(got, _reference_targets(seg, (3, 3, 3)))
    # centre channel is exactly the foreground; an overlap voxel's patch is the union of its instances
    np.testing.assert_array_equal(got[13], (seg != 0).any(axis=0))


def test_flat_labels_equal_single_channel_stack_and_border_is_background():
    lab = np.zeros((1, 6, 6), dtype=np.int32)
    lab[0, :3, :3] = 1
    lab[0, 3:, 3:] = 2
    got = patch_targets(lab, (1, 3, 3))
    np.testing.assert_array_equal(got, patch_targets(lab[None], (1, 3, 3)))
    # offset (0, -1, -1) at the top-left corner leaves the array: background
    assert got[0, 0, 0, 0] == 0 and got[8, 0, 0, 0] == 1
    # touching instances with different ids are "different"
    assert got[8, 0, 2, 2] == 0


def test_numinst_target_counts_and_clamps():
    seg = np.zeros((3, 1, 2, 2), dtype=np.uint8)
    seg[0, 0, 0, :] = 1
    seg[1, 0, 0, 1] = 2
    seg[2, 0, 0, 1] = 3
    seg[1, 0, 1, 0] = 2
    np.testing.assert_array_equal(numinst_target(seg)[0], [[1, 2], [1, 0]])
    np.testing.assert_array_equal(numinst_target(seg, 3)[0], [[1, 3], [1, 0]])
    onehot = numinst_onehot(numinst_target(seg))
    assert onehot.shape == (3, 1, 2, 2) and (onehot.sum(axis=0) == 1).all()


def test_patch_target_errors():
    with pytest.raises(InputDataError, match="integer label array"):
        patch_targets(np.zeros((4, 4, 4), dtype=np.float32), (3, 3, 3))
    with pytest.raises(ValueError, match="odd"):
        patch_targets(np.zeros((4, 4, 4), dtype=np.uint8), (3, 4, 3))
    with pytest.raises(InputDataError, match="channel stack"):
        patch_targets(np.zeros((4, 4), dtype=np.uint8), (3, 3, 3))
    with pytest.raises(ValueError, match="max_num_inst"):
        numinst_target(np.zeros((4, 4, 4), dtype=np.uint8), 0)


def test_patch_targets_box_equals_the_whole_targets_cropped():
    from ppp_dist.data import crossing_tubes_3d, crossing_worms_2d
    from ppp_dist.ops.patches import patch_targets, patch_targets_box

    for inst, ps in ((crossing_tubes_3d(shape=(20, 22, 24), n_tubes=3, seed=2).instances, (5, 3, 5)),
                     (crossing_worms_2d(shape=(40, 36), n_worms=3, seed=1).instances, (1, 7, 7))):
        whole = patch_targets(inst, ps)
        spatial = inst.shape[-3:]
        for begin, shape in (((0, 0, 0), spatial), ((0, 3, 5), (1, 17, 9)), ((0, 10, 1), (1, 12, 20))):
            if spatial[0] > 1:
                begin, shape = (2,) + begin[1:], (spatial[0] - 4,) + shape[1:]
            box = tuple(slice(b, b + s) for b, s in zip(begin, shape))
            got = patch_targets_box(inst, ps, begin, shape, 255)
            np.testing.assert_array_equal(got, whole[(slice(None), *box)] * np.uint8(255))
    with pytest.raises(ValueError, match="leaves the labels"):
        patch_targets_box(np.zeros((4, 4, 4), np.uint16), (3, 3, 3), (2, 2, 2), (3, 3, 3))


def test_patch_target_rows_equal_the_whole_targets_at_those_voxels():
    from ppp_dist.data import crossing_tubes_3d
    from ppp_dist.ops.patches import patch_target_rows

    inst = crossing_tubes_3d(shape=(20, 22, 24), n_tubes=3, seed=2).instances.astype(np.uint16)
    whole = patch_targets(inst, (5, 3, 5))
    coords = np.argwhere(np.ones(inst.shape[1:], bool))[::7]
    got = patch_target_rows(inst, (5, 3, 5), coords, 255)
    np.testing.assert_array_equal(got, whole[:, coords[:, 0], coords[:, 1], coords[:, 2]].T * np.uint8(255))
