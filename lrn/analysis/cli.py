"""``lrn analyze gradients``, ``lrn analyze weights`` and ``lrn report``.

Each analysis writes a PNG and a JSON sidecar (``kind`` = lrn.analysis.*) that
``lrn report`` picks up from the directories it is given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_CELLS = "lstm,gru,atr,sru,lrn,olrn,lrn:activation=identity"


def _write_sidecar(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


def cmd_gradients(args: argparse.Namespace) -> int:
    from lrn.analysis.figures import plot_gradient_flow
    from lrn.analysis.gradients import decay_per_step, flow_at_init
    from lrn.analysis.trained import trained_flows

    for name, value in (("--hidden", args.hidden), ("--sequences", args.sequences)):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if args.length < 3:
        raise ValueError(f"--length must be at least 3, got {args.length}")
    specs = [c.strip() for c in args.cells.split(",") if c.strip()]
    groups = []
    if specs:
        flows = flow_at_init(specs, hidden=args.hidden, length=args.length, sequences=args.sequences,
                             seed=args.seed)
        groups.append((f"at initialisation, N(0,1) inputs (T={args.length}, N={args.sequences}, "
                       f"H={args.hidden})", flows))
    for run_dir in args.run:
        groups.append(trained_flows(run_dir, sequences=args.sequences, max_length=args.length,
                                    seed=args.seed))
    if not groups:
        raise ValueError("nothing to measure: give --cells and/or --run")
    out = Path(args.out)
    png = plot_gradient_flow(groups, out / "gradients.png")
    _write_sidecar(out / "gradients.json", {
        "kind": "lrn.analysis.gradients", "title": "Gradient flow", "figure": png.name,
        "groups": [{"title": title, "flows": [f.to_dict() for f in flows]} for title, flows in groups]})
    for title, flows in groups:
        print(title)
        for f in flows:
            shown = ", ".join(f"{d}: {v:.1e}" for d, v in zip(f.distances, f.input_norms))
            factor = decay_per_step(f.distances, f.input_norms)
            print(f"  {f.label:<28} ||dh_T/dx_t|| by T-t  {shown}  "
                  f"(x{'?' if factor is None else f'{factor:.3f}'} per step)")
    print(f"wrote {png} and {out / 'gradients.json'}")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from lrn.analysis.figures import plot_token_weights
    from lrn.analysis.trained import text_token_weights

    if args.top < 1:
        raise ValueError(f"--top must be a positive integer, got {args.top}")
    result = text_token_weights(args.run_dir, args.text, layer=args.layer)
    top = []
    for s, seg in enumerate(result["segments"]):  # a token's weight: mean over the final states
        rows = list(seg["rows"].values())
        top += [{"segment": s, "position": k, "token": token, "weight": sum(r[k] for r in rows) / len(rows)}
                for k, token in enumerate(seg["tokens"])]
    top = sorted(top, key=lambda t: -t["weight"])[:args.top]
    out = Path(args.out) if args.out else Path(args.run_dir) / "analysis" / "token_weights.png"
    title = (f"{result['task']} {result['cell']} layer {result['layer']}: mean weight of each token "
             "in the final state")
    png = plot_token_weights(result["segments"], out, title)
    _write_sidecar(out.with_suffix(".json"), {
        "kind": "lrn.analysis.weights", "title": f"Token weights ({result['task']}, {result['cell']})",
        "figure": png.name, "run": str(args.run_dir), "text": args.text, "cell": result["cell"],
        "segments": result["segments"], "top_tokens": top, "unfolding_gap": result["unfolding_gap"],
        "gate_only_correlation": result["gate_only_correlation"]})
    for t in top:
        print(f"{t['weight']:.4f}  {t['token']}  (segment {t['segment']}, position {t['position']})")
    print(f"paper's gate-only weights (tanh ignored): relative error of sum_k w v "
          f"{result['unfolding_gap']:.3f}, correlation with the exact final-state weights "
          f"{result['gate_only_correlation']:.3f}")
    print(f"wrote {png} and {out.with_suffix('.json')}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from lrn.analysis.report import build_report

    counts = build_report(args.runs, Path(args.out), title=args.title, readme=args.readme, docs=args.doc)
    print(f"report of {counts['runs']} runs, {counts['benches']} speed reports and "
          f"{counts['analyses']} analyses: {Path(args.out) / 'report.md'}, {Path(args.out) / 'report.html'}")
    return 0


def add_cli(subparsers) -> None:
    """Register ``lrn analyze {gradients,weights}`` and ``lrn report``."""
    analyze = subparsers.add_parser("analyze", help="token weights and gradient flow (the paper's analyses)",
                                    description="See docs/report/analysis.md for what is measured.")
    sub = analyze.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)

    p = sub.add_parser("gradients", help="||dh_T/dx_t|| and ||dh_T/ds_t|| against T - t, log scale")
    p.add_argument("--cells", default=DEFAULT_CELLS,
                   help=f"cell specs measured at initialisation ('' for none; default {DEFAULT_CELLS})")
    p.add_argument("--run", action="append", default=[], metavar="RUN_DIR",
                   help="also measure this trained run's first recurrent layer (repeatable)")
    p.add_argument("--hidden", type=int, default=64, help="hidden = input size at init (default 64)")
    p.add_argument("--length", type=int, default=100, help="sequence length T (default 100)")
    p.add_argument("--sequences", type=int, default=8, help="sequences averaged over (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="analysis", help="directory for gradients.png/.json (default ./analysis)")
    p.set_defaults(func=cmd_gradients)

    p = sub.add_parser("weights", help="heatmap of each token's weight in an LRN run's final state")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a trained lrn or olrn run of a task that reads "
                                                      "raw text (doc, nli, ner)")
    p.add_argument("--text", required=True, help="the text to read (doc: raw text; ner: whitespace-"
                                                 "tokenised; nli: 'premise ||| hypothesis')")
    p.add_argument("--layer", type=int, default=0, help="recurrent layer (default 0: reads the tokens)")
    p.add_argument("--top", type=int, default=10, help="tokens to print (default 10)")
    p.add_argument("--out", help="PNG path (default RUN_DIR/analysis/token_weights.png); a .json beside it")
    p.set_defaults(func=cmd_weights)

    p = subparsers.add_parser("report", help="Markdown + self-contained HTML report of runs, "
                                             "benchmarks and analyses")
    p.add_argument("--runs", nargs="+", required=True, metavar="DIR",
                   help="directories (searched recursively) or JSON files")
    p.add_argument("--out", required=True, metavar="DIR", help="writes report.md, report.html, figures/")
    p.add_argument("--title", default="lrn-torch reproduction report")
    p.add_argument("--readme", type=Path, metavar="FILE",
                   help="also rewrite FILE's generated results block (between its marker comments)")
    p.add_argument("--doc", type=Path, action="append", default=[], metavar="FILE",
                   help="also refill FILE's generated tables, each from the benchmark JSON its marker "
                        "names (repeatable)")
    p.set_defaults(func=cmd_report)
