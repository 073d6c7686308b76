"""Model registry: builders registered by name, so the CLI, app and notebooks build models from strings."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import ConfigError

__all__ = ["register_model", "create_model", "list_models"]

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str | None = None) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model builder under ``name`` (default: the function's name); a duplicate name is an error."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _BUILDERS:
            raise ValueError(f"model {key!r} is already registered")
        _BUILDERS[key] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_BUILDERS)


def create_model(name: str, **cfg: Any) -> nn.Module:
    """Build the model registered as ``name`` with the builder's keyword arguments (e.g. ``num_classes``).

    Raises:
        ValueError: if ``name`` is not registered; the message lists the valid names.
    """
    if name not in _BUILDERS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _BUILDERS[name](**cfg)
