"""The typed config sections of ppp_dist.

One frozen dataclass per TOML section. Field comments are the documentation: ``configs/default.toml``
repeats every key with its default, and ``docs/config_reference.md`` is generated from these classes
(``python -m ppp_dist.config.reference``). Each section lists its range problems in ``problems()``;
the loader collects the problems of every section and reports them together.

All spatial sizes are voxels in (Z, Y, X) order; 2D data is 3D with Z = 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from ppp_dist.config import checks

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
Normalization = Literal["none", "clip", "dtype", "minmax", "percentile", "fixed"]
RawPadding = Literal["mirror", "zeros"]
Activation = Literal["relu", "leaky_relu", "elu"]
Padding = Literal["valid", "same"]
Upsampling = Literal["transposed_conv", "resize_conv"]
Head = Literal["patches", "codes"]
NuminstHead = Literal["classes", "foreground"]
Optimizer = Literal["adam", "adamw", "sgd"]
LearningRateSchedule = Literal["constant", "cosine"]
Consensus = Literal["prob_product", "raw_prob_product", "count"]
DifferentRule = Literal["less_than_threshold", "inverse_threshold", "half_threshold"]
Selection = Literal["local", "greedy"]
Partition = Literal["connected_components", "mutex_watershed"]
OverlapVotes = Literal["fallback", "ignore"]
Agglomeration = Literal["auto", "flat", "hierarchical"]
Criterion = Literal["iou", "cldice"]
Assignment = Literal["auto", "hungarian", "greedy"]
ClusterKind = Literal["local", "scheduler", "cuda", "slurm", "lsf", "pbs"]
Backend = Literal["sqlite", "postgres"]
PatchDtype = Literal["uint8", "float16"]
_INTERFACE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")  # Linux interface names: at most 15 characters


def _positive(section: str, **values: object) -> list[str]:
    """Problems for every value that is not > 0 (scalars or tuples)."""
    problems = []
    for key, value in values.items():
        items = value if isinstance(value, tuple) else (value,)
        if any(not v > 0 for v in items):  # NaN is not > 0 either
            problems.append(f"[{section}] {key} must be > 0, got {value!r}")
    return problems


def _probability(section: str, **values: float) -> list[str]:
    return [f"[{section}] {key} must lie in [0, 1], got {value!r}"
            for key, value in values.items() if not 0.0 <= value <= 1.0]  # NaN fails too


@dataclass(frozen=True)
class GeneralConfig:
    """[general] Logging, overwriting and seeding."""

    log_level: LogLevel = "INFO"  # log level of the console and of <exp>/logs/run.log
    overwrite: bool = False  # recompute outputs that exist already (otherwise they are reused)
    seed: int = 0  # seed of every random choice (sampling, augmentation, synthetic data)

    def problems(self) -> list[str]:
        ok = 0 <= self.seed <= checks.MAX_SEED
        return [] if ok else [f"[general] seed must lie in [0, {checks.MAX_SEED}], got {self.seed}"]


@dataclass(frozen=True)
class DataConfig:
    """[data] Where the volumes are and how to read them."""

    input: str = ""  # volume to process (predict/label/evaluate/plan): "path.zarr/key"; --input overrides it
    ground_truth: str = ""  # ground truth of the input for evaluate: "path.zarr/key"; --gt overrides it
    train_data: tuple[str, ...] = ()  # zarr samples (files or folders of *.zarr) for training
    val_data: tuple[str, ...] = ()  # zarr samples for validation sweeps
    test_data: tuple[str, ...] = ()  # zarr samples for infer/evaluate
    raw_key: str = "volumes/raw"  # array of raw intensities (C, Z, Y, X) inside each sample
    gt_key: str = "volumes/gt_instances"  # ground truth (K, Z, Y, X) instance channels inside each sample
    num_channels: int = 1  # channels of the raw input
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)  # physical size of a voxel (Z, Y, X)
    normalization: Normalization = "clip"  # percentile, minmax, dtype, fixed, clip or none (docs/learning.md)
    percentile_low: float = 1.0  # normalization = "percentile": this percentile of each sample maps to 0
    percentile_high: float = 99.8  # normalization = "percentile": this percentile of each sample maps to 1
    fixed_offset: tuple[float, ...] = (0.0,)  # normalization = "fixed": subtracted (one value, or one per channel)
    fixed_scale: tuple[float, ...] = (1.0,)  # normalization = "fixed": divided by (one value, or one per channel)
    clip_max: float = 1500.0  # upper clip value for normalization = "clip"
    raw_padding: RawPadding = "mirror"  # raw outside the volume: mirror (edge repeated) or zeros (older models)
    shift_intensity: bool = False  # map normalised raw x in [0, 1] to 2x - 1
    overlapping_instances: bool = False  # GT has one instance per channel and instances may overlap
    cross_val_folds: tuple[str, ...] = ("val_data", "test_data")  # the two data keys used as cross-validation folds

    def problems(self) -> list[str]:
        problems = _positive("data", num_channels=self.num_channels, voxel_size=self.voxel_size,
                             clip_max=self.clip_max)
        if not 0.0 <= self.percentile_low < self.percentile_high <= 100.0:
            problems.append(f"[data] percentile_low and percentile_high must satisfy 0 <= low < high <= 100, got "
                            f"{self.percentile_low:g} and {self.percentile_high:g}")
        for key in ("fixed_offset", "fixed_scale"):
            if len(getattr(self, key)) not in (1, self.num_channels):
                problems.append(f"[data] {key} needs one value or one per channel ({self.num_channels}), got "
                                f"{list(getattr(self, key))}")
        if any(v == 0 for v in self.fixed_scale):
            problems.append(f"[data] fixed_scale must not be 0, got {list(self.fixed_scale)}")
        for key in self.cross_val_folds:
            if key not in ("train_data", "val_data", "test_data"):
                problems.append(f"[data] cross_val_folds names {key!r}; use train_data, val_data or test_data")
        return problems


@dataclass(frozen=True)
class DecoderConfig:
    """[model.decoder] The code decoder of ppp+dec (model.head = "codes"), trained jointly."""

    code_shape: tuple[int, int, int, int] = (22, 2, 2, 2)  # code reshaped to (fmaps, z, y, x); prod = model.code_units
    num_fmaps: tuple[int, ...] = (128, 64)  # decoder widths, coarse to fine
    upsample_factor: int = 2  # per decoder level, per spatial axis (z too, unless the patch has z = 1)
    kernel_size: int = 3  # convolution kernel size of the decoder
    num_repetitions: int = 2  # convolutions per decoder level
    num_code_samples: int = 1024  # single-instance voxels decoded per batch item for the loss
    decode_batch_size: int = 1024  # voxels decoded at once by the decode stage
    checkpoint: str = "this"  # "this" = the decoder trained with the U-Net; or a checkpoint path

    def problems(self) -> list[str]:
        return _positive("model.decoder", code_shape=self.code_shape, num_fmaps=self.num_fmaps,
                         upsample_factor=self.upsample_factor, kernel_size=self.kernel_size,
                         num_repetitions=self.num_repetitions, num_code_samples=self.num_code_samples,
                         decode_batch_size=self.decode_batch_size)


@dataclass(frozen=True)
class ModelConfig:
    """[model] The U-Net and its heads."""

    patch_shape: tuple[int, int, int] = (7, 7, 7)  # odd patch size per axis; (1, py, px) for 2D
    max_num_inst: int = 2  # numinst classes are 0, 1, ..., max_num_inst ("max_num_inst or more")
    head: Head = "patches"  # patches = ppp (one logit per patch voxel); codes = ppp+dec
    code_units: int = 176  # code length for head = "codes"
    numinst_head: NuminstHead = "classes"  # classes = softmax over 0..max_num_inst; foreground = one sigmoid
    num_fmaps: int = 20  # feature maps of the first level
    fmap_inc_factors: tuple[float, ...] = (3.0, 3.0, 3.0)  # width growth per downsampling
    fmap_dec_factors: tuple[float, ...] = (1.2, 1.2, 1.2)  # decoder width shrink per level
    downsample_factors: tuple[tuple[int, int, int], ...] = ((2, 2, 2), (2, 2, 2), (2, 2, 2))  # per level and axis
    kernel_size: int = 3  # convolution kernel size
    num_repetitions: int = 2  # convolutions per level
    activation: Activation = "relu"  # non-linearity after every convolution
    padding: Padding = "valid"  # valid = exact tiling with context (the paper's); same = output as large as the input
    upsampling: Upsampling = "transposed_conv"  # learned, or nearest upsampling + convolution
    train_input_shape: tuple[int, int, int] = (140, 140, 140)  # network input during training
    predict_input_shape: tuple[int, int, int] = (156, 156, 156)  # network input during prediction
    decoder: DecoderConfig = field(default_factory=DecoderConfig)

    def problems(self) -> list[str]:
        problems = _positive("model", patch_shape=self.patch_shape, num_fmaps=self.num_fmaps,
                             fmap_inc_factors=self.fmap_inc_factors, fmap_dec_factors=self.fmap_dec_factors,
                             kernel_size=self.kernel_size, num_repetitions=self.num_repetitions,
                             train_input_shape=self.train_input_shape,
                             predict_input_shape=self.predict_input_shape, code_units=self.code_units)
        if any(p % 2 == 0 for p in self.patch_shape):
            problems.append(f"[model] patch_shape must be odd on every axis, got {self.patch_shape}")
        if self.max_num_inst < 1:
            problems.append(f"[model] max_num_inst must be >= 1, got {self.max_num_inst}")
        if len(self.fmap_inc_factors) != len(self.downsample_factors) or \
                len(self.fmap_dec_factors) != len(self.downsample_factors):
            problems.append("[model] fmap_inc_factors, fmap_dec_factors and downsample_factors need one entry "
                            f"per level; got {len(self.fmap_inc_factors)}, {len(self.fmap_dec_factors)} "
                            f"and {len(self.downsample_factors)}")
        code = 1
        for c in self.decoder.code_shape:
            code *= c
        if self.head == "codes" and code != self.code_units:
            problems.append(f"[model] code_units = {self.code_units} but model.decoder.code_shape = "
                            f"{self.decoder.code_shape} holds {code}; make them agree")
        return problems + self.decoder.problems()


@dataclass(frozen=True)
class SamplingConfig:
    """[training.sampling] Where training crops are taken."""

    probability_foreground: float = 0.7  # crops centred on a foreground voxel
    probability_overlap: float = 0.25  # crops centred near an overlap (numinst >= 2) voxel
    probability_random: float = 0.05  # uniformly random crops
    overlap_radius: int = 3  # "near an overlap" = within this many voxels
    min_masked: float = 0.01  # a foreground crop must hold at least this fraction of foreground

    def problems(self) -> list[str]:
        problems = _probability("training.sampling", probability_foreground=self.probability_foreground,
                                probability_overlap=self.probability_overlap,
                                probability_random=self.probability_random, min_masked=self.min_masked)
        total = self.probability_foreground + self.probability_overlap + self.probability_random
        if abs(total - 1.0) > 1e-6:
            problems.append(f"[training.sampling] probability_foreground + probability_overlap + "
                            f"probability_random must sum to 1, got {total:g}")
        return problems


@dataclass(frozen=True)
class AugmentationConfig:
    """[training.augmentation] Random changes applied to training crops."""

    mirror_transpose: bool = True  # mirror every axis and transpose equal-sized axes
    intensity_scale: tuple[float, float] = (0.9, 1.1)  # multiply raw by a factor in this range
    intensity_shift: tuple[float, float] = (-0.1, 0.1)  # add an offset in this range
    probability_permute_channels: float = 0.5  # permute raw channels (colour-coded neurons)
    probability_hue: float = 0.3  # change the hue of multi-channel raw
    hue_max_change: float = 0.5  # largest hue change
    probability_elastic: float = 0.5  # smooth elastic deformation
    elastic_control_point_spacing: int = 20  # voxels between control points
    elastic_jitter_sigma: float = 1.0  # voxels
    rotation_max_degrees: float = 45.0  # random rotation, in-plane for 2D
    probability_overlay: float = 0.3  # add a second sample's raw and instances to make overlaps

    def problems(self) -> list[str]:
        problems = _probability("training.augmentation",
                                probability_permute_channels=self.probability_permute_channels,
                                probability_hue=self.probability_hue,
                                probability_elastic=self.probability_elastic,
                                probability_overlay=self.probability_overlay)
        for key in ("intensity_scale", "intensity_shift"):
            low, high = getattr(self, key)
            if low > high:
                problems.append(f"[training.augmentation] {key} must be (low, high), got {(low, high)}")
        return problems


@dataclass(frozen=True)
class TrainingConfig:
    """[training] Fitting the network."""

    batch_size: int = 2  # crops per iteration
    max_iterations: int = 400_000  # training stops after this many iterations
    learning_rate: float = 1e-4  # Adam/AdamW/SGD learning rate
    learning_rate_schedule: LearningRateSchedule = "constant"  # or cosine: learning_rate down to 1 % of it at the end
    optimizer: Optimizer = "adam"  # torch optimiser
    adam_betas: tuple[float, float] = (0.9, 0.999)  # Adam/AdamW betas (the ECCV networks used 0.95, 0.999)
    weight_decay: float = 0.0  # L2 penalty of the optimiser
    init_checkpoint: str = ""  # start from the weights of this checkpoint (e.g. self-supervised); empty = random
    patch_loss_weight: float = 1.0  # weight of the patch (or decoded patch) BCE
    numinst_loss_weight: float = 1.0  # weight of the numinst cross entropy
    background_weight: float = 1.0  # loss weight of background voxels (0.01 for partly labelled data)
    checkpoint_every: int = 5000  # iterations between checkpoints
    validate_every: int = 1000  # iterations between validation-loss evaluations (0 = never)
    log_every: int = 25  # iterations between loss lines in metrics.csv and TensorBoard
    num_workers: int = 2  # data-loading processes
    use_amp: bool = True  # automatic mixed precision (CUDA only)
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)

    def problems(self) -> list[str]:
        problems = _positive("training", batch_size=self.batch_size, max_iterations=self.max_iterations,
                             learning_rate=self.learning_rate, checkpoint_every=self.checkpoint_every,
                             log_every=self.log_every)
        if min(self.patch_loss_weight, self.numinst_loss_weight, self.background_weight,
               self.validate_every, self.num_workers, self.weight_decay) < 0:
            problems.append("[training] loss weights, weight_decay, validate_every and num_workers must be >= 0")
        problems += checks.device_problems("training", self.device)
        if not all(0.0 <= b < 1.0 for b in self.adam_betas):
            problems.append(f"[training] adam_betas must lie in [0, 1), got {self.adam_betas}")
        return problems + self.sampling.problems() + self.augmentation.problems()


@dataclass(frozen=True)
class PredictionConfig:
    """[prediction] Running the network over a volume."""

    checkpoint: int | str = "last"  # last, best (from validation), an iteration number or a .pt file
    batch_size: int = 1  # network inputs per forward pass
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    patch_dtype: PatchDtype = "uint8"  # stored patches: uint8 (value/255) or float16
    store_patches: bool = True  # false = fused predict -> decode -> vote that stores no patches
    zero_background: bool = True  # store 0 as the patches of background voxels (never read): empty chunks compress
    decode_foreground_threshold: float = 0.5  # decode codes only where P(foreground) >= this
    test_time_flips: bool = False  # average the network over every flip of Y, X (and Z in 3D): 4x / 8x the time

    def problems(self) -> list[str]:
        problems = _positive("prediction", batch_size=self.batch_size)
        problems += _probability("prediction", decode_foreground_threshold=self.decode_foreground_threshold)
        problems += checks.device_problems("prediction", self.device)
        if not (self.checkpoint in ("last", "best") or
                (isinstance(self.checkpoint, str) and self.checkpoint.endswith(".pt")) or
                (isinstance(self.checkpoint, int) and not isinstance(self.checkpoint, bool)
                 and self.checkpoint >= 0)):
            problems.append(f"[prediction] checkpoint must be last, best, an iteration number or a .pt file, "
                            f"got {self.checkpoint!r}")
        return problems


@dataclass(frozen=True)
class VoteConfig:
    """[vote] Assembling instances from the consensus of overlapping patches."""

    patch_threshold: float = 0.5  # TH: a patch value above it means "same instance as the centre"
    cover_threshold: float = 0.5  # patch value above which a voxel counts as covered by a patch
    numinst_thresholds: tuple[float, float] = (0.9, 0.1)  # numinst = 1 where P(1) > t1; = 2 where P(>=2) > t2
    foreground_threshold: float = 0.5  # numinst_head = "foreground": foreground where P(foreground) > this
    consensus: Consensus = "prob_product"  # vote value: normalised probability products, raw products, or +-1
    different_rule: DifferentRule = "less_than_threshold"  # when a patch says "different": v < TH, v < 1-TH, v < TH/2
    selection: Selection = "local"  # local = block-invariant election; greedy = the original cover + thin-out
    blockwise: bool = True  # label on the dask cluster block by block (false: whole volume in one process)
    thin_out: bool = True  # greedy selection only: remove redundant patches by greedy set cover
    partition: Partition = "connected_components"  # or mutex_watershed: negative edges keep apart
    edge_threshold: float = 0.0  # patch pairs with mean consensus above this are the same instance
    overlap_channels: bool = True  # keep a second label where numinst >= 2 (channel 1 of the output)
    refine_consensus: bool = True  # second consensus pass without the patch entries the first contradicts
    overlap_votes: OverlapVotes = "fallback"  # patches centred on overlaps vote where no other patch does, or never
    block_shape: tuple[int, int, int] = (64, 64, 64)  # vote/paint block (core) size; the halo is added
    # flat: the driver streams every edge into one union-find; hierarchical: a tree of dask tasks over slabs of
    # 64 blocks on the workers (with overlaps: over the tier-1 edges, then the tier-2 phase on the driver)
    agglomeration: Agglomeration = "auto"  # the stitch: flat = one task, hierarchical/auto = a tree of tasks
    mws_max_memory_gib: float = 16.0  # mutex_watershed keeps the whole graph on the driver (~40 B/edge): refuse above

    def problems(self) -> list[str]:
        problems = _probability("vote", cover_threshold=self.cover_threshold,
                                foreground_threshold=self.foreground_threshold,
                                numinst_threshold_1=self.numinst_thresholds[0],
                                numinst_threshold_2=self.numinst_thresholds[1])
        if not 0.0 < self.patch_threshold < 1.0:
            problems.append(f"[vote] patch_threshold must lie strictly between 0 and 1, got {self.patch_threshold}")
        if not -1.0 <= self.edge_threshold <= 1.0:
            problems.append(f"[vote] edge_threshold must lie in [-1, 1], got {self.edge_threshold}")
        problems += _positive("vote", block_shape=self.block_shape, mws_max_memory_gib=self.mws_max_memory_gib)
        if self.blockwise and self.selection == "greedy":
            problems.append('[vote] selection = "greedy" is sequential and not block invariant; set '
                            "[vote] blockwise = false to use it (whole volume in one process)")
        return problems


GRID_POSTPROCESS_KEYS = ("min_instance_size",)  # [validation.grid] keys that set [postprocess], not [vote]


@dataclass(frozen=True)
class ValidationConfig:
    """[validation] Sweeping checkpoints x assembly parameters on validation data."""

    checkpoints: tuple[int, ...] = ()  # iterations to validate; empty = every checkpoint found
    grid: dict[str, tuple] = field(default_factory=dict)  # [vote] key or min_instance_size -> candidate values
    zip_keys: tuple[str, ...] = ()  # grid keys whose lists are zipped; the others form a product
    metric: str = "avS"  # summary number to maximise (see docs/metrics.md), e.g. avS, S_0.5, S, avF1

    def problems(self) -> list[str]:
        problems = []
        from dataclasses import fields
        vote_keys = [f.name for f in fields(VoteConfig)] + list(GRID_POSTPROCESS_KEYS)
        import difflib
        for key, values in self.grid.items():
            if key not in vote_keys:
                close = difflib.get_close_matches(key, vote_keys, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"[validation.grid] {key!r} is not a [vote] key{hint}; the grid takes [vote] keys "
                                "and min_instance_size")
            if len(values) == 0:
                problems.append(f"[validation.grid] {key} lists no values")
        for key in self.zip_keys:
            if key not in self.grid:
                problems.append(f"[validation] zip_keys names {key!r}, which is not in [validation.grid]")
        lengths = {len(self.grid[k]) for k in self.zip_keys if k in self.grid}
        if len(lengths) > 1:
            problems.append(f"[validation] the zip_keys lists must have equal lengths, got {sorted(lengths)}")
        return problems


@dataclass(frozen=True)
class EvaluationConfig:
    """[evaluation] Metrics against ground truth (docs/metrics.md)."""

    criterion: Criterion = "iou"  # iou = S_t / avS (nuclei, worms); cldice = FlyLight/FISBe avF1, C, S
    assignment: Assignment = "auto"  # auto = hungarian for iou (as the paper), greedy for cldice (as FISBe)
    thresholds: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # match thresholds
    min_instance_size: int = 0  # predicted instances with <= this many voxels are removed first
    foreground_only: bool = False  # ignore predictions where the GT is background
    average_over_samples: bool = True  # false = pool instance counts over samples (FlyLight folds)
    isbi_scores: bool = False  # also compute the ISBI 2012 V_Rand and V_Info
    false_labels: bool = True  # count false splits and false merges (cldice)
    write_images: bool = True  # overlay / max-projection PNGs in the report
    block_shape: tuple[int, int, int] = (128, 128, 128)  # blocks of the streamed GT x prediction overlap table

    def problems(self) -> list[str]:
        problems = [f"[evaluation] thresholds must lie in (0, 1], got {t}"
                    for t in self.thresholds if not 0.0 < t <= 1.0]
        if not self.thresholds:
            problems.append("[evaluation] thresholds must not be empty")
        if self.min_instance_size < 0:
            problems.append(f"[evaluation] min_instance_size must be >= 0, got {self.min_instance_size}")
        return problems + _positive("evaluation", block_shape=self.block_shape)


@dataclass(frozen=True)
class PostprocessConfig:
    """[postprocess] Cleaning the painted instances."""

    min_instance_size: int = 0  # instances with <= this many voxels are removed, the rest relabelled
    dilate: int = 0  # grow each instance by this many voxels into background (never into another)
    save_mip: bool = True  # write a coloured max-intensity projection PNG

    def problems(self) -> list[str]:
        if self.min_instance_size < 0 or self.dilate < 0:
            return [f"[postprocess] min_instance_size and dilate must be >= 0, got "
                    f"{self.min_instance_size} and {self.dilate}"]
        return []


@dataclass(frozen=True)
class ClusterConfig:
    """[cluster] Where the dask workers come from."""

    kind: ClusterKind = "local"  # local, scheduler (join scheduler_address), cuda, slurm, lsf, pbs
    scheduler_address: str = ""  # tcp://host:8786 for kind = "scheduler"; --scheduler overrides
    n_workers: int = 0  # worker processes (0 = one per core for local, one per GPU for cuda)
    threads_per_worker: int = 1  # threads of each worker process
    memory_limit: str = "auto"  # per worker, e.g. "8GiB"
    dashboard_address: str = ":8787"  # ":0" picks a free port
    retries: int = 2  # attempts per failed block after the first
    queue: str = ""  # batch systems: partition / queue
    account: str = ""  # batch systems: project to charge
    walltime: str = "04:00:00"  # batch systems: wall-clock limit per job
    cores: int = 2  # batch systems: cores per job
    memory: str = "16GiB"  # batch systems: memory per job
    gpus_per_job: int = 0  # batch systems: GPUs per job (one worker per GPU)
    job_extra_directives: tuple[str, ...] = ()  # extra #SBATCH / #BSUB / #PBS lines
    interface: str = ""  # batch systems: network interface of scheduler and workers, e.g. "ib0"; "lo" = one machine

    def problems(self) -> list[str]:
        problems = []
        if self.kind == "scheduler" and not self.scheduler_address:
            problems.append('[cluster] kind = "scheduler" needs scheduler_address (or --scheduler ADDRESS)')
        if self.n_workers < 0 or self.threads_per_worker < 1 or self.retries < 0 or self.cores < 1:
            problems.append("[cluster] n_workers and retries must be >= 0, threads_per_worker and cores >= 1")
        if self.interface and not _INTERFACE.fullmatch(self.interface):
            problems.append(f"[cluster] interface must be a network interface name such as ib0 or eth0, got "
                            f"{self.interface!r}")
        return problems + checks.cluster_problems(self)


@dataclass(frozen=True)
class DatabaseConfig:
    """[database] The graph database shared by the workers."""

    backend: Backend = "sqlite"  # sqlite (one file, single machine) or postgres (clusters)
    path: str = ""  # sqlite file; empty = <experiment>/graph.sqlite
    dsn: str = ""  # postgres connection string; the environment variable PPP_DIST_DB_DSN overrides it
    batch_size: int = 100_000  # rows per bulk insert / streamed read

    def problems(self) -> list[str]:
        return _positive("database", batch_size=self.batch_size) + checks.database_problems(self)


@dataclass(frozen=True)
class PipelineConfig:
    """The whole configuration: one field per TOML section."""

    general: GeneralConfig = field(default_factory=GeneralConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    prediction: PredictionConfig = field(default_factory=PredictionConfig)
    vote: VoteConfig = field(default_factory=VoteConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)

    def problems(self) -> list[str]:
        problems: list[str] = []
        for name in ("general", "data", "model", "training", "prediction", "vote", "validation",
                     "evaluation", "postprocess", "cluster", "database"):
            problems += getattr(self, name).problems()
        return problems + checks.prediction_problems(self) + checks.validation_problems(self)
