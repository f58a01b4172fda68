"""The U-Net, its heads, the decoder, measured shapes and checkpoints."""

from __future__ import annotations

import pytest
import torch

from ppp_dist.config.sections import DecoderConfig, ModelConfig
from ppp_dist.errors import CheckpointError, ConfigError
from ppp_dist.experiment import ExperimentPaths
from ppp_dist.learning.model import (
    architecture,
    build_model,
    effective_factors,
    effective_input_shape,
    load_network,
    measure_output_shape,
    network_shapes,
    read_checkpoint,
    save_checkpoint,
)
from ppp_dist.learning.network_shapes import unet_output_shape

FLYLIGHT = ModelConfig()  # the defaults are the FlyLight HEAD network
PAPER_2D = {
    "dsb2018 ppp (setup32)": ModelConfig(patch_shape=(1, 25, 25), num_fmaps=40, fmap_inc_factors=(2.0,) * 4,
                                         fmap_dec_factors=(1.1,) * 4, downsample_factors=((1, 2, 2),) * 4,
                                         train_input_shape=(1, 268, 268), predict_input_shape=(1, 460, 460)),
    "worms ppp (setup10)": ModelConfig(patch_shape=(1, 41, 41), num_fmaps=12, fmap_inc_factors=(3.0,) * 3,
                                       fmap_dec_factors=(0.8, 1.0, 2.0), downsample_factors=((2, 2, 2),) * 3,
                                       upsampling="resize_conv", train_input_shape=(1, 252, 252),
                                       predict_input_shape=(1, 252, 252)),
}


def _meta_model(model: ModelConfig, channels: int = 1):
    with torch.device("meta"):
        return build_model(model, channels)


def test_flylight_shapes_are_the_papers():
    shapes = network_shapes(_meta_model(FLYLIGHT, 3), FLYLIGHT)
    assert shapes["train"]["output"] == [48, 48, 48]
    assert shapes["predict"]["output"] == [64, 64, 64]
    assert shapes["predict"]["context"] == [46, 46, 46]


def test_flylight_widths_follow_the_eccv_formula():
    net = _meta_model(FLYLIGHT, 3)
    assert net.unet.encoder_widths == [20, 60, 180, 540]
    assert net.unet.decoder_widths == [312, 375, 450]
    assert net.patch_head.out_channels == 343 and net.numinst_head.out_channels == 3


@pytest.mark.parametrize("name", sorted(PAPER_2D))
def test_2d_paper_networks_match_shape_arithmetic(name):
    model = PAPER_2D[name]
    net = _meta_model(model)
    assert net.dims == 2
    for shape in (model.train_input_shape, model.predict_input_shape):
        inp = effective_input_shape(model, shape)
        assert measure_output_shape(net, inp) == unet_output_shape(inp, effective_factors(model))


@pytest.mark.parametrize("size", [44, 52, 60, 68])
def test_real_forward_matches_shape_arithmetic(size):
    model = ModelConfig(patch_shape=(3, 3, 3), num_fmaps=2, fmap_inc_factors=(2.0, 2.0), fmap_dec_factors=(2.0, 2.0),
                        downsample_factors=((2, 2, 2), (1, 2, 2)), train_input_shape=(size,) * 3)
    net = build_model(model, 2)
    with torch.no_grad():
        patches, numinst = net(torch.zeros(1, 2, 36, size, size))
    expected = unet_output_shape((36, size, size), model.downsample_factors)
    assert tuple(patches.shape) == (1, 27) + expected
    assert tuple(numinst.shape) == (1, 3) + expected


def test_same_padding_keeps_the_shape_and_checks_divisibility():
    model = ModelConfig(padding="same", train_input_shape=(104,) * 3, predict_input_shape=(104,) * 3)
    shapes = network_shapes(_meta_model(model), model)
    assert shapes["train"]["output"] == [104, 104, 104]
    bad = ModelConfig(padding="same", train_input_shape=(100,) * 3)
    with pytest.raises(ConfigError, match="multiple of the total downsampling"):
        network_shapes(_meta_model(bad), bad)


def test_input_that_does_not_fit_names_sizes_that_do():
    model = ModelConfig(train_input_shape=(141, 141, 141))
    with pytest.raises(ConfigError, match="nearest sizes that fit"):
        network_shapes(_meta_model(model), model)


def test_2d_network_folds_z_into_the_batch():
    model = ModelConfig(patch_shape=(1, 5, 5), num_fmaps=3, fmap_inc_factors=(2.0,), fmap_dec_factors=(2.0,),
                        downsample_factors=((2, 2, 2),), numinst_head="foreground")
    net = build_model(model, 1)
    x = torch.randn(2, 1, 3, 20, 20)
    with torch.no_grad():
        patches, fg = net(x)
        single, _ = net(x[:, :, 1:2])
    assert tuple(patches.shape) == (2, 25, 3, 4, 4) and tuple(fg.shape) == (2, 1, 3, 4, 4)
    torch.testing.assert_close(patches[:, :, 1:2], single)


