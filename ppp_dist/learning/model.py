"""The PatchPerPix network: a 2D/3D U-Net with a patch (or code) head, a numinst head and the ppp+dec decoder.

Layout (ppp_reference §1.1, §1.4):

* **2D or 3D.** A model is 2D when ``model.patch_shape[0] == 1``. 2D networks use ``Conv2d`` on (Y, X) and
  fold Z into the batch, so they still take and return (N, C, Z, Y, X) tensors (every z slice is predicted
  on its own). The z entries of ``downsample_factors`` and of the input shapes are then ignored (Z = 1).
* **U-Net.** Level widths ``num_fmaps * prod(inc[:l])``; decoder widths ``bottom / prod(dec[l:])`` (the
  ECCV formula: 20 fmaps, inc 3, dec 1.2 gives 20/60/180/540 and 312/375/450). Each level has
  ``num_repetitions`` convolutions of ``kernel_size`` with an activation; max pooling down; a transposed
  convolution (``transposed_conv``) or nearest upsampling + 1x1 convolution (``resize_conv``) up. With
  ``padding = "valid"`` every upsampled map is cropped so that the size left after the level's convolutions
  is a multiple of the downsampling below it (translation-equivariant crop), which is the rule of
  :mod:`ppp_dist.learning.network_shapes`; a test checks the two agree.
* **Heads.** 1x1 convolutions: P = prod(patch_shape) patch logits (``head = "patches"``) or ``code_units``
  code logits (``head = "codes"``), and ``max_num_inst + 1`` numinst class logits (``numinst_head =
  "classes"``) or 1 foreground logit. Kaiming-normal (fan_out, ReLU) init, zero biases; Xavier-uniform for
  the patch/code head.
* **Decoder** (ppp+dec): code -> ``decoder.code_shape`` -> 1x1 conv -> per level a transposed conv x
  ``upsample_factor`` and ``num_repetitions`` same-padded convs -> centre crop to the patch -> P logits.

Checkpoints are plain dicts loadable with ``torch.load(weights_only=True)``: ``model_state_dict``,
``optimizer_state_dict``, ``scaler_state_dict``, ``iteration``, ``architecture`` (a JSON string),
``config_toml`` (the resolved config), ``shapes`` (JSON string of the measured input/output shapes),
``normalization`` (JSON string: the raw normalisation settings of the training, used again by predict).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from pathlib import Path
from types import EllipsisType
from typing import Any

import torch
from torch import nn

from ppp_dist.config.sections import ModelConfig
from ppp_dist.errors import CheckpointError, ConfigError
from ppp_dist.learning.network_shapes import unet_output_shape

logger = logging.getLogger(__name__)

_ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU}


# ----------------------------------------------------------------------------------------------------------
# architecture description


def is_2d(model: ModelConfig) -> bool:
    """True when the network convolves in 2D (patch_shape z = 1)."""
    return int(model.patch_shape[0]) == 1


def effective_factors(model: ModelConfig) -> tuple[tuple[int, int, int], ...]:
    """Downsample factors per level as (z, y, x); z forced to 1 for 2D networks."""
    if is_2d(model):
        return tuple((1, int(f[1]), int(f[2])) for f in model.downsample_factors)
    return tuple(tuple(int(v) for v in f) for f in model.downsample_factors)  # type: ignore[misc]


def effective_input_shape(model: ModelConfig, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """A configured input shape with z = 1 for 2D networks."""
    if is_2d(model):
        return (1, int(shape[1]), int(shape[2]))
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def architecture(model: ModelConfig, num_channels: int) -> dict[str, Any]:
    """Everything that decides the weights' shapes; two checkpoints are compatible iff these are equal."""
    dims = 2 if is_2d(model) else 3
    factors = [list(f[3 - dims:]) for f in effective_factors(model)]
    arch: dict[str, Any] = {
        "dims": dims,
        "in_channels": int(num_channels),
        "num_fmaps": int(model.num_fmaps),
        "fmap_inc_factors": [float(f) for f in model.fmap_inc_factors],
        "fmap_dec_factors": [float(f) for f in model.fmap_dec_factors],
        "downsample_factors": factors,
        "kernel_size": int(model.kernel_size),
        "num_repetitions": int(model.num_repetitions),
        "activation": model.activation,
        "upsampling": model.upsampling,
        "head": model.head,
        "patch_shape": [int(p) for p in model.patch_shape],
        "out_channels": int(math.prod(model.patch_shape)) if model.head == "patches" else int(model.code_units),
        "numinst_channels": int(model.max_num_inst) + 1 if model.numinst_head == "classes" else 1,
        "decoder": None,
    }
    if model.head == "codes":
        dec = model.decoder
        arch["decoder"] = {"code_shape": [int(c) for c in dec.code_shape],
                           "num_fmaps": [int(f) for f in dec.num_fmaps],
                           "upsample_factor": int(dec.upsample_factor), "kernel_size": int(dec.kernel_size),
                           "num_repetitions": int(dec.num_repetitions)}
    return arch


