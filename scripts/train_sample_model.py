"""Train the small network that `ppp-dist demo` uses, on the bundled FlyLight sample, and ship it.

Example::

    nice -n 10 python scripts/train_sample_model.py                    # the shipped model (~20 min, 2 cores)
    python scripts/train_sample_model.py --iterations 20 --out /tmp/quick --model-dir /tmp/quick/model

Steps: write the FlyLight crop (``ppp_dist.data.flylight.load_flylight``: 3 x 50^3, three overlapping
neurons) as ``OUT/flylight_sample.zarr`` in the layout the demo writes (``ppp_dist.tasks.demo.write_sample``);
train ``configs/sample_model.toml`` into ``OUT/exp`` with ``ppp_dist.learning.train.run_train`` (seeded,
CPU; a rerun resumes from the newest checkpoint there); predict the crop in-process
(``pipeline.predict.predict_volume``), assemble it with ``ops.assemble`` and the ``[vote]`` settings, score
it with the ``[evaluation]`` metrics (FlyLight clDice). MODEL_DIR then holds ``checkpoint.pt`` (weights only,
no optimiser state), ``config.toml`` (the resolved training config, the demo's first config layer),
``metrics.csv`` (the training losses) and ``MODEL.md`` (command, iterations, wall time, losses, sha256,
scores). The network is trained and scored on the same crop: a demo of the pipeline, not a measure of how
well it generalises.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = ROOT / "ppp_dist" / "data" / "sample" / "model"
SCORE_KEYS = ("avF1", "C", "S", "tp_rel", "FS", "FM")


def _score(config: Any, checkpoint: Path, raw: str, gt: str, out: Path) -> dict[str, Any]:
    """Whole-crop prediction + ``ops.assemble`` + the ``[evaluation]`` metrics (what the demo computes)."""
    from ppp_dist.io.volumes import open_array
    from ppp_dist.ops.assemble import assemble
    from ppp_dist.ops.patches import numinst_target
    from ppp_dist.pipeline.predict import predict_volume
    from ppp_dist.pipeline.settings import assembly_settings
    from ppp_dist.tasks.evaluation import evaluate_arrays

    pred = predict_volume(config, checkpoint, raw, out)
    patches = np.asarray(open_array(f"{out}/patches")[...])
    numinst = np.asarray(open_array(f"{out}/numinst")[...])
    settings = assembly_settings(config)
    started = time.perf_counter()
    labels = assemble(patches, numinst, settings)
    assemble_s = time.perf_counter() - started
    truth = np.asarray(open_array(gt)[...])
    e = config.evaluation
    metrics = evaluate_arrays(truth, labels, criterion=e.criterion, thresholds=e.thresholds,
                              min_instance_size=e.min_instance_size)
    target = np.minimum(numinst_target(truth), config.model.max_num_inst)
    predicted = numinst.argmax(axis=0)
    sizes = np.bincount(labels.ravel())[1:]
    return {"metrics": {k: metrics.get(k) for k in SCORE_KEYS},
            "n_gt": metrics.get("n_gt"), "n_pred": metrics.get("n_pred"),
            "instances": int(labels.max()), "instances_over_min_size": int((sizes > e.min_instance_size).sum()),
            "numinst_accuracy": float((predicted == target).mean()),
            "foreground_voxels": int((predicted > 0).sum()), "gt_foreground_voxels": int((target > 0).sum()),
            "predict_s": pred["seconds"], "assemble_s": assemble_s}


def _losses(metrics_csv: Path) -> list[dict[str, str]]:
    with metrics_csv.open() as f:
        return list(csv.DictReader(f))


def _loss_table(rows: list[dict[str, str]], every: int) -> str:
    """Markdown table of the metrics.csv rows at multiples of ``every`` iterations, and the last row."""
    def fmt(value: str | None) -> str:
        return f"{float(value):.4f}" if value else ""

    lines = ["| iteration | loss | patch | numinst | val loss | val patch | val numinst |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(rows):
        if int(r["iteration"]) % every == 0 or i == len(rows) - 1:
            lines.append(f"| {int(r['iteration']):,} | {fmt(r['loss'])} | {fmt(r['patch_loss'])} | "
                         f"{fmt(r['numinst_loss'])} | {fmt(r['val_loss'])} | {fmt(r['val_patch_loss'])} | "
                         f"{fmt(r['val_numinst_loss'])} |")
    return "\n".join(lines)


def _model_md(command: str, config: Any, summary: dict[str, Any], wall_s: float, threads: int, sha: str,
              size: int, score: dict[str, Any], losses: list[dict[str, str]], shapes: dict[str, Any]) -> str:
    m, t, v, a = config.model, config.training, config.vote, config.training.augmentation
    last = [r for r in losses if r.get("loss")][-1]
    last_val = [r for r in losses if r.get("val_loss")]
    s = score["metrics"]
    val = (f"; validation loss {float(last_val[-1]['val_loss']):.4f} (4 fixed unaugmented crops of the same "
           f"sample)") if last_val else ""
    loop_total, calls = _loop_seconds(losses)
    resumed = summary["iterations"] - summary["iterations_run"]
    resumed_text = f" (resumed at iteration {resumed:,})" if resumed else ""
    scores = ", ".join(f"{k} {s[k]:.4f}" for k in SCORE_KEYS if isinstance(s.get(k), float))
    counts = ", ".join(f"{k} {s[k]}" for k in SCORE_KEYS if isinstance(s.get(k), int))
    factors = [list(f) for f in m.downsample_factors]
    patch = "x".join(map(str, m.patch_shape))
    lines = [
        "# The sample model",
        "",
        "The small PatchPerPix network that `ppp-dist demo` (`bash scripts/demo.sh`) predicts with. It was "
        "trained on the bundled FlyLight crop (`ppp_dist/data/sample/`, 3 x 50^3 voxels, three overlapping "
        "neurons) and is scored below **on that same crop**: it is a demo of the pipeline end to end, not a "
        "generalisation result. `scripts/train_sample_model.py` retrains it; `configs/sample_model.toml` is "
        "its configuration.",
        "",
        "## Files",
        "",
        "| file | what |",
        "|---|---|",
        f"| `checkpoint.pt` | weights only (no optimiser state), {size:,} bytes, sha256 `{sha}` |",
        "| `config.toml` | the resolved training config; `ppp-dist demo` uses it as its first config layer |",
        f"| `metrics.csv` | training losses every {t.log_every} iterations, validation loss every "
        f"{t.validate_every} |",
        "| `MODEL.md` | this record, written by the script |",
        "",
        "## Network",
        "",
        f"3D U-Net, valid padding, downsampling {factors}, {m.num_fmaps} feature maps x {list(m.fmap_inc_factors)} "
        f"(decoder / {list(m.fmap_dec_factors)}), {m.num_repetitions} convolutions of {m.kernel_size}^3 per "
        f"level, {shapes['num_parameters']:,} parameters. Heads: {int(np.prod(m.patch_shape))} patch logits "
        f"({patch} patches) and {m.max_num_inst + 1} numinst classes. Training input {shapes['train']['input']} "
        f"-> output {shapes['train']['output']}; prediction input {shapes['predict']['input']} -> output "
        f"{shapes['predict']['output']} (context {shapes['predict']['context']} voxels per side). Input: the "
        f"normalised raw of `load_flylight()`, clipped at {config.data.clip_max} and divided by it "
        f"(`[data] normalization = \"{config.data.normalization}\"`).",
        "",
        "## Training",
        "",
        f"    {command}",
        "",
        f"* {summary['iterations']:,} iterations{resumed_text}, batch {t.batch_size}, {t.optimizer} lr "
        f"{t.learning_rate}, loss = {t.patch_loss_weight} x patch BCE + {t.numinst_loss_weight} x numinst CE, "
        f"seed {config.general.seed}, device `{summary['device']}`, `torch.set_num_threads({threads})`, "
        f"{t.num_workers} loader workers.",
        f"* Wall time: {wall_s / 60:.1f} min for the whole script, {summary['seconds'] / 60:.1f} min in the "
        f"training loop ({summary['it_per_s']:.2f} it/s), on {_cpus()} CPU cores shared with other jobs."
        + (f" The training ran in {calls} calls of the script ({loop_total / 60:.1f} min of training loop in "
           f"all); a call resumes from the newest checkpoint and continues exactly as an uninterrupted run "
           f"would (the batch stream is seeded per iteration)." if calls > 1 else ""),
        f"* Final losses (means over the last {t.log_every} iterations): loss {float(last['loss']):.4f}, patch "
        f"BCE {float(last['patch_loss']):.4f}, numinst CE {float(last['numinst_loss']):.4f}{val}.",
        f"* Augmentation: mirror/transpose {'on' if a.mirror_transpose else 'off'}, channel permutation (p "
        f"{a.probability_permute_channels}), intensity scale {list(a.intensity_scale)} and shift "
        f"{list(a.intensity_shift)}; elastic deformation p {a.probability_elastic}, hue p {a.probability_hue}, "
        f"overlay p {a.probability_overlay}.",
        "",
        _loss_table(losses, _table_step(summary["iterations"], t.log_every)),
        "",
        "## Scores on the training crop",
        "",
        f"In-process whole-crop prediction, `ops.assemble` with the `[vote]` settings of `config.toml` "
        f"(patch_threshold {v.patch_threshold}, cover_threshold {v.cover_threshold}, numinst_thresholds "
        f"{list(v.numinst_thresholds)}, partition {v.partition}), FlyLight metrics (`[evaluation]` criterion "
        f"{config.evaluation.criterion}, predicted instances with <= {config.evaluation.min_instance_size} "
        f"voxels removed first). The demo's blockwise pipeline gives the same instances byte for byte "
        f"(`tests/pipeline/test_model_invariance.py`), hence the same scores.",
        "",
        f"* {scores}" + (f"; {counts}" if counts else ""),
        f"* instances: {score['instances']} assembled, {score['instances_over_min_size']} with more than "
        f"{config.evaluation.min_instance_size} voxels; GT neurons: {score['n_gt']}",
        f"* numinst accuracy (argmax against the GT count, clamped at {m.max_num_inst}): "
        f"{score['numinst_accuracy']:.4f}; predicted foreground {score['foreground_voxels']:,} voxels, GT "
        f"foreground {score['gt_foreground_voxels']:,}",
        f"* prediction {score['predict_s']:.1f} s, assembly {score['assemble_s']:.1f} s (in-process, whole crop)",
        "",
    ]
    return "\n".join(lines)


def _loop_seconds(rows: list[dict[str, str]]) -> tuple[float, int]:
    """(training-loop seconds summed over all calls, number of calls): ``seconds`` restarts with each call."""
    total, previous, calls = 0.0, 0.0, 1
    for r in rows:
        if not r.get("seconds"):
            continue
        now = float(r["seconds"])
        if now < previous:
            total, calls = total + previous, calls + 1
        previous = now
    return total + previous, calls


def _table_step(iterations: int, log_every: int) -> int:
    """About ten rows: a multiple of ``log_every``."""
    return max(1, iterations // 10 // log_every) * log_every


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "sample_model",
                        help="work folder: the sample zarr, the experiment, the scoring prediction")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR,
                        help="where the shipped files go (default ppp_dist/data/sample/model)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "sample_model.toml")
    parser.add_argument("--iterations", type=int, default=None, help="default: [training] max_iterations")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    command = "python scripts/train_sample_model.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))

    import torch

    from ppp_dist.config import load_config, save_config
    from ppp_dist.errors import PppDistError
    from ppp_dist.learning.model import build_model, load_weights, save_checkpoint
    from ppp_dist.learning.train import run_train
    from ppp_dist.logs import setup_logging
    from ppp_dist.tasks.demo import write_sample

    setup_logging("INFO")
    logging.getLogger("ppp_dist.io.volumes").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    out = args.out.resolve()
    sample = out / "flylight_sample.zarr"
    try:
        raw, gt = write_sample(sample)
        config = load_config([args.config], overrides=[f"data.train_data=['{sample}']",
                                                       f"data.val_data=['{sample}']", *args.set])
        summary = run_train(config, out / "exp", max_iterations=args.iterations)
        net = build_model(config.model, config.data.num_channels)
        state = load_weights(net, summary["checkpoint"])
        args.model_dir.mkdir(parents=True, exist_ok=True)
        ckpt = args.model_dir / "checkpoint.pt"
        save_checkpoint(ckpt, net, iteration=int(state["iteration"]), config_toml=state.get("config_toml", ""),
                        shapes=summary["shapes"])
        save_config(config, args.model_dir / "config.toml")
        shutil.copyfile(out / "exp" / "train" / "metrics.csv", args.model_dir / "metrics.csv")
        score = _score(config, ckpt, raw, gt, out / "prediction.zarr")
    except PppDistError as err:
        print(f"train_sample_model: error: {err}", file=sys.stderr)
        return 2
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    wall = time.perf_counter() - started
    losses = _losses(args.model_dir / "metrics.csv")
    (args.model_dir / "MODEL.md").write_text(_model_md(command, config, summary, wall, args.threads, sha,
                                                       ckpt.stat().st_size, score, losses, summary["shapes"]))
    s = score["metrics"]
    print(f"trained {summary['iterations']} iterations ({summary['iterations_run']} now, "
          f"{summary['seconds'] / 60:.1f} min, {summary['it_per_s']:.2f} it/s), final loss "
          f"{summary['final_loss']:.4f}")
    print("scores on the training crop: " + ", ".join(f"{k} {s[k]:.4f}" for k in SCORE_KEYS
                                                       if isinstance(s.get(k), float))
          + f"; {score['instances_over_min_size']} instances over {config.evaluation.min_instance_size} voxels")
    print(f"wrote {ckpt} ({ckpt.stat().st_size:,} bytes, sha256 {sha[:16]}...), config.toml, metrics.csv, "
          f"MODEL.md in {args.model_dir} ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
