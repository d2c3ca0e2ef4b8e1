"""Typed run configuration: schema, YAML loading with overrides, resolved dumps."""

from .load import config_to_dict, dump_config, load_config, validate
from .schema import AdapterConfig, DataConfig, ModelConfig, RunConfig, TrainConfig

__all__ = [
    "RunConfig",
    "ModelConfig",
    "DataConfig",
    "AdapterConfig",
    "TrainConfig",
    "load_config",
    "dump_config",
    "config_to_dict",
    "validate",
]