def describe_difference(found: dict[str, Any], expected: dict[str, Any]) -> str:
    """'num_fmaps is 8 in the checkpoint but 12 in the config, ...' for differing keys."""
    parts = []
    for key in sorted(set(found) | set(expected)):
        if found.get(key) != expected.get(key):
            parts.append(f"{key} is {found.get(key)!r} in the checkpoint but {expected.get(key)!r} in the config")
    return "; ".join(parts)


# ----------------------------------------------------------------------------------------------------------
# layers


def _conv(dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _conv_pass(dims: int, cin: int, cout: int, kernel: int, reps: int, padding: str, act: str,
               last_activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for r in range(reps):
        layers.append(_conv(dims)(cin if r == 0 else cout, cout, kernel,
                                  padding=kernel // 2 if padding == "same" else 0))
        if last_activation or r < reps - 1:
            layers.append(_ACTIVATIONS[act]())
    return nn.Sequential(*layers)


def _upsample(dims: int, channels: int, factor: tuple[int, ...], mode: str, out_channels: int | None = None
              ) -> nn.Module:
    out_channels = channels if out_channels is None else out_channels
    if mode == "transposed_conv":
        cls = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
        return cls(channels, out_channels, factor, stride=factor)  # type: ignore[arg-type]  # len(factor) == dims
    return nn.Sequential(nn.Upsample(scale_factor=tuple(float(f) for f in factor), mode="nearest"),
                         _conv(dims)(channels, out_channels, 1))


def _centre_crop(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    dims = len(shape)
    have = x.shape[-dims:]
    if tuple(have) == tuple(shape):
        return x
    slices = tuple(slice((h - s) // 2, (h - s) // 2 + s) for h, s in zip(have, shape))
    index: tuple[EllipsisType | slice, ...] = (..., *slices)
    return x[index]


class UNet(nn.Module):
    """The U-Net body; ``forward`` maps (N, C, *spatial) to (N, out_channels, *spatial')."""

    def __init__(self, arch: dict[str, Any], padding: str) -> None:
        super().__init__()
        dims = arch["dims"]
        factors = [tuple(f) for f in arch["downsample_factors"]]
        levels = len(factors)
        inc, dec = arch["fmap_inc_factors"], arch["fmap_dec_factors"]
        enc_w = [max(1, round(arch["num_fmaps"] * math.prod(inc[:lv]))) for lv in range(levels + 1)]
        dec_w = [max(1, round(enc_w[levels] / math.prod(dec[lv:]))) for lv in range(levels)]
        k, reps, act = arch["kernel_size"], arch["num_repetitions"], arch["activation"]
        self.dims, self.factors, self.padding = dims, factors, padding
        self.conv_crop = 0 if padding == "same" else (k - 1) * reps
        self.encoder_widths, self.decoder_widths = enc_w, dec_w
        self.down = nn.ModuleList(
            _conv_pass(dims, arch["in_channels"] if lv == 0 else enc_w[lv - 1], enc_w[lv], k, reps, padding, act)
            for lv in range(levels + 1))
        pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        self.pool = nn.ModuleList(pool(f, stride=f) for f in factors)
        below = [enc_w[levels] if lv == levels - 1 else dec_w[lv + 1] for lv in range(levels)]
        self.up = nn.ModuleList(_upsample(dims, below[lv], factors[lv], arch["upsampling"]) for lv in range(levels))
        self.up_conv = nn.ModuleList(
            _conv_pass(dims, enc_w[lv] + below[lv], dec_w[lv], k, reps, padding, act) for lv in range(levels))
        self.out_channels = dec_w[0] if levels else enc_w[0]

    def _crop_to_factor(self, x: torch.Tensor, level: int) -> torch.Tensor:
        if self.padding == "same":
            return x
        shape = []
        for axis, size in enumerate(x.shape[-self.dims:]):
            below = math.prod(f[axis] for f in self.factors[level:])
            n = (size - self.conv_crop) // below
            if n <= 0:
                raise ConfigError(f"the U-Net input is too small: level {level} gets {size} voxels on axis "
                                  f"{axis}; use a larger input shape")
            shape.append(n * below + self.conv_crop)
        return _centre_crop(x, tuple(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, pool in enumerate(self.pool):
            x = self.down[level](x)
            skips.append(x)
            x = pool(x)
        x = self.down[-1](x)
        for level in reversed(range(len(self.pool))):
            x = self._crop_to_factor(self.up[level](x), level)
            skip = _centre_crop(skips[level], tuple(x.shape[-self.dims:]))
            x = self.up_conv[level](torch.cat([skip, x], dim=1))
        return x


class CodeDecoder(nn.Module):
    """ppp+dec decoder: sigmoid codes (n, K) -> patch logits (n, P) in C order (ppp_reference §1.4)."""

    def __init__(self, arch: dict[str, Any], activation: str = "relu") -> None:
        super().__init__()
        dec = arch["decoder"]
        dims = arch["dims"]
        code_shape = tuple(dec["code_shape"])
        patch = tuple(arch["patch_shape"])
        if dims == 2 and code_shape[1] != 1:
            raise ConfigError(f"[model.decoder] code_shape {code_shape} must have z = 1 for 2D patches {patch}")
        self.dims = dims
        self.code_shape = code_shape[:1] + code_shape[4 - dims:]
        self.patch_spatial = patch[3 - dims:]
        factor = (dec["upsample_factor"],) * dims
        widths = list(dec["num_fmaps"]) + [1]
        final = tuple(s * dec["upsample_factor"] ** len(dec["num_fmaps"]) for s in self.code_shape[1:])
        if any(f < p for f, p in zip(final, self.patch_spatial)):
            raise ConfigError(f"[model.decoder] code_shape {code_shape} upsampled {len(dec['num_fmaps'])} times "
                              f"by {dec['upsample_factor']} gives {final}, smaller than the patch {patch}; add "
                              f"decoder levels or enlarge code_shape")
        layers: list[nn.Module] = [_conv(dims)(self.code_shape[0], widths[0], 1), _ACTIVATIONS[activation]()]
        for i in range(len(dec["num_fmaps"])):
            last = i == len(dec["num_fmaps"]) - 1
            layers.append(_upsample(dims, widths[i], factor, "transposed_conv", widths[i + 1]))
            layers.append(_conv_pass(dims, widths[i + 1], widths[i + 1], dec["kernel_size"],
                                     dec["num_repetitions"], "same", activation, last_activation=not last))
        self.net = nn.Sequential(*layers)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = self.net(code.reshape((code.shape[0],) + self.code_shape))
        return _centre_crop(x, self.patch_spatial).reshape(code.shape[0], -1)


class PppModel(nn.Module):
    """U-Net + heads (+ decoder). ``forward`` takes (N, C, Z, Y, X) and returns two logit tensors:
    (N, P or K, Z', Y', X') patches/codes and (N, 3 or 1, Z', Y', X') numinst."""

    def __init__(self, arch: dict[str, Any], padding: str = "valid") -> None:
        super().__init__()
        self.arch = arch
        self.dims = arch["dims"]
        self.padding = padding
        self.unet = UNet(arch, padding)
        conv = _conv(self.dims)
        self.patch_head = conv(self.unet.out_channels, arch["out_channels"], 1)
        self.numinst_head = conv(self.unet.out_channels, arch["numinst_channels"], 1)
        self.decoder = CodeDecoder(arch, arch["activation"]) if arch["head"] == "codes" else None
        self._initialise()

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patch_head.weight)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 5:
            raise ValueError(f"the network takes (N, C, Z, Y, X) tensors, got shape {tuple(x.shape)}")
        if self.dims == 3:
            y = self.unet(x)
            return self.patch_head(y), self.numinst_head(y)
        n, c, z = x.shape[:3]
        flat = x.permute(0, 2, 1, 3, 4).reshape(n * z, c, x.shape[3], x.shape[4])
        y = self.unet(flat)
        outs = []
        for head in (self.patch_head, self.numinst_head):
            o = head(y)
            outs.append(o.reshape(n, z, o.shape[1], o.shape[2], o.shape[3]).permute(0, 2, 1, 3, 4))
        return outs[0], outs[1]


def build_model(model: ModelConfig, num_channels: int) -> PppModel:
    """A freshly initialised network for ``model`` and ``num_channels`` raw channels (on the CPU)."""
    return PppModel(architecture(model, num_channels), model.padding)


# ----------------------------------------------------------------------------------------------------------
# shapes


def expected_output_shape(model: ModelConfig, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """network_shapes arithmetic for the effective (2D-aware) input; ConfigError if it does not fit."""
    shape = effective_input_shape(model, input_shape)
    factors = effective_factors(model)
    if model.padding == "same":
        total = [math.prod(f[a] for f in factors) for a in range(3)]
        bad = [a for a in range(3) if shape[a] % total[a]]
        if bad:
            raise ConfigError(f"[model] with padding = 'same' the input {shape} must be a multiple of the total "
                              f"downsampling {tuple(total)} on every axis")
    return unet_output_shape(shape, factors, model.kernel_size, model.num_repetitions,
                             model.padding)  # type: ignore[return-value]


def measure_output_shape(net: PppModel, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Output (Z, Y, X) of ``net`` for ``input_shape``, by a dry forward pass on the meta device."""
    meta = _meta_copy(net)
    with torch.no_grad():
        patches, _ = meta(torch.empty((1, net.arch["in_channels"]) + tuple(input_shape), device="meta"))
    return tuple(int(s) for s in patches.shape[2:])  # type: ignore[return-value]


def _meta_copy(net: PppModel) -> PppModel:
    with torch.device("meta"):
        return PppModel(net.arch, net.padding)


def network_shapes(net: PppModel, model: ModelConfig) -> dict[str, Any]:
    """Measured train/predict input and output shapes (dry forward), checked against network_shapes.py.

    Returns ``{"train": {"input", "output"}, "predict": {"input", "output", "context"}, "dims",
    "num_parameters"}``; raises ConfigError if an input does not fit the network.
    """
    result: dict[str, Any] = {"dims": net.dims,
                              "num_parameters": int(sum(p.numel() for p in net.parameters()))}
    for name, shape in (("train", model.train_input_shape), ("predict", model.predict_input_shape)):
        inp = effective_input_shape(model, shape)
        expected = expected_output_shape(model, inp)
        measured = measure_output_shape(net, inp)
        if measured != tuple(expected):
            raise ConfigError(f"[model] the network maps {inp} to {measured} but the shape arithmetic "
                              f"predicts {expected}; this is a bug, please report it")
        result[name] = {"input": list(inp), "output": list(measured),
                        "context": [(i - o) // 2 for i, o in zip(inp, measured)]}
    return result


# ----------------------------------------------------------------------------------------------------------
# checkpoints (where they are and which one to use: ppp_dist.experiment.ExperimentPaths)


def save_checkpoint(path: Path, net: PppModel, *, iteration: int, optimizer: torch.optim.Optimizer | None = None,
                    scaler: Any = None, config_toml: str = "", shapes: dict[str, Any] | None = None,
                    normalization: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically (temp file + rename) that ``torch.load(weights_only=True)`` reads.

    ``normalization``: the ``[data]`` normalisation settings of the training (``normalize.settings_of``, plus
    the numbers found per training sample), which prediction uses again."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model_state_dict": net.state_dict(),
        "optimizer_state_dict": optimizer.state_dict() if optimizer is not None else None,
        "scaler_state_dict": scaler.state_dict() if scaler is not None else None,
        "iteration": int(iteration),
        "architecture": json.dumps(net.arch, sort_keys=True),
        "padding": net.padding,
        "config_toml": config_toml,
        "shapes": json.dumps(shapes or {}, sort_keys=True),
        "torch_rng_state": torch.get_rng_state(),  # the code-sample draws continue exactly on resume
        "normalization": json.dumps(normalization or {}, sort_keys=True),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """The checkpoint dict (tensors on the CPU), ``architecture`` and ``shapes`` parsed from JSON."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, but also IndexError/KeyError on garbage
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: torch cannot load it (not a checkpoint, or a damaged "
                              f"one): {first}") from err
    if not isinstance(state, dict) or "model_state_dict" not in state or "architecture" not in state:
        raise CheckpointError(f"{path} is not a ppp_dist checkpoint (no model_state_dict/architecture)")
    state = dict(state)
    for key, default in (("architecture", None), ("shapes", "{}")):
        try:
            state[key] = json.loads(state.get(key) or default)  # type: ignore[arg-type]  # None: TypeError below
            if not isinstance(state[key], dict):
                raise TypeError(f"a {type(state[key]).__name__}, not a JSON object")
        except (TypeError, ValueError) as err:
            # "from None": the preflight tells this (a readable file, not ppp_dist's) from torch failing to load
            raise CheckpointError(f"checkpoint {path} has a damaged '{key}' entry ({err})") from None
    return state


def read_normalization(path: Path | str) -> dict[str, Any] | None:
    """The normalisation settings a checkpoint was trained with; None for checkpoints that lack them."""
    state = read_checkpoint(path)
    text = state.get("normalization")
    settings = json.loads(text) if isinstance(text, str) and text else None
    return settings or None


def check_compatible(state: dict[str, Any], expected_arch: dict[str, Any], path: Path | str) -> None:
    """CheckpointError naming what differs if the checkpoint's architecture is not ``expected_arch``."""
    found = state["architecture"]
    if found != expected_arch:
        raise CheckpointError(f"checkpoint {path} belongs to another network: "
                              f"{describe_difference(found, expected_arch)}; use a matching [model] config "
                              f"or another experiment folder")


def check_weights(state: dict[str, Any], path: Path | str) -> None:
    """CheckpointError if the weights of ``state`` (whose architecture matched) do not fit its network: missing
    or extra tensors, wrong shapes, NaN or infinite values. Builds the network on the meta device (no memory)."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in PppModel(state["architecture"], state.get("padding", "valid"))
                    .state_dict().items()}
    weights = state["model_state_dict"]
    if not isinstance(weights, dict):
        raise CheckpointError(f"checkpoint {path} has no weights (model_state_dict is a {type(weights).__name__})")
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    wrong = [f"{k} is {tuple(getattr(weights[k], 'shape', ()))}, not {expected[k]}" for k in sorted(expected)
             if k in weights and tuple(getattr(weights[k], "shape", ())) != expected[k]]
    for what, names in (("lacks the weights", missing), ("holds unknown weights", extra), ("has weights of the "
                                                                                          "wrong shape:", wrong)):
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            raise CheckpointError(f"checkpoint {path} {what} {', '.join(names[:3])}{more} for its own architecture: "
                                  "a damaged or edited checkpoint; use another checkpoint")
    for name, tensor in weights.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"checkpoint {path} holds NaN or infinite weights (in {name}): the training "
                                  "diverged; use an earlier checkpoint (prediction.checkpoint = ITERATION)")


def load_weights(net: PppModel, path: Path | str) -> dict[str, Any]:
    """Load the weights of checkpoint ``path`` into ``net`` after the architecture check; return the dict."""
    state = read_checkpoint(path)
    check_compatible(state, net.arch, path)
    net.load_state_dict(state["model_state_dict"])
    return state


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda`` without a GPU -> ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device = {device!r} but torch sees no CUDA device; use 'auto' or 'cpu'")
    return torch.device(device)


@functools.lru_cache(maxsize=2)
def _cached_network(path: str, mtime_ns: int, device: str, arch_json: str, padding: str) -> PppModel:
    net = PppModel(json.loads(arch_json), padding)
    load_weights(net, path)
    return net.to(torch.device(device)).eval()


def load_network(model: ModelConfig, num_channels: int, checkpoint: Path | str, device: str = "auto") -> PppModel:
    """The network of ``model`` with the weights of ``checkpoint``, in eval mode on ``device``.

    Built once per process and (checkpoint, device, architecture) (STYLE item 22); a checkpoint of another
    architecture raises CheckpointError.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    dev = str(resolve_device(device))
    arch = architecture(model, num_channels)
    return _cached_network(str(path.resolve()), path.stat().st_mtime_ns, dev, json.dumps(arch, sort_keys=True),
                           model.padding)


__all__ = ["PppModel", "UNet", "CodeDecoder", "architecture", "build_model", "network_shapes",
           "expected_output_shape", "measure_output_shape", "save_checkpoint", "read_checkpoint",
           "load_weights", "load_network", "read_normalization", "check_compatible", "check_weights",
           "resolve_device", "is_2d", "effective_input_shape", "effective_factors"]
