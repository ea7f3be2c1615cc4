"""tnpeft as a peft method: ``import tnpeft`` registers peft type ``TNPEFT`` (prefix ``tnpeft_``)
with peft (``peft.utils.register_peft_method``), so that ``get_peft_model``,
``PeftModel.from_pretrained``, ``AutoPeftModel*``, TRL's ``SFTTrainer(peft_config=...)`` and
transformers' ``model.load_adapter`` take a :class:`~tnpeft.nn.peft_config.TNPeftConfig`.

peft has no plugin discovery: a process must ``import tnpeft`` before it loads a saved tnpeft
adapter through peft (without it peft fails with ``KeyError: 'TNPEFT'``).
"""

from __future__ import annotations

from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from peft.utils import PeftType, register_peft_method

from tnpeft.nn.peft_config import MIN_PEFT, TNPeftConfig, peft_version
from tnpeft.nn.peft_format import PEFT_TYPE, PREFIX
from tnpeft.nn.peft_tuner import TNPeftModel


def register() -> bool:
    """Register the method with peft (once; a second call, a reload or a second copy of tnpeft on
    the path changes nothing). ``False`` when the installed peft is older than tnpeft needs."""
    if peft_version() < MIN_PEFT:
        return False
    member = getattr(PeftType, PEFT_TYPE)
    if member not in PEFT_TYPE_TO_CONFIG_MAPPING:
        register_peft_method(name=PEFT_TYPE.lower(), config_cls=TNPeftConfig, model_cls=TNPeftModel, prefix=PREFIX)
    return True


REGISTERED = register()

__all__ = ["TNPeftConfig", "TNPeftModel", "register", "REGISTERED"]
