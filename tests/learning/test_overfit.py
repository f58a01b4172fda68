"""End to end: a network overfit to one synthetic image predicts patches from which the assembly recovers its
instances (train -> predict_volume -> ops.assemble -> evaluate_arrays)."""

from __future__ import annotations

from ppp_dist.evaluate import evaluate_arrays
from ppp_dist.io.volumes import open_array
from ppp_dist.learning.predict import predict_volume
from ppp_dist.learning.train import run_train
from ppp_dist.ops.assemble import assemble

from _learning_helpers import make_config


def test_overfit_network_lets_the_assembly_recover_the_instances(nuclei_sample, tmp_path):
    # 12 feature maps and 9 x 9 patches: since raw is mirrored at the border (issue 17), the border no longer
    # tells the network where it is, and 8 maps with 7 x 7 patches did not learn the faint boundaries of the
    # touching nuclei in 600 iterations (two merges); these learn them (S_0.5 1.0, avS 1.0 when measured)
    config = make_config(nuclei_sample, model={"num_fmaps": 12, "patch_shape": [1, 9, 9]},
                         training={"log_every": 100, "learning_rate": 3e-3,
                                   "augmentation": {"probability_elastic": 0.0, "intensity_scale": [1.0, 1.0],
                                                    "intensity_shift": [0.0, 0.0], "probability_overlay": 0.0}})
    summary = run_train(config, tmp_path / "exp", max_iterations=600)
    predict_volume(config, summary["checkpoint"], f"{nuclei_sample}/raw", tmp_path / "pred.zarr")
    patches = open_array(f"{tmp_path}/pred.zarr/patches")[...]
    numinst = open_array(f"{tmp_path}/pred.zarr/numinst")[...]
    labels = assemble(patches, numinst, (1, 9, 9))
    gt = open_array(f"{nuclei_sample}/labels/gt_instances")[...]
    result = evaluate_arrays(gt, labels, criterion="iou")
    assert result["S_0.5"] >= 0.9, result
