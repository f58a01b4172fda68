"""Endless random training batches: a torch IterableDataset over :class:`CropSampler` + DataLoader set-up.

Workers: ``num_workers = 0`` samples in the training process; otherwise DataLoader worker processes are
*spawned* (zarr runs an event-loop thread, so forking after zarr was used can hang; scripts that train with
workers need the usual ``if __name__ == "__main__":`` guard). The dataset yields whole batches, and batch i of
the run is drawn from a generator seeded with ``(general.seed, i)``: worker w of n makes batches
``start + w, start + w + n, ...``, which the DataLoader delivers in order. The batch stream therefore does not
depend on the number of workers, and a resumed run draws exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ppp_dist.config.sections import AugmentationConfig, PipelineConfig
from ppp_dist.learning import augment
from ppp_dist.learning.sampling import CropGeometry, TrainingSample, choose_output_begin, list_sample_paths

logger = logging.getLogger(__name__)


class CropSampler:
    """Random (raw, gt) crops from a list of samples, augmented unless ``augmentation`` is None."""

    def __init__(self, samples: list[TrainingSample], geometry: CropGeometry, probabilities: tuple[float, float, float],
                 augmentation: AugmentationConfig | None, planar: bool, value_range: tuple[float, float] = (0.0, 1.0)
                 ) -> None:
        self.samples, self.geometry, self.probabilities = samples, geometry, probabilities
        self.aug, self.planar, self.value_range = augmentation, planar, value_range

    def crop(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One unaugmented-or-deformed crop: raw (C, *input_shape) float32, gt (K, *gt_shape) int64."""
        sample = self.samples[int(rng.integers(len(self.samples)))]
        raw_box, _, gt_box = self.geometry.boxes(choose_output_begin(sample, self.geometry, self.probabilities, rng))
        if self.aug is not None and rng.random() < self.aug.probability_elastic:
            return augment.deformed_crop(sample.read_raw, sample.read_gt, raw_box, gt_box, rng, self.aug,
                                         self.planar)
        return sample.read_raw(raw_box), sample.read_gt(gt_box)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raw, gt = self.crop(rng)
        aug = self.aug
        if aug is None:
            return raw, gt
        if aug.mirror_transpose:
            raw, gt = augment.mirror_transpose(raw, gt, rng, self.planar)
        raw = augment.permute_channels(raw, rng, aug.probability_permute_channels)
        if not self.value_range[0] < 0:  # hue needs RGB in [0, 1]; skipped with shift_intensity
            raw = augment.change_hue(raw, rng, aug.probability_hue, aug.hue_max_change)
        raw = augment.scale_shift_intensity(raw, rng, aug.intensity_scale, aug.intensity_shift)
        if rng.random() < aug.probability_overlay:
            raw2, gt2 = self.crop(rng)
            if aug.mirror_transpose:
                raw2, gt2 = augment.mirror_transpose(raw2, gt2, rng, self.planar)
            raw, gt = augment.overlay(raw, gt, raw2, gt2, self.value_range)
        return raw, gt


class CropDataset(IterableDataset):
    """Endless stream of collated batches; batch i is drawn with ``default_rng((seed, i))``.

    Picklable: samples reopen their arrays in each worker.
    """

    def __init__(self, sampler: CropSampler, batch_size: int, seed: int, start_iteration: int = 0) -> None:
        super().__init__()
        self.sampler, self.batch_size = sampler, int(batch_size)
        self.seed, self.start_iteration = int(seed), int(start_iteration)

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number ``index`` (0-based iteration) of the stream."""
        rng = np.random.default_rng([self.seed, int(index)])
        return collate([self.sampler.sample(rng) for _ in range(self.batch_size)])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        index = self.start_iteration + worker
        while True:
            yield self.batch(index)
            index += workers


def collate(batch: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack crops; GT channel stacks are zero-padded to the largest K of the batch."""
    k = max(gt.shape[0] for _, gt in batch)
    raws = torch.from_numpy(np.stack([raw for raw, _ in batch]))
    gts = np.zeros((len(batch), k) + batch[0][1].shape[1:], dtype=np.int64)
    for i, (_, gt) in enumerate(batch):
        gts[i, :gt.shape[0]] = gt
    return raws, torch.from_numpy(gts)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def build_sampler(config: PipelineConfig, entries: tuple[str, ...], geometry: CropGeometry, *, augment_crops: bool,
                  what: str = "train_data") -> CropSampler:
    """Open the samples of ``entries`` (``[data] train_data``-style) and build their crop sampler."""
    paths = list_sample_paths(entries, what)
    samples = [TrainingSample(p, config.data, overlap_radius=config.training.sampling.overlap_radius,
                              max_num_inst=config.model.max_num_inst, seed=config.general.seed) for p in paths]
    s = config.training.sampling
    value_range = (-1.0, 1.0) if config.data.shift_intensity else (0.0, 1.0)
    return CropSampler(samples, geometry, (s.probability_foreground, s.probability_overlap, s.probability_random),
                       config.training.augmentation if augment_crops else None,
                       planar=config.model.patch_shape[0] == 1, value_range=value_range)


def make_loader(sampler: CropSampler, *, batch_size: int, num_workers: int, seed: int, start_iteration: int = 0
                ) -> DataLoader[Any]:
    """A DataLoader yielding ``(raw (B, C, *input), gt (B, K, *gt_shape))`` batches forever."""
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs = {"multiprocessing_context": "spawn", "persistent_workers": True, "prefetch_factor": 4,
                  "worker_init_fn": _worker_init}
    return DataLoader(CropDataset(sampler, batch_size, seed, start_iteration), batch_size=None,
                      num_workers=num_workers, **kwargs)


def fixed_batches(sampler: CropSampler, *, count: int, batch_size: int, seed: int
                  ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` batches drawn once with a fixed seed (the validation-loss set)."""
    dataset = CropDataset(sampler, batch_size, seed=seed + 7919)
    return [dataset.batch(i) for i in range(count)]
