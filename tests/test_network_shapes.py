"""U-Net shape arithmetic used by plan (the learning issue checks it against a real forward pass)."""

import pytest

from ppp_dist.errors import ConfigError
from ppp_dist.learning.network_shapes import unet_output_shape


@pytest.mark.parametrize("inp, out", [((140, 140, 140), (48, 48, 48)), ((156, 156, 156), (64, 64, 64))])
def test_flylight_network_sizes(inp, out):
    assert unet_output_shape(inp, ((2, 2, 2),) * 3) == out


def test_2d_and_same_padding():
    assert unet_output_shape((1, 252, 252), ((1, 2, 2),) * 3) == (1, 160, 160)
    assert unet_output_shape((104, 104, 104), ((2, 2, 2),) * 3, padding="same") == (104, 104, 104)


def test_size_that_does_not_fit_names_nearest_fits():
    with pytest.raises(ConfigError, match=r"input size 141 on axis 0 .* nearest sizes that fit: \[140, 148\]"):
        unet_output_shape((141, 140, 140), ((2, 2, 2),) * 3)
