"""Config loading: layering, validation with suggestions, every shipped config parses, round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from ppp_dist.config import PipelineConfig, config_from_table, load_config, parse_override, save_config
from ppp_dist.config.reference import default_toml, reference_markdown
from ppp_dist.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_valid_and_match_the_reference_file():
    assert load_config([ROOT / "configs" / "default.toml"]) == PipelineConfig()
    assert (ROOT / "configs" / "default.toml").read_text() == default_toml(), \
        "configs/default.toml is stale: run python -m ppp_dist.config.reference"
    assert (ROOT / "docs" / "config_reference.md").read_text() == reference_markdown(), \
        "docs/config_reference.md is stale: run python -m ppp_dist.config.reference"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_parses(path):
    assert isinstance(load_config([path]), PipelineConfig)


def test_misspelt_key_gets_a_suggestion():
    with pytest.raises(ConfigError,
                       match=r"unknown key \[vote\] 'patch_treshold' \(did you mean 'patch_threshold'\?\)"):
        config_from_table({"vote": {"patch_treshold": 0.6}})


def test_misspelt_section_and_nested_key():
    with pytest.raises(ConfigError, match=r"unknown section \[votes\] \(did you mean 'vote'\?\)"):
        config_from_table({"votes": {}})
    with pytest.raises(ConfigError,
                       match=r"\[training.sampling\] 'probability_fg' \(did you mean 'probability_foreground'\?\)"):
        config_from_table({"training": {"sampling": {"probability_fg": 0.5}}})


def test_all_problems_are_reported_together():
    with pytest.raises(ConfigError) as info:
        config_from_table({"vote": {"patch_threshold": 1.7, "consensus": "max", "selction": "local"},
                           "model": {"patch_shape": [6, 7, 7]}, "cluster": {"kind": "scheduler"}})
    message = str(info.value)
    assert message.startswith("5 problems in the config")
    for part in ("patch_threshold must lie strictly between 0 and 1, got 1.7",
                 "consensus must be one of 'prob_product', 'raw_prob_product', 'count', got 'max'",
                 "'selction' (did you mean 'selection'?)", "patch_shape must be odd on every axis",
                 'kind = "scheduler" needs scheduler_address'):
        assert part in message


@pytest.mark.parametrize("table, expected", [
    ({"model": {"patch_shape": [7, 7]}}, r"\[model\] patch_shape must be a list of 3 values"),
    ({"general": {"overwrite": "yes"}}, r"\[general\] overwrite must be true or false, got 'yes'"),
    ({"vote": {"block_shape": [64, 64, 64.5]}}, r"\[vote\] block_shape\[2\] must be an integer, got 64.5"),
    ({"training": {"batch_size": True}}, r"\[training\] batch_size must be an integer, got True"),
    ({"vote": 3}, r"\[vote\] must be a table, got 3"),
    ({"training": {"sampling": {"probability_random": 0.5}}}, r"must sum to 1, got 1.45"),
    ({"model": {"head": "codes", "code_units": 100}}, r"code_units = 100 but model.decoder.code_shape"),
    ({"validation": {"grid": {"patch_treshold": [0.5]}}},
     r"'patch_treshold' is not a \[vote\] key \(did you mean 'patch_threshold'\?\)"),
    ({"validation": {"grid": {"patch_threshold": [0.5, 0.6], "cover_threshold": [0.5]},
                     "zip_keys": ["patch_threshold", "cover_threshold"]}}, r"equal lengths"),
])
def test_wrong_types_and_values(table, expected):
    with pytest.raises(ConfigError, match=expected):
        config_from_table(table)


def test_layering_defaults_files_overrides(tmp_path):
    first = tmp_path / "a.toml"
    first.write_text("[vote]\npatch_threshold = 0.6\nselection = 'greedy'\nblockwise = false\n"
                     "[model]\npatch_shape = [1, 25, 25]\n")
    second = tmp_path / "b.toml"
    second.write_text("[vote]\npatch_threshold = 0.7\n")
    config = load_config([first, second], ["vote.edge_threshold=0.2", "vote.partition=mutex_watershed"])
    assert config.vote.patch_threshold == 0.7  # later file wins
    assert config.vote.selection == "greedy"  # earlier file kept where the later one is silent
    assert config.model.patch_shape == (1, 25, 25)
    assert config.vote.edge_threshold == 0.2 and config.vote.partition == "mutex_watershed"
    assert config.vote.cover_threshold == 0.5  # default


def test_override_syntax():
    assert parse_override("training.sampling.min_masked=0.2") == {"training": {"sampling": {"min_masked": 0.2}}}
    assert parse_override("prediction.device=cuda:1") == {"prediction": {"device": "cuda:1"}}
    assert parse_override("model.patch_shape=[1,41,41]") == {"model": {"patch_shape": [1, 41, 41]}}
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        parse_override("vote.patch_threshold")
    with pytest.raises(ConfigError, match="must name a section and a key"):
        parse_override("patch_threshold=0.5")


def test_resolved_config_round_trips(tmp_path):
    config = load_config([], ["vote.selection=greedy", "vote.blockwise=false",
                              "validation.grid.patch_threshold=[0.5, 0.6]",
                              "model.downsample_factors=[[1,2,2],[1,2,2]]", "model.fmap_inc_factors=[2,2]",
                              "model.fmap_dec_factors=[1,1]"])
    path = save_config(config, tmp_path / "config.toml")
    assert load_config([path]) == config
    assert "version" in path.read_text()


def test_greedy_selection_needs_the_whole_volume():
    with pytest.raises(ConfigError, match=r'selection = "greedy" is sequential and not block invariant; set '
                                          r"\[vote\] blockwise = false"):
        load_config([], ["vote.selection=greedy"])
    assert load_config([], ["vote.selection=greedy", "vote.blockwise=false"]).vote.selection == "greedy"


def test_bad_toml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[vote]\npatch_threshold = \n")
    with pytest.raises(ConfigError, match=r"bad.toml is not valid TOML: .*line 2"):
        load_config([bad])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config([tmp_path / "missing.toml"])
