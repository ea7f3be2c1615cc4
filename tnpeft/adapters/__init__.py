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
from tnpeft.adapters.products import hadamard, kronecker, relabel
from tnpeft.adapters.site import LayerSite, layer_sites, takes_site
from tnpeft.adapters.peft_tuners import boft, fourierft, hra, ia3, loha, lokr, lokr_factors
from tnpeft.adapters.cross_layer import lortta, metatt, vera
from tnpeft.adapters.literature import loretta_adp, loretta_rep, quanta, tensor_ring, ttlora
from tnpeft.adapters.peft_formats import PEFT_FORMATS, PeftFormat, PeftImport, PeftLayer, format_for_method
from tnpeft.adapters import peft_additive, peft_multiplicative  # noqa: F401  (they register their formats)

__all__ = ["METHODS", "REQUIRED", "Method", "TrainingHook", "register", "get_method", "get_builder", "method_of", "method_table",
           "hparam_names", "check_hparams", "lora", "quantum_peft", "adalora", "AdaLoRAController", "oft", "qpa",
           "qwthn", "mpo", "factorize", "tt_from_matrix", "hadamard", "kronecker", "relabel", "LayerSite", "layer_sites",
           "takes_site", "loha", "lokr", "lokr_factors", "ia3", "boft", "hra", "fourierft", "vera", "metatt", "lortta",
           "quanta", "ttlora", "tensor_ring", "loretta_rep", "loretta_adp", "PEFT_FORMATS", "PeftFormat", "PeftImport",
           "PeftLayer", "format_for_method"]