def test_heads_are_initialised_as_specified():
    net = build_model(ModelConfig(patch_shape=(1, 5, 5), num_fmaps=4, fmap_inc_factors=(2.0,),
                                  fmap_dec_factors=(2.0,), downsample_factors=((1, 2, 2),)), 1)
    fan_in, fan_out = net.patch_head.weight.shape[1], net.patch_head.weight.shape[0]
    bound = (6.0 / (fan_in + fan_out)) ** 0.5
    with torch.no_grad():
        assert net.patch_head.weight.abs().max() <= bound  # Xavier-uniform
        assert all(float(m.bias.abs().max()) == 0.0 for m in net.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("patch_shape, code_shape, fmaps", [((7, 7, 7), (22, 2, 2, 2), (16, 8)),
                                                            ((1, 9, 9), (4, 1, 3, 3), (8, 4))])
def test_decoder_maps_codes_to_patch_logits(patch_shape, code_shape, fmaps):
    units = code_shape[0] * code_shape[1] * code_shape[2] * code_shape[3]
    model = ModelConfig(patch_shape=patch_shape, head="codes", code_units=units, num_fmaps=2,
                        fmap_inc_factors=(2.0,), fmap_dec_factors=(2.0,), downsample_factors=((2, 2, 2),),
                        decoder=DecoderConfig(code_shape=code_shape, num_fmaps=fmaps))
    net = build_model(model, 1)
    out = net.decoder(torch.rand(5, units))
    assert tuple(out.shape) == (5, patch_shape[0] * patch_shape[1] * patch_shape[2])


def test_decoder_too_small_for_the_patch_is_a_config_error():
    model = ModelConfig(patch_shape=(7, 7, 7), head="codes", code_units=22,
                        decoder=DecoderConfig(code_shape=(22, 1, 1, 1), num_fmaps=(8, 4)))
    with pytest.raises(ConfigError, match="smaller than the patch"):
        build_model(model, 1)


def _tiny(num_fmaps=3):
    return ModelConfig(patch_shape=(1, 3, 3), num_fmaps=num_fmaps, fmap_inc_factors=(2.0,), fmap_dec_factors=(2.0,),
                       downsample_factors=((1, 2, 2),))


def test_checkpoint_round_trip_restores_weights_and_optimizer(tmp_path):
    net = build_model(_tiny(), 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    patches, numinst = net(torch.randn(1, 1, 1, 20, 20))
    (patches.mean() + numinst.mean()).backward()
    opt.step()
    path = save_checkpoint(tmp_path / "train" / "checkpoint_7.pt", net, iteration=7, optimizer=opt,
                           config_toml="[model]\n", shapes={"train": {"input": [1, 20, 20]}})
    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain types only
    assert raw["iteration"] == 7
    state = read_checkpoint(path)
    assert state["architecture"] == net.arch and state["shapes"]["train"]["input"] == [1, 20, 20]
    fresh = build_model(_tiny(), 1)
    fresh.load_state_dict(state["model_state_dict"])
    for a, b in zip(net.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    opt2 = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    opt2.load_state_dict(state["optimizer_state_dict"])
    for s1, s2 in zip(opt.state_dict()["state"].values(), opt2.state_dict()["state"].values()):
        assert all(torch.equal(s1[k], s2[k]) for k in ("exp_avg", "exp_avg_sq"))
    assert ExperimentPaths(tmp_path).checkpoint("last") == path
    assert ExperimentPaths(tmp_path).checkpoint(7) == path


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint_1.pt", build_model(_tiny(3), 1), iteration=1)
    with pytest.raises(CheckpointError, match="num_fmaps is 3 in the checkpoint but 5 in the config"):
        load_network(_tiny(5), 1, path, "cpu")
    with pytest.raises(CheckpointError, match="in_channels"):
        load_network(_tiny(3), 2, path, "cpu")
    assert load_network(_tiny(3), 1, path, "cpu") is load_network(_tiny(3), 1, path, "cpu")  # built once


def test_missing_or_broken_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "train").mkdir()
    broken = tmp_path / "train" / "checkpoint_3.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(broken)
    with pytest.raises(CheckpointError, match="no checkpoint for iteration 4"):
        ExperimentPaths(tmp_path).checkpoint(4)


def test_architecture_ignores_input_shapes_but_not_widths():
    assert architecture(_tiny(), 1) == architecture(
        ModelConfig(**{**_tiny().__dict__, "train_input_shape": (1, 60, 60)}), 1)
    assert architecture(_tiny(3), 1) != architecture(_tiny(4), 1)
