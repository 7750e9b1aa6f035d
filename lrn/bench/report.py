"""A benchmark report as markdown tables and as a PNG of time and memory against T and B."""

from __future__ import annotations

import json
import math
from pathlib import Path

from lrn.bench.rows import Row, rows_of


def emit(report: dict, table: str, out: str | Path | None, markdown: str | Path | None) -> None:
    """Print a benchmark's table, and write its JSON report and markdown where asked."""
    print(table)
    if out:
        Path(out).write_text(json.dumps(report, indent=1) + "\n")
    if markdown:
        Path(markdown).write_text(table)


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def format_markdown(report: dict) -> str:
    """The report as markdown tables (what docs/performance.md shows)."""
    rows = rows_of(report)
    lines = ["| B | T | H | impl | fwd ms median [min] | train ms median [min] | fwd / LSTM "
             "| train / LSTM | train / GRU | fwd peak MB | train peak MB |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        for name, impl in r.impls.items():
            fwd, train = impl.timing["forward"], impl.timing["train"]
            lines.append(
                f"| {r.B} | {r.T} | {r.H} | {name} | {fwd.median_ms:.1f} [{fwd.min_ms:.1f}] | "
                f"{train.median_ms:.1f} [{train.min_ms:.1f}] | {_num(fwd.ratio.get('lstm'))} | "
                f"{_num(train.ratio.get('lstm'))} | {_num(train.ratio.get('gru'))} | "
                f"{_num(fwd.peak_mb, 1)} | {_num(train.peak_mb, 1)} |")
        for name, message in r.errors.items():
            lines.append(f"| {r.B} | {r.T} | {r.H} | {name} | failed: {message[:80]} |" + " |" * 6)
    lines += ["", "| B | T | H | impl | matmul fwd / train ms | recurrence fwd / train ms "
              "| recurrence GB/s fwd / train | copy GB/s | % of copy fwd / train "
              "| matmul share fwd / train | layer / matmul fwd / train |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        for name, impl in r.impls.items():
            if impl.recurrence is None or r.matmul is None:
                continue
            rec, m, copy = impl.recurrence, r.matmul, r.copy_gbps or math.nan
            share, over = impl.matmul_share, impl.layer_over_matmul
            lines.append(
                f"| {r.B} | {r.T} | {r.H} | {name} | {m['forward'].median_ms:.1f} / {m['train'].median_ms:.1f} | "
                f"{rec['forward'].median_ms:.1f} / {rec['train'].median_ms:.1f} | "
                f"{rec['forward'].gbps:.1f} / {rec['train'].gbps:.1f} | {copy:.1f} | "
                f"{100 * rec['forward'].gbps / copy:.0f} / {100 * rec['train'].gbps / copy:.0f} | "
                f"{share['forward']:.2f} / {share['train']:.2f} | {over['forward']:.2f} / {over['train']:.2f} |")
    if report["targets"]:
        lines += ["", "| B | T | H | impl | target | value | limit | met |", "|---|---|---|---|---|---:|---:|---|"]
        for t in report["targets"]:
            lines.append(f"| {t['B']} | {t['T']} | {t['H']} | {t['impl']} | {t['what']} | "
                         f"{t['value']:.3f} | {t['op']} {t['limit']:.2f} | {'yes' if t['met'] else 'NO'} |")
    if report["config"]["device"] == "cpu":
        lines += ["", f"CPU allocator: {report.get('cpu_allocator', 'not recorded')}."]
    return "\n".join(lines) + "\n"


def format_targets_across_runs(reports: list[tuple[str, dict]]) -> str:
    """Each target of several runs of the same benchmark, one column per run (named by its
    file and UTC time), and in how many runs it was met: the run-to-run spread of a verdict."""
    def key(t: dict) -> tuple:
        return t["B"], t["T"], t["H"], t["impl"], t["what"], t["op"], t["limit"]

    values = [{key(t): t for t in report["targets"]} for _, report in reports]
    keys = list(dict.fromkeys(k for v in values for k in v))
    lines = ["| B | T | H | impl | target | limit | " + " | ".join(f"{name} ({report['machine']['date_utc'][:16].replace('T', ' ')})"
                                                             for name, report in reports) + " | met |",
             "|---|---|---|---|---|---:|" + "---:|" * len(reports) + "---:|"]
    for k in keys:
        found = [v.get(k) for v in values]
        cells = [("–" if t is None else f"{t['value']:.3f}" + ("" if t["met"] else " NO")) for t in found]
        measured = [t for t in found if t is not None]
        met = sum(t["met"] for t in measured)
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {k[4]} | {k[5]} {k[6]:.2f} | "
                     + " | ".join(cells) + f" | {met} of {len(measured)} |")
    return "\n".join(lines) + "\n"


def format_ratio_ranges(report: dict) -> str:
    """For each fused LRN backend of a report, the range over its shapes of its time and
    training peak memory relative to nn.LSTM and nn.GRU (what a grid shows in one line)."""
    rows = rows_of(report)
    names = [name for name in dict.fromkeys(n for r in rows for n in r.impls)
             if name.startswith("lrn[") and name != "lrn[reference]"]

    def span(values: list[float]) -> str:
        low, high = f"{min(values):.2f}", f"{max(values):.2f}"
        return low if low == high else f"{low}-{high}"

    lines = []
    for name in names:
        measured = [r for r in rows if name in r.impls and {"lstm", "gru"} <= r.impls.keys()]
        if not measured:
            continue
        train = {b: [r.impls[name].timing["train"].ratio[b] for r in measured] for b in ("lstm", "gru")}
        forward = [r.impls[name].timing["forward"].ratio["lstm"] for r in measured]
        line = (f"Over the {len(measured)} shapes, {name}'s training step takes {span(train['lstm'])}x "
                f"nn.LSTM's time and {span(train['gru'])}x nn.GRU's, its forward {span(forward)}x nn.LSTM's")
        peaks = [r for r in measured if all(i.timing["train"].peak_mb for i in r.impls.values())]
        if peaks:
            memory = {b: [r.impls[name].timing["train"].peak_mb / r.impls[b].timing["train"].peak_mb
                          for r in peaks] for b in ("lstm", "gru")}
            least = sum(min(r.impls, key=lambda n: r.impls[n].timing["train"].peak_mb) == name for r in peaks)
            line += (f"; its training peak memory is {span(memory['lstm'])}x nn.LSTM's and "
                     f"{span(memory['gru'])}x nn.GRU's, the least of all implementations at {least} of "
                     f"{len(peaks)} shapes")
        lines.append(line + ".")
    if not lines:
        raise ValueError("no fused LRN backend measured beside nn.LSTM and nn.GRU in this report")
    return "\n".join(lines) + "\n"


def _sweep(rows: list[Row], axis: str) -> tuple[list[Row], str]:
    """The longest run of shapes that differ only in ``axis`` ("T" or "B"), sorted along it,
    and a label naming the two fixed dimensions.  Among equally long runs, the one with the
    largest fixed dimensions: its timings are the least sensitive to noise."""
    fixed = [d for d in ("B", "T", "H") if d != axis]
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault(tuple(getattr(r, d) for d in fixed), []).append(r)
    key, members = max(groups.items(), key=lambda kv: (len({getattr(r, axis) for r in kv[1]}), kv[0]))
    return sorted(members, key=lambda r: getattr(r, axis)), ", ".join(f"{d}={v}" for d, v in zip(fixed, key))


#: the plot's rows: (mode, what is drawn, axis label)
_PANELS = (("train", "time", "forward+backward (ms)"), ("forward", "time", "forward, no_grad (ms)"),
           ("train", "memory", "training peak memory (MB)"))


def plot_report(report: dict, path: str | Path) -> None:
    """PNG: training time, forward time and training memory against T and against B; time
    lines are medians, shaded down to the minima."""
    from matplotlib.figure import Figure  # Agg canvas: no display needed

    fig = Figure(figsize=(12, 13), layout="constrained")
    axes = fig.subplots(len(_PANELS), 2, squeeze=False)
    config = report["config"]
    fig.suptitle(f"lrn bench: {config['device']} {config['dtype']}, one layer, input size = H "
                 f"({report['machine']['cpu_model'] if config['device'] == 'cpu' else report['machine']['gpu']})")
    rows = rows_of(report)
    for col, axis in enumerate(("T", "B")):
        members, fixed = _sweep(rows, axis)
        for row, (mode, what, label) in enumerate(_PANELS):
            ax = axes[row][col]
            for name in config["impls"]:
                timings = [(getattr(r, axis), r.impls[name].timing[mode]) for r in members if name in r.impls]
                if what == "memory":
                    timings = [(x, t) for x, t in timings if t.peak_mb is not None]
                if not timings:
                    continue
                xs = [x for x, _ in timings]
                ys = [t.peak_mb if what == "memory" else t.median_ms for _, t in timings]
                line, = ax.plot(xs, ys, marker="o", label=name)
                if what == "time":  # shade down to the minimum: how noisy the median was
                    ax.fill_between(xs, [t.min_ms for _, t in timings], ys, color=line.get_color(), alpha=0.2,
                                    linewidth=0)
            ax.set_xlabel(f"{axis} ({fixed})")
            ax.set_ylabel(label)
            ax.set_xlim(left=0)
            ax.set_ylim(bottom=0)  # from 0, so linear growth shows as a straight line
            ax.grid(alpha=0.3)
            if len({getattr(r, axis) for r in members}) < 2:
                ax.set_title(f"only one value of {axis} in this grid", fontsize=9)
        axes[0][col].legend(fontsize=8)
    fig.savefig(path, dpi=110)


REAL_PROGRAMS_KIND = "lrn.bench.real_programs"


def format_real_programs(report: dict) -> str:
    """benchmarks/real_programs.py's report as a markdown table (time per step, ms)."""
    m = report["machine"]
    load = m.get("load_average")
    lines = [f"{m['cpu_model']}, {m['usable_cpus']} CPUs, load average {load[0]:.2f} at the start; busy = "
             f"{report['hogs']} CPU-bound processes beside the program; medians of {report['rounds']} interleaved "
             "samples; time per step in ms.", "",
             "| program | torch threads | gru idle | lrn idle | lrn / gru idle | gru busy | lrn busy | lrn / gru busy |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        i, b = r["idle_s"], r["busy_s"]
        lines.append(f"| {r['program']} | {r['threads']} | {1e3 * i['gru']:.2f} | {1e3 * i['lrn']:.2f} | "
                     f"{r['lrn_over_gru_idle']:.2f} | {1e3 * b['gru']:.2f} | {1e3 * b['lrn']:.2f} | "
                     f"{r['lrn_over_gru_busy']:.2f} |")
    return "\n".join(lines) + "\n"


def real_programs_summary(report: dict) -> str:
    """One sentence: the range of LRN's time per step over nn.GRU's, idle and busy."""
    idle = [r["lrn_over_gru_idle"] for r in report["rows"]]
    busy = [r["lrn_over_gru_busy"] for r in report["rows"]]
    programs = len({r["program"] for r in report["rows"]})
    threads = "/".join(sorted({str(r["threads"]) for r in report["rows"]}))
    return (f"In {programs} realistic workloads with nn.GRU / nn.GRUCell swapped for LRN (benchmarks/real_programs.py: "
            f"a seq2seq training step and its greedy decoding, a packed bidirectional classifier, a slot-attention "
            f"refinement; {threads} torch threads, {report['machine']['cpu_model']}), LRN's time per step was "
            f"{min(idle):.2f}-{max(idle):.2f}x nn.GRU's on the idle machine and {min(busy):.2f}-{max(busy):.2f}x "
            f"beside {report['hogs']} CPU-bound processes.")

