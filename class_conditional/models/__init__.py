"""Backbones for class-conditional generation."""
from .dit import CONFIG_KEYS, DiT, count_parameters, load_model_config, model_kwargs  # noqa: F401
