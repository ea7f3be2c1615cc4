"""Built-in adapters: short builder functions ``(in_features, out_features, **hparams) -> Graph``.

A new topology is written the same way (see ``examples/``) and gets the forward pass, merging,
counting and saving for free; :func:`register` makes it available by name.
"""

from tnpeft.adapters.registry import ADAPTERS, check_hparams, get_builder, hparam_names, register  # noqa: I001
from tnpeft.adapters.lora import lora
from tnpeft.adapters.quantum_peft import quantum_peft
from tnpeft.adapters.adalora import AdaLoRAController, adalora
from tnpeft.adapters.oft import oft
from tnpeft.adapters.qpa import qpa
from tnpeft.adapters.qwthn import factorize, mpo, qwthn

__all__ = ["ADAPTERS", "register", "get_builder", "hparam_names", "check_hparams", "lora", "quantum_peft", "adalora",
           "AdaLoRAController", "oft", "qpa", "qwthn", "mpo", "factorize"]
