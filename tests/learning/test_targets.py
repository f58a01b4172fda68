"""The torch patch / numinst targets equal the reference ops.patches implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppp_dist.learning.targets import numinst_target, patch_targets, patch_targets_at
from ppp_dist.ops import patches as ref


def _random_stack(rng, shape, max_id=4):
    stack = rng.integers(0, max_id + 1, size=shape).astype(np.uint16)
    stack[rng.random(shape) < 0.3] = 0  # background, and overlaps where several channels are non-zero
    return stack


CASES = [((2, 5, 9, 11), (3, 3, 5)), ((3, 1, 13, 10), (1, 5, 7)), ((1, 4, 6, 7), (3, 3, 3)),
         ((1, 1, 7, 9), (1, 9, 3)), ((2, 3, 5, 4), (5, 3, 3))]


@pytest.mark.parametrize("shape, patch_shape", CASES)
def test_torch_patch_targets_equal_reference(shape, patch_shape):
    rng = np.random.default_rng(sum(shape))
    stacks = [_random_stack(rng, shape) for _ in range(2)]
    gt = torch.from_numpy(np.stack(stacks).astype(np.int64))
    got = patch_targets(gt, patch_shape).numpy()
    for b, stack in enumerate(stacks):
        expected = ref.patch_targets(stack, patch_shape)
        assert got[b].shape == expected.shape
        np.testing.assert_array_equal(got[b], expected)


def test_flat_labels_compare_values_not_products():
    flat = np.array([[[2, 2, 3, 0, 3]]], dtype=np.uint16)  # (Z, Y, X) flat labels, K = 1
    got = patch_targets(torch.from_numpy(flat.astype(np.int64))[None, None], (1, 1, 3))[0].numpy()
    np.testing.assert_array_equal(got, ref.patch_targets(flat, (1, 1, 3)))
    assert got.max() == 1  # the HEAD bug multiplied label values (targets > 1)


def test_cropped_targets_equal_centre_of_full_targets():
    rng = np.random.default_rng(0)
    stack = _random_stack(rng, (2, 9, 11, 10))
    gt = torch.from_numpy(stack.astype(np.int64))[None]
    full = ref.patch_targets(stack, (3, 5, 3))
    cropped = patch_targets(gt, (3, 5, 3), crop=True)[0].numpy()
    np.testing.assert_array_equal(cropped, full[:, 1:-1, 2:-2, 1:-1])


def test_targets_at_points_equal_dense_targets():
    rng = np.random.default_rng(1)
    stack = _random_stack(rng, (3, 6, 8, 7))
    gt = torch.from_numpy(np.stack([stack, stack[::-1]]).astype(np.int64))
    dense = patch_targets(gt, (3, 3, 5))
    points = torch.tensor([[0, 0, 0, 0], [1, 5, 7, 6], [0, 3, 4, 2], [1, 2, 0, 6]])
    got = patch_targets_at(gt, points, (3, 3, 5))
    expected = dense[points[:, 0], :, points[:, 1], points[:, 2], points[:, 3]]
    torch.testing.assert_close(got, expected)


def test_numinst_target_equals_reference():
    rng = np.random.default_rng(2)
    stack = _random_stack(rng, (4, 3, 5, 6))
    got = numinst_target(torch.from_numpy(stack.astype(np.int64))[None], 2)[0].numpy()
    np.testing.assert_array_equal(got, ref.numinst_target(stack, 2))
