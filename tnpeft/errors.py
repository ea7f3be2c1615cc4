"""One exception hierarchy for tnpeft.

Every error raised on bad input is a :class:`TNPeftError`. Messages name the node, index, module
or field at fault and say what was expected, so that a user never has to read a torch or cotengra
traceback to find out what is wrong with their graph or configuration.
"""

from __future__ import annotations


class TNPeftError(Exception):
    """Base class of every error tnpeft raises on purpose."""


class GraphError(TNPeftError, ValueError):
    """An adapter graph is malformed.

    Attributes:
        node: the name of the node at fault, if one is.
        index: the name of the index at fault, if one is.
    """

    def __init__(self, message: str, *, node: str | None = None, index: str | None = None):
        super().__init__(message)
        self.node = node
        self.index = index


class IndexSizeError(GraphError):
    """One index name is given two different sizes, or a size that is not a positive integer."""


class DanglingIndexError(GraphError):
    """An index that is not an open leg is attached to only one node."""


class UnreachableLegError(GraphError):
    """The network is not connected: some node or open leg cannot be reached from the input."""


class NodeKindError(GraphError):
    """A node's kind (or a parametrization / function name) is not one tnpeft knows."""


class BudgetError(GraphError):
    """A graph is larger than tnpeft's size budgets allow (:mod:`tnpeft.params.limits`): a tensor
    with more elements, a graph with more nodes or parameters than the limits. Checked on the graph,
    before anything is allocated."""


class NonFiniteError(GraphError):
    """A computed update (a weighted sum, a compression, an export) or the values it starts from
    hold NaN or infinite values — e.g. weights so large that the result overflows its dtype."""


class NotMergeableError(TNPeftError):
    """The adapter's update is not a fixed matrix (it contains a nonlinear stage) and cannot be merged."""


class ConfigError(TNPeftError, ValueError):
    """An adapter configuration or hyper-parameter is invalid.

    Attributes:
        field: the configuration field or hyper-parameter at fault, if one is.
    """

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class TargetModuleError(ConfigError):
    """``target_modules`` matched nothing, or matched a module tnpeft cannot adapt."""


class AdapterStateError(TNPeftError):
    """An operation does not fit the model's adapter state (unknown adapter name, already merged, ...)."""


class AdapterFileError(TNPeftError):
    """A saved adapter (config JSON or safetensors weights) is missing, truncated, tampered with or
    does not match the model it is loaded into."""


class CheckpointError(TNPeftError):
    """A training checkpoint (``checkpoint/``: ``trainer_state.json``, ``optimizer.json``,
    ``optimizer.safetensors``, ``adapter/``) is missing a field, has a field of the wrong type or
    value, or does not fit the run it is resumed into.

    Attributes:
        path: the file at fault.
        field: the field (or tensor) at fault, if one is.
    """

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None):
        super().__init__(message)
        self.path = path
        self.field = field


class WriteError(TNPeftError):
    """A file or folder cannot be written where it was asked for (a file stands where a folder must
    be, a folder where a file must be, no permission, a full disk).

    Attributes:
        path: the path that could not be written.
    """

    def __init__(self, message: str, *, path: str | None = None):
        super().__init__(message)
        self.path = path
