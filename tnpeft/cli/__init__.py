"""The ``tnpeft`` command.

    tnpeft --version
    tnpeft adapters [--json]
    tnpeft count ADAPTER --in-features N --out-features M [name=value ...] [--json]
    tnpeft convert --adapter-dir DIR [--model minilm|smollm2|DIR] --to peft-lora -o OUT [--max-rank R] [--overwrite]
    tnpeft draw ADAPTER --in-features N --out-features M [name=value ...] -o FILE.svg|.png
    tnpeft verify ADAPTER --in-features N --out-features M [name=value ...] [--json]
    tnpeft export-circuits ADAPTER --in-features N --out-features M [name=value ...] -o DIR
    tnpeft train [--model minilm|smollm2|DIR] [--data tweets|hamlet|FILE] [--adapter ADAPTER] [name=value ...]
                 [--out DIR] [--epochs E] [--max-steps N] ... [--json]
    tnpeft demo [--out DIR] [--full] [--json]
    tnpeft compare --adapters SPEC ... [--lrs LR ...] [--seeds S ...] (--steps N | --epochs E) [--protocol P] ...

ADAPTER is a registered method (``lora``), a builder of your own (``mypkg.topos:ttlora``, given
the layer sizes and name=value hyper-parameters) or a graph ``.json`` file; ``--adapter-dir DIR``
(a saved adapter) takes its place in every verb (see :mod:`tnpeft.adapters.specs`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from tnpeft.cli.arguments import build_parser
from tnpeft.errors import TNPeftError

__all__ = ["main", "build_parser"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # name=value hyper-parameters may stand before or after the options
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "hparams") and all("=" in e and not e.startswith("-") for e in extra):
            args.hparams = list(args.hparams) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _split_compare_spec(args)
    if any(isinstance(getattr(args, k, None), int) and getattr(args, k) <= 0 for k in ("in_features", "out_features")):
        print("tnpeft: error: --in-features and --out-features must be positive", file=sys.stderr)
        return 2
    try:
        code: int = args.func(args)
        return code
    except TNPeftError as e:
        print(f"tnpeft: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tnpeft: interrupted", file=sys.stderr)
        return 130
    except OSError as e:   # the system refused a read or write tnpeft did not foresee (a full disk, ...)
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"tnpeft: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def _split_compare_spec(args: argparse.Namespace) -> None:
    """``lora:r=8,alpha=16`` (the form ``compare --adapters`` takes) as ``lora r=8 alpha=16``, so a spec
    copied from a study runs through every verb; ``module.path:function`` builders stay as they are."""
    adapter = getattr(args, "adapter", None)
    if not (isinstance(adapter, str) and hasattr(args, "hparams")):
        return
    from tnpeft.adapters.methods import METHODS
    from tnpeft.train.compare_setup import split_spec_items

    name, sep, rest = adapter.partition(":")
    if sep and name in METHODS and "=" in rest:
        args.adapter = name
        args.hparams = split_spec_items(rest) + list(args.hparams)

