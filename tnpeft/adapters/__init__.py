"""Built-in adapters: short builder functions ``(in_features, out_features, **hparams) -> Graph``,
registered as *methods* (:mod:`tnpeft.adapters.methods`).

A new topology is written the same way (see ``examples/``) and gets the forward pass, merging,
counting, saving, drawing, checks and the command line for free; :func:`register` makes it
available by name.
"""

from tnpeft.adapters.methods import (  # noqa: I001  (the registry first: the builders register into it)
    METHODS,
    REQUIRED,
    Method,
    TrainingHook,
    check_hparams,
    get_builder,
    get_method,
    hparam_names,
    method_of,
    method_table,
    register,
)
from tnpeft.adapters.lora import lora
from tnpeft.adapters.quantum_peft import quantum_peft
from tnpeft.adapters.adalora import AdaLoRAController, adalora
from tnpeft.adapters.oft import oft
from tnpeft.adapters.qpa import qpa
from tnpeft.adapters.tensor_train import factorize, mpo, tt_from_matrix
from tnpeft.adapters.qwthn import qwthn

__all__ = ["METHODS", "REQUIRED", "Method", "TrainingHook", "register", "get_method", "get_builder", "method_of", "method_table",
           "hparam_names", "check_hparams", "lora", "quantum_peft", "adalora", "AdaLoRAController", "oft", "qpa",
           "qwthn", "mpo", "factorize", "tt_from_matrix"]
