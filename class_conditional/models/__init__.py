"""Backbones for class-conditional generation."""
from .dit import CONFIG_KEYS, DiT, build_model, count_parameters, load_model_config  # noqa: F401
