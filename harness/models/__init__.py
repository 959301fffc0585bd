"""Model families (one module each) behind an explicit registry."""

from .registry import PretrainedConfig, get_entry, list_models, register_model

__all__ = ["PretrainedConfig", "get_entry", "list_models", "register_model"]
