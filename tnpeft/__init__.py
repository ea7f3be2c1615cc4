"""tnpeft: parameter-efficient fine-tuning where every adapter is a tensor network.

An adapter is a :class:`Graph` of nodes (dense, diagonal, unitary, nonlinear) wired by named
indices; the forward pass, merging, parameter counting, saving, drawing, checks and circuits are
interpreters over it. See ``docs/concepts.md`` for the floors the package is built in.
"""

from tnpeft import adapters, draw, quantum
from tnpeft.algebra import compress, weighted_sum
from tnpeft.caches import cache_info, clear_caches
from tnpeft.contract import ContractionPlan, plan_stats
from tnpeft.errors import (
    AdapterFileError,
    AdapterStateError,
    BudgetError,
    CheckpointError,
    ConfigError,
    DanglingIndexError,
    GraphError,
    IndexSizeError,
    NodeKindError,
    NonFiniteError,
    NotMergeableError,
    TargetModuleError,
    TNPeftError,
    UnreachableLegError,
    WriteError,
)
from tnpeft.graph import Dense, Diagonal, Graph, HyperNetwork, Nonlinear, Unitary
from tnpeft.nn import (
    AdapterConfig,
    TNLinear,
    adapter_names,
    add_weighted_adapter,
    delete_adapter,
    disable_adapters,
    export_peft,
    import_peft,
    inject,
    load_adapter,
    merge,
    merge_and_unload,
    print_trainable_parameters,
    save_adapter,
    set_adapter,
    trainable_parameters,
    unload,
    unmerge,
)
from tnpeft.runtime import GraphModule
from tnpeft.storage import graph_modules, load_graph, save_graph
from tnpeft.verification import VerifyReport, verify

__version__ = "0.1.0"

__all__ = [
    "Graph", "GraphModule", "Dense", "Diagonal", "Unitary", "Nonlinear", "HyperNetwork", "save_graph", "load_graph",
    "graph_modules", "weighted_sum", "compress", "adapters", "draw", "quantum",
    "AdapterConfig", "TNLinear", "inject", "merge", "unmerge", "unload", "merge_and_unload", "set_adapter",
    "disable_adapters", "delete_adapter", "add_weighted_adapter", "adapter_names", "trainable_parameters", "print_trainable_parameters",
    "save_adapter", "load_adapter", "import_peft", "export_peft", "ContractionPlan", "plan_stats",
    "TNPeftError", "GraphError", "IndexSizeError", "DanglingIndexError", "UnreachableLegError", "NodeKindError",
    "NonFiniteError", "NotMergeableError", "ConfigError", "TargetModuleError", "AdapterStateError", "AdapterFileError",
    "BudgetError", "CheckpointError", "WriteError",
    "verify", "VerifyReport", "clear_caches", "cache_info", "__version__",
]
