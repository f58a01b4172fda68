"""Typed, frozen, validated configuration loaded from TOML files."""

from ppp_dist.config.loader import config_from_table, load_config, parse_override, save_config, with_vote
from ppp_dist.config.sections import (
    ClusterConfig,
    DatabaseConfig,
    DataConfig,
    EvaluationConfig,
    GeneralConfig,
    ModelConfig,
    PipelineConfig,
    PostprocessConfig,
    PredictionConfig,
    TrainingConfig,
    ValidationConfig,
    VoteConfig,
)

__all__ = [
    "ClusterConfig", "DataConfig", "DatabaseConfig", "EvaluationConfig", "GeneralConfig", "ModelConfig",
    "PipelineConfig", "PostprocessConfig", "PredictionConfig", "TrainingConfig", "ValidationConfig",
    "VoteConfig", "config_from_table", "load_config", "parse_override", "save_config", "with_vote",
]
