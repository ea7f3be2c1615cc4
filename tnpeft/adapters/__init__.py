"""Built-in adapters: short builder functions ``(in_features, out_features, **hparams) -> Graph``.

A new topology is written the same way (see ``examples/``) and gets the forward pass, merging,
counting and saving for free; :func:`register` makes it available by name.
"""

from tnpeft.adapters.lora import lora
from tnpeft.adapters.registry import ADAPTERS, check_hparams, get_builder, hparam_names, register

__all__ = ["ADAPTERS", "register", "get_builder", "hparam_names", "check_hparams", "lora"]
