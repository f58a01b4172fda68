"""Train a CPU nuclei recipe on the real images a registry package ships and score it on held-out ones.

Example::

    python scripts/train_nuclei_cpu.py --dims 2 --out nuclei2d_cpu           # configs/nuclei2d_cpu.toml
    python scripts/train_nuclei_cpu.py --dims 3 --out nuclei3d_cpu           # configs/nuclei3d_cpu.toml
    python scripts/train_nuclei_cpu.py --dims 2 --out nuclei2d_cpu \\
        --export ppp_dist/data/models/nuclei2d                              # the shipped model

Steps: the data are written under ``OUT/data``. By default (``--data dsb2018``)
``ppp_dist.data.packaged_nuclei`` writes ``OUT/data/{train,val,test}``: regions of stardist's bundled DSB2018
image (in 3D its synthetic volume). ``--data mnfinder`` adds the 49 real images of the mnfinder package
(``ppp_dist.data.mnfinder_nuclei``; the wheel is downloaded once into ``--cache``): training on mnfinder's
training images plus the DSB2018 train region (``--balance-dsb SHARE``: that share of the crops from the
DSB2018 region, whose val region then joins val), val on mnfinder's validation images, and two held-out
sets, ``test`` (mnfinder's test images) and ``test_dsb2018`` (the DSB2018 test quadrant). The recipe trains
into ``OUT/exp``; the val and held-out samples are predicted once; on **val** the ``[validation.grid]``
values are swept, for PatchPerPix and for the baseline (connected components of the same network's
foreground, with its own best threshold and size filter); the two choices are then scored on each held-out
set, which nothing was chosen on (means over the images of a set). Writes ``OUT/summary.json`` and prints a
table. ``--score CHECKPOINT`` skips training. ``--export DIR`` writes
the trained network as a weights-only checkpoint (with the chosen settings in its config) and ``config.toml``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {2: ROOT / "configs" / "nuclei2d_cpu.toml", 3: ROOT / "configs" / "nuclei3d_cpu.toml"}


def predict_sample(config: Any, checkpoint: str, sample: Path, out: Path) -> tuple[np.ndarray, np.ndarray,
                                                                                    np.ndarray]:
    """(foreground probability (1, Z, Y, X) float32, patches uint8, ground truth) of one sample."""
    from ppp_dist.io.volumes import open_array
    from ppp_dist.pipeline.predict import predict_volume

    predict_volume(config, checkpoint, f"{sample}/{config.data.raw_key}", out)
    fg = open_array(f"{out}/fg")[...].astype(np.float32) / 255.0
    return fg, open_array(f"{out}/patches")[...], open_array(f"{sample}/{config.data.gt_key}")[...]


def _filtered(labels: np.ndarray, sizes: list[int]) -> dict[int, np.ndarray]:
    from ppp_dist.ops.postprocess import remove_small_and_relabel

    return {s: remove_small_and_relabel(labels, s) for s in sizes}


def sweep(config: Any, predictions: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, dict]:
    """Mean avS / S_0.5 / instances per parameter set of ``[validation.grid]`` over ``predictions``.

    PatchPerPix: every set (its [vote] values assembled once, then each ``min_instance_size``); connected
    components of the same foreground: every (``foreground_threshold``, ``min_instance_size``). Keys are
    the sets as sorted tuples of (key, value).
    """
    from scipy import ndimage

    from ppp_dist.config import with_vote
    from ppp_dist.ops.assemble import assemble
    from ppp_dist.tasks.evaluation import evaluate_arrays
    from ppp_dist.tasks.validate import parameter_sets

    sets = parameter_sets(config)
    sizes = sorted({int(p.get("min_instance_size", config.postprocess.min_instance_size)) for p in sets})
    scores: dict[str, dict] = {"ppp": {}, "cc": {}}

    def score(method: str, key: tuple, labels: list[dict[int, np.ndarray]]) -> None:
        for size in sizes:
            results = [evaluate_arrays(gt, lab[size]) for (_, _, gt), lab in zip(predictions, labels)]
            scores[method][key + (("min_instance_size", size),)] = {
                "avS": float(np.mean([r["avS"] for r in results])),
                "S_0.5": float(np.mean([r["S_0.5"] for r in results])),
                "instances": int(np.mean([lab[size].max() for lab in labels]))}

    votes = {tuple(sorted((k, v) for k, v in p.items() if k != "min_instance_size")) for p in sets}
    for vote in sorted(votes):
        v = with_vote(config, dict(vote)).vote
        labels = [_filtered(assemble(patches, fg, config.model.patch_shape, patch_threshold=v.patch_threshold,
                                     cover_threshold=v.cover_threshold, consensus=v.consensus,
                                     different_rule=v.different_rule, partition=v.partition,
                                     edge_threshold=v.edge_threshold, max_num_inst=config.model.max_num_inst,
                                     foreground_threshold=v.foreground_threshold)[:1], sizes)
                  for fg, patches, _ in predictions]
        score("ppp", vote, labels)
    for threshold in sorted({dict(vote).get("foreground_threshold", config.vote.foreground_threshold)
                             for vote in votes}):
        labels = [_filtered(ndimage.label(fg[0] > threshold)[0][None].astype(np.uint32), sizes)
                  for fg, _, _ in predictions]
        score("cc", (("foreground_threshold", threshold),), labels)
    return scores


def best_of(scores: dict, metric: str = "avS") -> tuple:
    """The parameter set with the highest metric (ties: the first in sorted order)."""
    return max(sorted(scores), key=lambda key: scores[key][metric])


def export_model(config_path: Path, config: Any, checkpoint: str, chosen: tuple, out: Path) -> Path:
    """Weights-only checkpoint (no optimizer) whose config carries the parameter set chosen on val."""
    import tomli_w
    import torch

    from ppp_dist.config import with_vote
    from ppp_dist.config.loader import config_to_table
    from ppp_dist.learning.model import read_checkpoint

    state = read_checkpoint(checkpoint)
    chosen_config = with_vote(config, dict(chosen))
    chosen_config = dataclasses.replace(
        chosen_config, data=dataclasses.replace(config.data, train_data=(), val_data=(), test_data=()),
        validation=dataclasses.replace(config.validation, grid={}, zip_keys=()))
    table = config_to_table(chosen_config)
    weights = {"model_state_dict": state["model_state_dict"], "iteration": state["iteration"],
               "architecture": json.dumps(state["architecture"], sort_keys=True), "padding": state["padding"],
               "config_toml": tomli_w.dumps(table), "shapes": json.dumps(state["shapes"], sort_keys=True),
               "normalization": state.get("normalization", "")}
    out.mkdir(parents=True, exist_ok=True)
    torch.save(weights, out / "checkpoint.pt")
    (out / "config.toml").write_text(f"# {config_path.name} with the values chosen on val; see MODEL.md\n"
                                     + tomli_w.dumps(table))
    return out / "checkpoint.pt"


def write_samples(dims: int, data: str, out: Path, cache: Path | None,
                  balance_dsb: float = 0.0) -> dict[str, list[Path]]:
    """split -> zarr samples; the held-out splits are the keys starting with ``test``.

    ``balance_dsb`` (2D mnfinder only; 0 = off): the DSB2018 train region is listed so often that this share
    of the training crops (samples are drawn uniformly from the list) comes from touching nuclei (0.5: once
    per mnfinder training image), and the DSB2018 val region joins mnfinder's val images; the held-out sets
    are unchanged.
    """
    from ppp_dist.data.packaged_nuclei import write_nuclei2d, write_nuclei3d

    if dims == 3:
        return {split: [path] for split, path in write_nuclei3d(out).items()}
    if data == "dsb2018":
        return {split: [path] for split, path in write_nuclei2d(out).items()}
    from ppp_dist.data.mnfinder_nuclei import write_mnfinder

    dsb = write_nuclei2d(out / "dsb2018")
    mnfinder = write_mnfinder(out / "mnfinder", cache)
    repeats = max(1, round(len(mnfinder["train"]) * balance_dsb / (1.0 - balance_dsb))) if balance_dsb else 1
    return {"train": [*mnfinder["train"], *[dsb["train"]] * repeats],
            "val": [*mnfinder["val"], *([dsb["val"]] if balance_dsb else [])],
            "test": mnfinder["test"], "test_dsb2018": [dsb["test"]]}


def _name(key: tuple) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, choices=(2, 3), default=2)
    parser.add_argument("--out", type=Path, default=None, help="default nuclei<dims>d_cpu")
    parser.add_argument("--config", type=Path, default=None, help="default configs/nuclei<dims>d_cpu.toml")
    parser.add_argument("--data", choices=("dsb2018", "mnfinder"), default="dsb2018",
                        help="2D data: the DSB2018 image's regions (the recipe's own), or the mnfinder images "
                             "(+ the DSB2018 train region) with two held-out sets")
    parser.add_argument("--balance-dsb", type=float, nargs="?", const=0.5, default=0.0, metavar="SHARE",
                        help="with --data mnfinder: this share (default 0.5) of the training crops from the "
                             "DSB2018 train region (touching nuclei); its val region joins val")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for the downloaded mnfinder wheel (default $PPP_DIST_CACHE or ~/.cache/ppp_dist)")
    parser.add_argument("--iterations", type=int, default=None, help="default: training.max_iterations")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--score", default=None, metavar="CHECKPOINT",
                        help="skip training: choose on val and score on test with this checkpoint")
    parser.add_argument("--export", type=Path, default=None, metavar="DIR",
                        help="write the trained network (weights only) and its config.toml into DIR")
    args = parser.parse_args(argv)
    out = args.out or Path(f"nuclei{args.dims}d_cpu")
    config_path = args.config or RECIPES[args.dims]

    import torch

    from ppp_dist.config import load_config
    from ppp_dist.errors import InputDataError, PppDistError
    from ppp_dist.learning.train import run_train
    from ppp_dist.logs import setup_logging

    setup_logging("INFO")
    logging.getLogger("ppp_dist.io.volumes").setLevel(logging.WARNING)
    logging.getLogger("ppp_dist.tasks.convert").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    try:
        if not 0.0 <= args.balance_dsb < 1.0:
            raise InputDataError(f"--balance-dsb must lie in [0, 1), got {args.balance_dsb}")
        samples = write_samples(args.dims, args.data, out / "data", args.cache, args.balance_dsb)
        held_out = [split for split in samples if split.startswith("test")]
        config = load_config([config_path], overrides=[f"data.train_data={[str(p) for p in samples['train']]}",
                                                       f"data.val_data={[str(p) for p in samples['val']]}",
                                                       *args.set, *([f"training.max_iterations={args.iterations}"]
                                                                    if args.iterations else [])])
        if args.score:
            summary = {"checkpoint": args.score, "iterations": 0, "iterations_run": 0, "seconds": 0.0,
                       "it_per_s": 0.0, "final_loss": float("nan")}
        else:
            summary = run_train(config, out / "exp")
        started = time.perf_counter()
        predicted = {split: [predict_sample(config, summary["checkpoint"], sample,
                                            out / "pred" / split / sample.name) for sample in samples[split]]
                     for split in ("val", *held_out)}
        val = sweep(config, predicted["val"])
        chosen = {method: best_of(val[method]) for method in ("ppp", "cc")}
        scored: dict[str, dict] = {split: {} for split in held_out}
        for method, key in chosen.items():
            grid = {k: (v,) for k, v in dict(key).items()}
            single = dataclasses.replace(config, validation=dataclasses.replace(config.validation, grid=grid,
                                                                                zip_keys=()))
            for split in held_out:
                scored[split][method] = sweep(single, predicted[split])[method][key]
        evaluate_s = time.perf_counter() - started
        exported = export_model(config_path, config, summary["checkpoint"], chosen["ppp"], args.export) \
            if args.export else None
    except PppDistError as err:
        print(f"train_nuclei_cpu: error: {err}", file=sys.stderr)
        return 2
    result = {"config": str(config_path), "training": {k: v for k, v in summary.items() if k != "shapes"},
              "chosen_on_val": {m: dict(c) for m, c in chosen.items()},
              "val": {m: {_name(k): v for k, v in val[m].items()} for m in val},
              **scored, "images": {split: len(paths) for split, paths in samples.items()},
              "evaluate_seconds": evaluate_s, "exported": str(exported or "")}
    (out / "summary.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"trained {summary['iterations']} iterations, {summary['iterations_run']} now in "
          f"{summary['seconds']:.0f} s ({summary['it_per_s']:.2f} it/s), final loss {summary['final_loss']:.4f}")
    for method in ("ppp", "cc"):
        print(f"{method:<4} chosen on val: {_name(chosen[method])} (val avS {val[method][chosen[method]]['avS']:.3f})")
        for split in held_out:
            one = scored[split][method]
            print(f"     {split} ({len(samples[split])} images): avS {one['avS']:.3f}, S_0.5 {one['S_0.5']:.3f}, "
                  f"{one['instances']} instances per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
