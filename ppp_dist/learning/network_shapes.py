"""Input/output shape arithmetic of the U-Net, so ``plan`` can tile without building the network.

The rule is the one of translation-equivariant U-Nets: after each upsampling the feature map is cropped so
that the size left after the level's convolutions is a multiple of the product of the downsampling factors
below that level. With 3 levels of x2, kernel 3 and 2 convolutions per level this gives 140 -> 48 and
156 -> 64 voxels per axis (valid padding); with ``padding = "same"`` the output equals the input.
"""

from __future__ import annotations

from ppp_dist.errors import ConfigError


def _axis_output(size: int, factors: list[int], conv_crop: int) -> int | None:
    skips = []
    for f in factors:
        size -= conv_crop
        if size <= 0 or size % f:
            return None
        skips.append(size)
        size //= f
    size -= conv_crop
    if size <= 0:
        return None
    for level in reversed(range(len(factors))):
        size *= factors[level]
        below = 1
        for f in factors[level:]:
            below *= f
        size = ((size - conv_crop) // below) * below + conv_crop
        if size > skips[level]:
            return None
        size -= conv_crop
        if size <= 0:
            return None
    return size


def unet_output_shape(input_shape: tuple[int, ...], downsample_factors: tuple[tuple[int, ...], ...],
                      kernel_size: int = 3, num_repetitions: int = 2, padding: str = "valid") -> tuple[int, ...]:
    """Output shape of the U-Net for ``input_shape`` (voxels, Z, Y, X).

    Raises
    ------
    ConfigError
        if the input does not fit the network (a level would get an odd or non-positive size), naming the
        nearest input sizes that do.
    """
    if padding == "same":
        return tuple(input_shape)
    conv_crop = (kernel_size - 1) * num_repetitions
    out = []
    for axis, size in enumerate(input_shape):
        factors = [int(f[axis]) for f in downsample_factors]
        if size == 1 and all(f == 1 for f in factors):
            out.append(1)  # the z axis of 2D data: the network convolves in 2D
            continue
        result = _axis_output(int(size), factors, conv_crop)
        if result is None:
            fits = [s for s in range(max(1, size - 64), size + 65) if _axis_output(s, factors, conv_crop)]
            near = sorted(fits, key=lambda s: (abs(s - size), s))[:2]
            raise ConfigError(f"input size {size} on axis {axis} does not fit the U-Net "
                              f"(downsample factors {factors}, kernel {kernel_size}); "
                              f"nearest sizes that fit: {sorted(near)}")
        out.append(result)
    return tuple(out)
