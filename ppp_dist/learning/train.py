"""The training loop: :func:`run_train`.

Writes into ``<exp>/train/``: ``network.json`` (architecture and measured input/output shapes),
``checkpoint_<iteration>.pt`` (model + optimizer + AMP scaler + config + shapes + iteration; loadable with
``torch.load(weights_only=True)``), ``metrics.csv`` (one row per ``log_every`` iterations: mean losses of
the window, validation losses every ``validate_every``, learning rate, it/s). TensorBoard event files are
written too when ``torch.utils.tensorboard`` imports (it needs the ``tensorboard`` package); otherwise only
the CSV. Running again resumes from the newest checkpoint up to ``max_iterations``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import tomli_w
import torch
from tqdm import tqdm

from ppp_dist.config.loader import config_to_table
from ppp_dist.config.sections import PipelineConfig
from ppp_dist.errors import ConfigError
from ppp_dist.experiment import ExperimentPaths
from ppp_dist.learning.dataset import build_sampler, fixed_batches, make_loader
from ppp_dist.learning.losses import LossSettings, ppp_loss
from ppp_dist.learning.model import (
    PppModel,
    build_model,
    load_weights,
    network_shapes,
    resolve_device,
    save_checkpoint,
)
from ppp_dist.learning.normalize import settings_of
from ppp_dist.learning.sampling import CropGeometry

logger = logging.getLogger(__name__)

METRIC_COLUMNS = ("iteration", "loss", "patch_loss", "numinst_loss", "val_loss", "val_patch_loss",
                  "val_numinst_loss", "learning_rate", "seconds", "it_per_s")
VALIDATION_BATCHES = 4
COSINE_FLOOR = 0.01  # the cosine schedule ends at this fraction of [training] learning_rate


def loss_settings(config: PipelineConfig) -> LossSettings:
    """The loss options of ``config``."""
    m, t = config.model, config.training
    return LossSettings(patch_shape=m.patch_shape, max_num_inst=m.max_num_inst, head=m.head,
                        numinst_head=m.numinst_head, patch_weight=t.patch_loss_weight,
                        numinst_weight=t.numinst_loss_weight, background_weight=t.background_weight,
                        num_code_samples=m.decoder.num_code_samples)


def learning_rate_at(config: PipelineConfig, iteration: int) -> float:
    """The learning rate of the step after ``iteration`` completed steps: ``[training] learning_rate_schedule``
    over ``[training] max_iterations``, a function of the iteration alone, so that a resumed run continues the
    schedule where it stopped (and a run stopped early by ``run_train(max_iterations=...)`` follows the
    configured one)."""
    t = config.training
    if t.learning_rate_schedule == "constant":
        return t.learning_rate
    done = min(iteration / t.max_iterations, 1.0)
    return t.learning_rate * (COSINE_FLOOR + (1.0 - COSINE_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * done)))


def make_optimizer(net: torch.nn.Module, config: PipelineConfig) -> torch.optim.Optimizer:
    t = config.training
    if t.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=t.learning_rate, betas=t.adam_betas,
                                weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(net.parameters(), lr=t.learning_rate, betas=t.adam_betas,
                                 weight_decay=t.weight_decay)
    return torch.optim.SGD(net.parameters(), lr=t.learning_rate, momentum=0.9, weight_decay=t.weight_decay)


def _summary_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("TensorBoard logging is off (install the tensorboard package); metrics go to metrics.csv")
        return None
    return SummaryWriter(str(log_dir))


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in METRIC_COLUMNS})


def validation_loss(net: PppModel, batches: list[tuple[torch.Tensor, torch.Tensor]], settings: LossSettings,
                    device: torch.device, use_amp: bool) -> dict[str, float]:
    """Mean loss terms of ``batches`` without gradients."""
    totals = {"loss": 0.0, "patch": 0.0, "numinst": 0.0}
    with torch.no_grad():
        for raw, gt in batches:
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                patch_logits, numinst_logits = net(raw.to(device))
                terms = ppp_loss(patch_logits, numinst_logits, gt.to(device), settings, net.decoder)
            for k in totals:
                totals[k] += float(terms[k]) / len(batches)
    return totals


def run_train(config: PipelineConfig, exp_dir: Path, *, max_iterations: int | None = None) -> dict[str, Any]:
    """Train (or resume training) the network of ``config`` in ``exp_dir/train``.

    Parameters
    ----------
    config : the resolved config; uses [data] train_data / val_data, [model] and [training].
    exp_dir : experiment folder; checkpoints go to ``exp_dir/train/checkpoint_<iteration>.pt``.
    max_iterations : stop at this iteration instead of ``training.max_iterations`` (total, not additional).

    Returns
    -------
    dict with ``iterations`` (the last iteration), ``iterations_run`` (in this call), ``seconds`` (of the
    loop), ``it_per_s``, ``final_loss`` (mean of the last logging window), ``checkpoint`` (path of the
    newest checkpoint), ``device``, ``shapes``.
    """
    started = time.perf_counter()
    t = config.training
    total = int(max_iterations if max_iterations is not None else t.max_iterations)
    if total < 1:
        raise ConfigError(f"max_iterations must be >= 1, got {total}")
    paths = ExperimentPaths(Path(exp_dir))
    train_dir = paths.train_dir
    train_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.general.seed)
    device = resolve_device(t.device)
    net = build_model(config.model, config.data.num_channels)
    shapes = network_shapes(net, config.model)
    paths.train_network.write_text(json.dumps({"architecture": net.arch, "padding": net.padding,
                                                        **shapes}, indent=2))
    found = paths.checkpoints()
    state = None
    start = 0
    if found:
        state = load_weights(net, found[max(found)])
        start = int(state["iteration"])
        logger.info("resuming from %s (iteration %d)", found[max(found)], start)
    elif t.init_checkpoint:
        load_weights(net, t.init_checkpoint)
        logger.info("initialised the weights from %s", t.init_checkpoint)
    net.to(device)
    optimizer = make_optimizer(net, config)
    use_amp = bool(t.use_amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if state is not None:
        if state.get("optimizer_state_dict"):
            optimizer.load_state_dict(state["optimizer_state_dict"])
        if use_amp and state.get("scaler_state_dict"):
            scaler.load_state_dict(state["scaler_state_dict"])
        if state.get("torch_rng_state") is not None:
            torch.set_rng_state(state["torch_rng_state"])
    config_toml = tomli_w.dumps(config_to_table(config))
    summary: dict[str, Any] = {"iterations": start, "iterations_run": 0, "seconds": 0.0, "it_per_s": 0.0,
                               "final_loss": math.nan, "checkpoint": str(found[max(found)]) if found else "",
                               "device": str(device), "shapes": shapes}
    if start >= total:
        logger.info("training is done already (iteration %d >= %d)", start, total)
        return summary

    geometry = CropGeometry(tuple(shapes["train"]["input"]), tuple(shapes["train"]["output"]),
                            config.model.patch_shape)
    sampler = build_sampler(config, config.data.train_data, geometry, augment_crops=True)
    normalization = {**settings_of(config.data),
                     "samples": {s.path: {"offset": list(s.normalizer.offset), "scale": list(s.normalizer.scale)}
                                 for s in sampler.samples}}
    loader = make_loader(sampler, batch_size=t.batch_size, num_workers=t.num_workers, seed=config.general.seed,
                         start_iteration=start)
    val_batches = []
    if t.validate_every > 0 and config.data.val_data:
        val_sampler = build_sampler(config, config.data.val_data, geometry, augment_crops=False, what="val_data")
        val_batches = fixed_batches(val_sampler, count=VALIDATION_BATCHES, batch_size=t.batch_size,
                                    seed=config.general.seed)
    settings = loss_settings(config)
    writer = _summary_writer(paths.tensorboard)
    metrics_path = paths.train_metrics
    window = {"loss": 0.0, "patch": 0.0, "numinst": 0.0, "n": 0}
    last_path = summary["checkpoint"]
    net.train()
    loop_start = time.perf_counter()
    window_start = loop_start
    batches = iter(loader)
    progress = tqdm(total=total, initial=start, desc="train", unit="it", dynamic_ncols=True, mininterval=1.0)
    iteration = start
    try:
        while iteration < total:
            raw, gt = next(batches)
            raw, gt = raw.to(device, non_blocking=True), gt.to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                patch_logits, numinst_logits = net(raw)
                terms = ppp_loss(patch_logits, numinst_logits, gt, settings, net.decoder)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(config, iteration)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
            iteration += 1
            loss = float(terms["loss"].detach())
            if not math.isfinite(loss) and not use_amp:
                raise ConfigError(f"training diverged: the loss is {loss} at iteration {iteration}; lower "
                                  f"[training] learning_rate or check the raw normalisation")
            window["loss"] += loss
            window["patch"] += float(terms["patch"])
            window["numinst"] += float(terms["numinst"])
            window["n"] += 1
            progress.update(1)
            if iteration % 10 == 0 or iteration == total:
                progress.set_postfix(loss=f"{window['loss'] / window['n']:.4f}")
            row: dict[str, Any] = {}
            if iteration % t.log_every == 0 or iteration == total:
                now = time.perf_counter()
                row = {"iteration": iteration, "loss": window["loss"] / window["n"],
                       "patch_loss": window["patch"] / window["n"], "numinst_loss": window["numinst"] / window["n"],
                       "learning_rate": optimizer.param_groups[0]["lr"], "seconds": round(now - loop_start, 3),
                       "it_per_s": window["n"] / max(now - window_start, 1e-9)}
                summary["final_loss"] = row["loss"]
                window = {"loss": 0.0, "patch": 0.0, "numinst": 0.0, "n": 0}
                window_start = now
            if val_batches and (iteration % t.validate_every == 0 or iteration == total):
                net.eval()
                val = validation_loss(net, val_batches, settings, device, use_amp)
                net.train()
                row.update({"iteration": iteration, "val_loss": val["loss"], "val_patch_loss": val["patch"],
                            "val_numinst_loss": val["numinst"]})
            if row:
                _append_metrics(metrics_path, row)
                if writer is not None:
                    for key in ("loss", "patch_loss", "numinst_loss", "val_loss"):
                        if key in row:
                            writer.add_scalar(key, row[key], iteration)
            if iteration % t.checkpoint_every == 0 or iteration == total:
                last_path = str(save_checkpoint(paths.checkpoint_file(iteration), net, iteration=iteration,
                                                optimizer=optimizer, scaler=scaler if use_amp else None,
                                                config_toml=config_toml, shapes=shapes,
                                                normalization=normalization))
    finally:
        progress.close()
        if writer is not None:
            writer.close()
        del batches
    seconds = time.perf_counter() - loop_start
    run = iteration - start
    summary.update({"iterations": iteration, "iterations_run": run, "seconds": seconds,
                    "it_per_s": run / max(seconds, 1e-9), "checkpoint": last_path,
                    "total_seconds": time.perf_counter() - started})
    logger.info("trained %d iterations in %.1f s (%.2f it/s), final loss %.4f, checkpoint %s", run, seconds,
                summary["it_per_s"], summary["final_loss"], last_path)
    return summary


__all__ = ["run_train", "learning_rate_at", "loss_settings", "make_optimizer", "validation_loss"]
