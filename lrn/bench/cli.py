"""``lrn bench``: the parser (light: torch is imported only when the command runs) and the command."""

from __future__ import annotations

import argparse

from lrn.bench.rows import CELLS, DEFAULT_GRID, DTYPE_NAMES, TARGET_SHAPES, Shape


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``lrn bench``."""
    from lrn import bench

    p = subparsers.add_parser("bench", help="time LRN against LSTM, GRU, ATR and SRU",
                              description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("grid", "targets"), default="grid",
                   help="grid: B in 16,32,64 x T in 128,512,1024 x H in 256,512; targets: the "
                        "project's target shapes for --device")
    p.add_argument("--shapes", help="'B,T,H;B,T,H;...' instead of the preset")
    p.add_argument("--cells", help=f"comma-separated, from {', '.join(CELLS)} (default: all installed)")
    p.add_argument("--backends", help="comma-separated LRN backends (default: all available)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dtype", default="float32", choices=DTYPE_NAMES)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per shape (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    p.add_argument("--out", help="write the report as JSON here")
    p.add_argument("--plot", help="write a PNG of time and memory vs T and vs B here")
    p.add_argument("--markdown", help="also write the markdown tables here")
    p.set_defaults(func=run_cli)


def parse_shapes(text: str) -> list[Shape]:
    """``"32,128,256;16,1024,256"`` -> [(32, 128, 256), (16, 1024, 256)] as (B, T, H)."""
    shapes = []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        parts = item.split(",")
        if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"--shapes: expected 'B,T,H' with three positive integers, got {item!r}")
        shapes.append(tuple(int(p) for p in parts))
    if not shapes:
        raise ValueError(f"--shapes: no shape in {text!r}")
    return shapes


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [s.strip() for s in text.split(",") if s.strip()]


def run_cli(args: argparse.Namespace) -> int:
    from lrn.bench.measure import BenchConfig, run_bench
    from lrn.bench.report import emit, format_markdown, plot_report
    from lrn.bench.rows import default_cells

    if args.shapes:
        shapes = parse_shapes(args.shapes)
    elif args.preset == "targets":
        shapes = TARGET_SHAPES[args.device]
    else:
        shapes = list(DEFAULT_GRID)
    config = BenchConfig(shapes=shapes, cells=_split(args.cells) or default_cells(),
                         backends=_split(args.backends), device=args.device, dtype=args.dtype,
                         repeats=args.repeats, warmup=args.warmup, memory=not args.no_memory)
    report = run_bench(config)
    emit(report, format_markdown(report), args.out, args.markdown)
    if args.plot:
        plot_report(report, args.plot)
    return 0
