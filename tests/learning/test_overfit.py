"""End to end: a network fit to one synthetic image predicts patches from which the assembly recovers its
instances (train -> predict_volume -> ops.assemble -> evaluate_arrays).

What the test asserts is what training must achieve, not where one floating-point trajectory happens to be
after a fixed number of iterations (that differed between an Intel and an AMD CPU, issue 13): within a
generous cap, training fits the image (the mean loss of a 100-iteration window <= 0.04) and a checkpoint of
the fitted network lets the assembly recover all six nuclei (S_0.5 >= 0.9 means 6 of 6 matched and no extra
instance) -- the checkpoint choice ``ppp-dist validate`` makes on validation data.

Why a fixed 600 iterations was fragile: the image has two pairs of touching nuclei with no dark gap between
them, told apart only by their brightness (about 0.8 vs 0.5). At 600 iterations the loss was still falling by
~30 % per 100 iterations, and whether the patches across those contacts had learnt "different instance"
depended on the trajectory: 4 of 6 seeds merged one or both pairs (4 or 5 instances). Near the fit, Adam at a
constant learning rate still oscillates (with 2 torch threads, seed 0: 6 nuclei at 1,300 and 1,500
iterations, 5 at 1,800 when the loss jumped to 0.057, 6 again at 2,100), so the test checks every fitted
checkpoint instead of one. What remains at a good checkpoint are 1-2 pixel instances on one-pixel spurs of
the ground truth; ``min_instance_size = 5`` (the post-processing the pipeline applies, [postprocess]
min_instance_size) removes them, as it would in any real run.
"""

from __future__ import annotations

from _learning_helpers import make_config

from ppp_dist.io.volumes import open_array
from ppp_dist.learning.train import run_train
from ppp_dist.ops.assemble import assemble
from ppp_dist.pipeline.predict import predict_volume
from ppp_dist.tasks.evaluation import evaluate_arrays

LOSS_TARGET = 0.04  # mean loss of the last 100 iterations; reached after 900-1,100 iterations on seeds 0-7
MAX_ITERATIONS = 3000
MIN_INSTANCE_SIZE = 5
PATCH = (1, 9, 9)


def test_overfit_network_lets_the_assembly_recover_the_instances(nuclei_sample, tmp_path):
    # 12 feature maps and 9 x 9 patches: since raw is mirrored at the border (issue 17), the border no longer
    # tells the network where it is, and 8 maps with 7 x 7 patches learnt the faint boundaries of the touching
    # nuclei too slowly
    config = make_config(nuclei_sample, model={"num_fmaps": 12, "patch_shape": list(PATCH)},
                         training={"log_every": 100, "checkpoint_every": 100, "learning_rate": 3e-3,
                                   "augmentation": {"probability_elastic": 0.0, "intensity_scale": [1.0, 1.0],
                                                    "intensity_shift": [0.0, 0.0], "probability_overlay": 0.0}})
    gt = open_array(f"{nuclei_sample}/labels/gt_instances")[...]
    iterations, fitted, tried = 0, False, []
    while iterations < MAX_ITERATIONS:  # resumes from the last checkpoint each time
        iterations += 100
        summary = run_train(config, tmp_path / "exp", max_iterations=iterations)
        if not summary["final_loss"] <= LOSS_TARGET:  # (NaN when nothing was trained)
            continue
        fitted = True
        pred = tmp_path / f"pred_{iterations}.zarr"
        predict_volume(config, summary["checkpoint"], f"{nuclei_sample}/raw", pred)
        patches = open_array(f"{pred}/patches")[...]
        numinst = open_array(f"{pred}/numinst")[...]
        labels = assemble(patches, numinst, PATCH, min_instance_size=MIN_INSTANCE_SIZE)
        result = evaluate_arrays(gt, labels, criterion="iou")
        tried.append((iterations, round(summary["final_loss"], 4), result["S_0.5"]))
        if result["S_0.5"] >= 0.9:
            break
    assert fitted, f"training did not fit the image (loss <= {LOSS_TARGET}) in {iterations} iterations"
    assert tried[-1][2] >= 0.9, f"no fitted checkpoint recovered the 6 nuclei: (iteration, loss, S_0.5) {tried}"
