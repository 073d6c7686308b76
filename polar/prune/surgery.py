"""Which family's surgery removes the planned channels from a model: one function per model class, registered by
the family's module (``vgg``, ``mobilenet``, ``resnet``) with ``remove_channels.register``."""
from __future__ import annotations

from dataclasses import dataclass
from functools import singledispatch

from torch import Tensor, nn

from ..errors import ConfigError


@dataclass(frozen=True)
class Removal:
    """What a family's surgery is asked to do.

    ``channels``: for each channel set, keyed by ``id`` of its first BN, the channels to remove (a bool mask).
    ``input_size``: the input shape the folded constants (border maps) are computed for.
    ``narrow_residual`` / ``round_to``: ``polar.prune``'s options; families without a residual stream to narrow
    ignore the first.
    """

    channels: dict[int, Tensor]
    input_size: tuple[int, ...]
    narrow_residual: bool = False
    round_to: int = 1


@singledispatch
def remove_channels(model: nn.Module, removal: Removal) -> None:
    """Remove ``removal.channels`` from ``model`` in place, folding their constants into the layers that read them."""
    raise ConfigError(f"pruning has no surgery for {type(model).__name__}; use a model from polar.create_model, or "
                     "register one with polar.prune.remove_channels.register")
