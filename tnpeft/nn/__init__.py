"""torch and transformers integration: ``TNLinear``, injection, merging, saving, peft interop."""

from importlib.util import find_spec

from tnpeft.nn.combine import CombinationReport, add_weighted_adapter
from tnpeft.nn.config import AdapterConfig
from tnpeft.nn.kernel_notice import quiet_kernel_notice
from tnpeft.nn.layer import TNLinear
from tnpeft.nn.mixed_batch import mixed_adapters
from tnpeft.nn.model import (
    ParameterCount,
    adapter_config,
    adapter_method,
    adapter_modules,
    adapter_names,
    disable_adapters,
    find_targets,
    inject,
    print_trainable_parameters,
    set_adapter,
    tn_layers,
    trainable_parameters,
)
from tnpeft.nn.model_merge import delete_adapter, merge, merge_and_unload, unload, unmerge
from tnpeft.nn.peft_compat import PeftExport, export_peft, import_peft
from tnpeft.nn.saving import load_adapter, save_adapter

quiet_kernel_notice()   # before peft imports bitsandbytes
if find_spec("peft") is not None:   # peft installed: tnpeft is one of its methods (peft type TNPEFT)
    from tnpeft.nn.peft_method import TNPeftConfig, TNPeftModel
else:  # pragma: no cover
    TNPeftConfig = TNPeftModel = None  # type: ignore[assignment,misc]

__all__ = ["AdapterConfig", "TNLinear", "inject", "merge", "unmerge", "unload", "merge_and_unload", "set_adapter",
           "disable_adapters", "adapter_names", "adapter_modules", "adapter_config", "adapter_method", "find_targets",
           "tn_layers", "trainable_parameters", "print_trainable_parameters", "ParameterCount", "save_adapter",
           "load_adapter", "import_peft", "export_peft", "PeftExport", "delete_adapter", "add_weighted_adapter",
           "CombinationReport", "mixed_adapters", "TNPeftConfig", "TNPeftModel"]
