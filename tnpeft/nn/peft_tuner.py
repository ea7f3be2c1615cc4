"""``TNPeftModel``: tnpeft's peft tuner (``BaseTuner``), whose adapter layer is :class:`TNLinear`.

peft finds the target modules (its matching rules, ``modules_to_save``, ``trainable_token_indices``)
and drives the lifecycle; every adapter operation runs through tnpeft's own code — the layer's
forward, merge and parameters are :class:`~tnpeft.TNLinear`'s, and merging, unloading, deleting and
weighted combinations call the same all-or-nothing functions as ``tnpeft.merge`` & co. Injection is
all or nothing too: every target is checked and every graph built before a module is replaced, and
the whole injection runs in a :func:`~tnpeft.nn.transaction.transaction`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence, cast

import torch
from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from peft.utils.other import AuxiliaryTrainingWrapper
from torch import nn

from tnpeft.errors import AdapterStateError, ConfigError, TargetModuleError
from tnpeft.graph import Graph, shared_nodes
from tnpeft.nn.checkpointing import watch_checkpointing
from tnpeft.nn.combine import CombinationReport, add_weighted_adapter
from tnpeft.nn.layer import LINEAR_TYPES, TNLinear
from tnpeft.nn.mixed_batch import mixed_adapters
from tnpeft.nn.model import build_graphs, build_modules, check_adapter_name, tn_layers
from tnpeft.nn.model_merge import merge, unload, unmerge
from tnpeft.nn.peft_config import TNPeftConfig
from tnpeft.nn.peft_format import PREFIX, checkpoint_key
from tnpeft.nn.transaction import CONFIGS_ATTR, SCOPE_ATTR, transaction
from tnpeft.params.unitary import FrameScope
from tnpeft.runtime import GraphModule

# the peft layer is tnpeft's layer: it implements BaseTunerLayer's interface itself
BaseTunerLayer.register(TNLinear)


def check_target(path: str, module: nn.Module) -> None:
    """Raise :class:`TargetModuleError` (field ``target_modules``) unless tnpeft can adapt ``module``."""
    if not isinstance(module, LINEAR_TYPES + (TNLinear,)):
        raise TargetModuleError(
            f"target_modules matched module {path!r} of type {type(module).__name__}; tnpeft adapts nn.Linear "
            "layers (bitsandbytes' Linear8bitLt / Linear4bit included) and transformers' Conv1D, not "
            f"{type(module).__name__} layers", field="target_modules")


class TNPeftModel(BaseTuner):
    """peft's tuner for :class:`~tnpeft.nn.peft_config.TNPeftConfig` (peft type ``TNPEFT``).

    Made by ``peft.get_peft_model(model, TNPeftConfig(...))`` (or ``PeftModel.from_pretrained``);
    users call it through the ``PeftModel``: ``merge_and_unload``, ``unload``, ``disable_adapter()``,
    ``set_adapter``, ``add_adapter``, ``delete_adapter``, ``add_weighted_adapter``,
    ``model(..., adapter_names=[...])`` for mixed-adapter batches, and the counting functions.
    """

    prefix: str = PREFIX
    # TNLinear speaks peft's layer protocol without subclassing peft's layer class
    tuner_layer_cls = cast("type[BaseTunerLayer]", TNLinear)
    target_module_mapping = {k: list(v) for k, v in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.items()}
    _injecting: str | None = None
    _pending: dict[str, GraphModule] | None = None

    # ------------------------------------------------------------------ injection
    def inject_adapter(self, model: nn.Module, adapter_name: str, autocast_adapter_dtype: bool = True,
                       low_cpu_mem_usage: bool = False, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """peft's injection, run all or nothing: on any error the model is exactly as it was."""
        check_adapter_name(adapter_name)
        self._injecting, self._pending = adapter_name, None
        try:
            with transaction(model):
                if getattr(model, SCOPE_ATTR, None) is None:
                    setattr(model, SCOPE_ATTR, FrameScope())
                watch_checkpointing(model)
                super().inject_adapter(model, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype,
                                       low_cpu_mem_usage=low_cpu_mem_usage, state_dict=state_dict)
                cfg = cast(TNPeftConfig, self.peft_config[adapter_name])
                record = {**cfg.record(), "target_modules": sorted(
                    p for p, layer in tn_layers(model) if adapter_name in layer.tn_adapters)}
                if not hasattr(model, CONFIGS_ATTR):
                    setattr(model, CONFIGS_ATTR, {})
                getattr(model, CONFIGS_ATTR)[adapter_name] = record
        finally:
            self._injecting, self._pending = None, None

    def _prepare_adapter_config(self, config: PeftConfig, model_config: dict[str, Any]) -> PeftConfig:
        peft_config = cast(TNPeftConfig, config)
        if peft_config.target_modules is None and peft_config.module_graphs is not None:
            peft_config.target_modules = set(peft_config.module_graphs)
        if peft_config.target_modules is None:
            found = self.target_module_mapping.get(str(model_config.get("model_type")))
            if found is None:
                raise ConfigError(f"give target_modules: peft knows no default targets for model type "
                                  f"{model_config.get('model_type')!r}", field="target_modules")
            peft_config.target_modules = set(found)
        return peft_config

    def _prepare_model(self, config: PeftConfig, model: nn.Module) -> None:
        """Before any module is replaced: find the targets (peft's rules), check their types and
        build every graph and value module (sizes, budgets, hyper-parameters)."""
        peft_config = cast(TNPeftConfig, config)
        if self._injecting is None or peft_config.target_modules == "all-linear":
            return                     # all-linear matches linear layers only; graphs are built per module
        inside = tuple(k + "." for k, m in model.named_modules() if isinstance(m, BaseTunerLayer))
        targets = [k for k, m in model.named_modules() if k and not k.startswith(inside)
                   and self._check_target_module_exists(peft_config, k)]
        for k in targets:
            check_target(k, model.get_submodule(k))
        self._pending = self._build(peft_config, model, targets, self._injecting)

    def _build(self, cfg: TNPeftConfig, model: nn.Module, targets: list[str], name: str) -> dict[str, GraphModule]:
        if cfg.module_graphs is not None:
            graphs: dict[str, Graph] = {t: cfg.module_graph(t) for t in targets}
        else:
            graphs = build_graphs(model, cfg.adapter_config(targets), targets)
        shared = shared_nodes(graphs)
        if shared:
            raise ConfigError(f"adapter {name!r} shares tensors across layers ({sorted(shared)}: method "
                              f"{cfg.method or 'graph'!r}); tnpeft's peft method does not hold shared tensors yet — "
                              "use tnpeft.inject and tnpeft.save_adapter for it (or peft's own tuner)", field="method")
        return build_modules(model, graphs, name, optimize=cfg.optimize)[1]

    def _create_and_replace(self, config: PeftConfig, adapter_name: str, target: nn.Module, target_name: str,
                            parent: nn.Module, current_key: str, parameter_name: str | None = None) -> None:
        module = (self._pending or {}).get(current_key)
        if module is None:
            check_target(current_key, target)
            module = self._build(cast(TNPeftConfig, config), self.model, [current_key], adapter_name)[current_key]
        layer = target if isinstance(target, TNLinear) else TNLinear(target)
        layer.attach_adapter(adapter_name, module)
        if layer is not target:
            setattr(parent, target_name, layer)
        layer.set_adapter(self.active_adapters)   # a new adapter runs only if it is among the active ones

    def _mark_only_adapters_as_trainable(self, model: nn.Module) -> None:
        super()._mark_only_adapters_as_trainable(model)
        for _, layer in tn_layers(model):          # trainable nodes of the active adapters only
            layer._freeze_non_trainable_peft_weights()

    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        """``….tnpeft_adapters.<adapter>.<node>.<param>`` → ``….tnpeft_adapters.<node>.<param>`` (the file's
        keys name no adapter, so one file loads under any name)."""
        return checkpoint_key(key, adapter_name)

    # ------------------------------------------------------------------ forward
    @contextmanager
    def _enable_peft_forward_hooks(self, *args: Any, **kwargs: Any) -> Iterator[None]:
        """``model(..., adapter_names=[...])``: sample ``i`` runs through adapter ``adapter_names[i]``
        only (``"__base__"``: none) — :func:`tnpeft.nn.mixed_adapters`; never ignored."""
        names = kwargs.pop("adapter_names", None)
        if names is None:
            yield
            return
        with mixed_adapters(self.model, names):
            def pass_names(module: nn.Module, args: tuple[Any, ...],
                           kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:    # modules_to_save / trainable tokens choose per sample too
                return args, {**kwargs, "adapter_names": list(names)}

            handles = [m.register_forward_pre_hook(pass_names, with_kwargs=True)
                       for m in self.model.modules() if isinstance(m, AuxiliaryTrainingWrapper)]
            try:
                yield
            finally:
                for h in handles:
                    h.remove()

    # ------------------------------------------------------------------ merge, unload, delete
    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        """Merge the active (or named) adapters into the base weights (``tnpeft.merge``: all or nothing)."""
        self._check_merge_allowed()  # type: ignore[no-untyped-call]  # peft's, unannotated
        merge(self.model, adapter_names, safe_merge=safe_merge)

    def unmerge_adapter(self) -> None:
        """Take every merged adapter out of the base weights again."""
        unmerge(self.model)

    # peft annotates the base method as returning None, but it returns the model
    def _unload_and_optionally_merge(  # type: ignore[override]
            self, merge: bool = True, progressbar: bool = False, safe_merge: bool = False,
            adapter_names: list[str] | None = None) -> nn.Module:
        if merge:
            self._check_merge_allowed()  # type: ignore[no-untyped-call]  # peft's, unannotated
        unload(self.model, merge_first=merge, adapter_names=adapter_names, safe_merge=safe_merge)
        # what is left are peft's own wrappers (modules_to_save, trainable tokens)
        super()._unload_and_optionally_merge(merge=merge, progressbar=progressbar, safe_merge=safe_merge,
                                             adapter_names=adapter_names)
        model: nn.Module = self.model
        return model

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove adapter ``adapter_name`` everywhere (unmerged first where it is merged); when it was
        active, the remaining active adapters (or the first remaining one) take over."""
        if adapter_name not in self.peft_config:
            raise AdapterStateError(f"no adapter named {adapter_name!r}; the model has {list(self.peft_config)}")
        remaining = [a for a in self.peft_config if a != adapter_name]
        active = [a for a in self.active_adapters if a != adapter_name] or remaining[:1]
        with transaction(self.model) as tx:
            for _, layer in tn_layers(self.model):
                if adapter_name in layer.tn_adapters:
                    if adapter_name in layer.merged_adapters:
                        tx.backup(layer.base_layer.weight)
                    layer.delete_adapter(adapter_name)
            getattr(self.model, CONFIGS_ATTR, {}).pop(adapter_name, None)
            for m in self.model.modules():
                if isinstance(m, AuxiliaryTrainingWrapper):
                    m.delete_adapter(adapter_name, new_active_adapters=active)
        del self.peft_config[adapter_name]
        self.active_adapter = active
        if active:
            self.set_adapter(active)

    def add_weighted_adapter(self, adapters: Sequence[str], weights: Sequence[float], adapter_name: str,
                             combination_type: str = "svd", svd_rank: int | None = None,
                             **unsupported: Any) -> CombinationReport:
        """Add adapter ``adapter_name`` with update ``Σ wᵢ · sᵢ ΔWᵢ`` per layer (``"cat"`` exact,
        ``"svd"`` truncated to ``svd_rank``, ``"linear"`` node-wise) — :func:`tnpeft.add_weighted_adapter`;
        its config holds the combined graphs (``module_graphs``), so it saves and loads like any other."""
        bad = {k: v for k, v in unsupported.items() if v not in (None, False)}
        if bad:
            raise ConfigError(f"add_weighted_adapter: {sorted(bad)} are options of peft's LoRA combinations; tnpeft "
                              "combines with combination_type 'cat', 'svd' or 'linear' and svd_rank",
                              field=next(iter(bad)))
        if adapter_name in self.peft_config:
            raise AdapterStateError(f"the model already has an adapter named {adapter_name!r}")
        for a in adapters if not isinstance(adapters, str) else [adapters]:
            if a not in self.peft_config:
                raise AdapterStateError(f"no adapter named {a!r}; the model has {list(self.peft_config)}")
        report = add_weighted_adapter(self.model, adapters, weights, adapter_name, combination_type, svd_rank)
        graphs = {p: layer.tn_adapters[adapter_name].graph for p, layer in tn_layers(self.model)
                  if adapter_name in layer.tn_adapters}
        first = self.peft_config[adapters[0]]
        self.peft_config[adapter_name] = TNPeftConfig(
            module_graphs=graphs, target_modules=sorted(graphs), task_type=first.task_type,
            base_model_name_or_path=first.base_model_name_or_path, inference_mode=first.inference_mode)
        getattr(self.model, CONFIGS_ATTR)[adapter_name]["hparams"] = {}
        self.set_adapter(self.active_adapters)     # trainability as peft keeps it (modules_to_save included)
        return report
