"""The ``tnpeft`` command.

    tnpeft count ADAPTER --in-features N --out-features M [name=value ...] [--json]
    tnpeft draw ADAPTER --in-features N --out-features M [name=value ...] -o FILE.svg|.png
    tnpeft verify ADAPTER --in-features N --out-features M [name=value ...] [--json]
    tnpeft demo [--out DIR] [--train-size N] [--epochs E] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from tnpeft.errors import ConfigError, TNPeftError


def _parse_hparams(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"hyper-parameter {item!r} must be written name=value (e.g. r=8)", field=item)
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def cmd_count(args: argparse.Namespace) -> int:
    from tnpeft.adapters import get_builder

    hp = _parse_hparams(args.hparams)
    from tnpeft.adapters import check_hparams

    check_hparams(args.adapter, hp)
    g = get_builder(args.adapter)(args.in_features, args.out_features, **hp)
    dense = args.in_features * args.out_features
    total = g.num_parameters()
    generated = g.num_generated()
    lora_eq = g.meta.get("lora_parameters", generated or None)
    if args.json:
        extra: dict[str, Any] = {}
        if generated:
            extra["generated_parameters"] = generated
        if lora_eq:
            extra["lora_same_rank_parameters"] = lora_eq
            extra["fraction_of_lora"] = total / lora_eq
        print(json.dumps({"adapter": args.adapter, "in_features": args.in_features, "out_features": args.out_features,
                          "hparams": g.meta.get("hparams", hp), "nodes": g.parameter_table(), "parameters": total,
                          "dense_parameters": dense, "fraction_of_dense": total / dense, **extra}, indent=2))
        return 0
    hps = ", ".join(f"{k}={v}" for k, v in g.meta.get("hparams", hp).items())
    print(f"{args.adapter}  {args.in_features} → {args.out_features}  ({hps})")
    rows = [(r["node"], r["kind"], ", ".join(f"{i}={s}" for i, s in r["inds"].items()), f"{r['parameters']:,}")
            for r in g.parameter_table()]
    w = [max(len(x[i]) for x in rows + [("node", "kind", "indices", "parameters")]) for i in range(4)]
    print(f"{'node':<{w[0]}}  {'kind':<{w[1]}}  {'indices':<{w[2]}}  {'parameters':>{w[3]}}")
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]:>{w[3]}}")
    print(f"{'total':<{w[0] + w[1] + w[2] + 4}}  {total:>{w[3]},}")
    print(f"a dense update of this layer has {dense:,} parameters; the adapter is {100 * total / dense:.3f} % of it")
    if generated:
        outs = ", ".join(o for k in g.generators for o in g.generators[k].outputs)
        print(f"the generator produces {generated:,} values (nodes {outs}), which are not trained themselves")
    if lora_eq:
        print(f"LoRA of the same rank has {lora_eq:,} parameters; the adapter trains {100 * total / lora_eq:.2f} % of "
              f"that ({100 * (1 - total / lora_eq):.1f} % fewer)" if total <= lora_eq else
              f"LoRA of the same rank has {lora_eq:,} parameters; the adapter trains {total / lora_eq:.2f}× that")
    return 0


def _build(args: argparse.Namespace):
    from tnpeft.adapters import check_hparams, get_builder

    hp = _parse_hparams(args.hparams)
    check_hparams(args.adapter, hp)
    return get_builder(args.adapter)(args.in_features, args.out_features, **hp)


def cmd_draw(args: argparse.Namespace) -> int:
    g = _build(args)
    if not args.output.lower().endswith((".svg", ".png", ".pdf")):
        raise ConfigError(f"output {args.output!r} must end in .svg, .png or .pdf", field="output")
    if args.circuit:
        from tnpeft.draw import draw_circuit

        draw_circuit(g, args.circuit, args.output)
    else:
        g.draw(args.output)
    print(f"wrote {args.output}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from tnpeft.verify import verify

    report = verify(_build(args), tol=args.tol)
    print(report.to_json() if args.json else report)
    return 0 if report.ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from tnpeft.train.demo import run_demo

    result = run_demo(out_dir=args.out, train_size=args.train_size, test_size=args.test_size, epochs=args.epochs,
                      batch_size=args.batch_size, seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tnpeft", description="Tensor-network parameter-efficient fine-tuning.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("count", help="count an adapter's trainable parameters for one layer")
    c.add_argument("adapter", help="adapter name, e.g. lora")
    c.add_argument("--in-features", type=int, required=True)
    c.add_argument("--out-features", type=int, required=True)
    c.add_argument("hparams", nargs="*", help="hyper-parameters as name=value (values parsed as JSON)")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=cmd_count)

    for verb, helptext in (("draw", "draw an adapter's tensor diagram (SVG, PNG or PDF)"),
                           ("verify", "check an adapter graph: orthogonality, counts, forward, merge, gradients")):
        v = sub.add_parser(verb, help=helptext)
        v.add_argument("adapter", help="adapter name, e.g. quantum_peft")
        v.add_argument("--in-features", type=int, required=True)
        v.add_argument("--out-features", type=int, required=True)
        v.add_argument("hparams", nargs="*", help="hyper-parameters as name=value")
        if verb == "draw":
            v.add_argument("-o", "--output", required=True, help="file to write: .svg, .png or .pdf")
            v.add_argument("--circuit", metavar="NODE", help="draw this (pauli) unitary node as its circuit")
            v.set_defaults(func=cmd_draw)
        else:
            v.add_argument("--tol", type=float, default=1e-5)
            v.add_argument("--json", action="store_true", help="print JSON")
            v.set_defaults(func=cmd_verify)

    d = sub.add_parser("demo", help="fine-tune MiniLM on tweet sentiment with LoRA (offline) and report")
    d.add_argument("--out", default="runs/demo", help="where adapters and metrics are written")
    d.add_argument("--train-size", type=int, default=4000)
    d.add_argument("--test-size", type=int, default=2000)
    d.add_argument("--epochs", type=int, default=1)
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # name=value hyper-parameters may stand before or after the options
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "hparams") and all("=" in e and not e.startswith("-") for e in extra):
            args.hparams = list(args.hparams) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "in_features", 1) <= 0 or getattr(args, "out_features", 1) <= 0:
        print("tnpeft: error: --in-features and --out-features must be positive", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except TNPeftError as e:
        print(f"tnpeft: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
