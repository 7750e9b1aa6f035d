"""``lrn report``: every results.json / compare.json / bench JSON / analysis JSON under some
directories, assembled into one Markdown file and one self-contained HTML file.

Per task and dataset, one table in the paper's layout (Model | #Params | metric | Time)
with the published numbers (lrn/analysis/paper_numbers.py) in adjacent columns when the
run used the paper's dataset, and as a separate reference table when it did not; then
the speed tables and plots of ``lrn bench`` reports, the analysis figures of ``lrn
analyze``, and the machine and package versions.
"""

from __future__ import annotations

import base64
import html
import importlib
import json
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import markdown
import torch
from PIL import Image

from lrn.analysis.figures import plot_equal_step_curves, plot_time_to_quality
from lrn.analysis.gradients import decay_per_step
from lrn.analysis.paper_numbers import (
    CITATION,
    PAPER_MT_DECODE_MS,
    PAPER_ROWS,
    PaperRow,
    paper_rows,
)
from lrn.bench.machine import machine_info
from lrn.bench.report import (REAL_PROGRAMS_KIND, format_markdown, format_real_programs,
                              format_ratio_ranges, format_targets_across_runs, plot_report,
                              real_programs_summary)
from lrn.compare import (
    format_mean_std,
    format_params,
    mean_curves,
    mean_std,
    run_dir_of,
    speed_table,
    summarise,
    time_to_quality_table,
)
from lrn.demo import plot_curves as plot_demo
from lrn.demo import table as demo_table
from lrn.modules import parse_cell_spec
from lrn.tasks import get_task

#: data directory names (as in shared/data) -> the dataset names of the paper's tables
DATASETS = {"ptb": "PTB", "wikitext-2": "WT2", "conll2003": "CoNLL-2003", "snli": "SNLI",
            "squad": "SQuAD v1.1", "ag_news": "AG News", "multi30k": "Multi30k", "wmt14": "WMT14"}
TASK_TITLES = {"lm": "Language modelling", "ner": "Named entity recognition",
               "nli": "Natural language inference", "doc": "Document classification",
               "mt": "Machine translation", "rc": "Reading comprehension", "adding": "Adding problem"}
ANALYSIS_KINDS = ("lrn.analysis.gradients", "lrn.analysis.weights")
MAX_FIGURE_WIDTH = 900  # pixels; larger PNGs are scaled down for the report


@dataclass
class Run:
    results: dict[str, Any]
    path: Path  # the results.json or compare.json it came from
    dataset: str | None
    run_dir: Path | None  # where its log.json is, if anywhere


@dataclass
class Found:
    runs: list[Run]
    benches: list[tuple[Path, dict]]
    analyses: list[tuple[Path, dict]]
    compares: list[tuple[Path, dict]]  # compare.json files that carry a speed measurement
    demos: list[tuple[Path, dict]]     # results.json files of `lrn demo --out`
    programs: list[tuple[Path, dict]]  # reports of benchmarks/real_programs.py


# ------------------------------------------------------------------ discovery
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from e


def _dataset_of(results: dict, run_dir: Path | None) -> str | None:
    """The dataset a run used, from its data directory (in results.json, else in its
    checkpoint): a known dataset directory among the path's components, else the one known
    dataset directory under it, else the directory's name."""
    data_dir = results.get("data_dir")
    if data_dir is None and run_dir is not None:
        for meta in sorted(run_dir.glob("checkpoints/*/meta.json")):
            data_dir = _read_json(meta).get("data_dir")
            if data_dir:
                break
    if not data_dir:
        return None
    path = Path(data_dir)
    for part in reversed(path.parts):
        if part.lower() in DATASETS:
            return DATASETS[part.lower()]
    below = [name for name in DATASETS if (path / name).is_dir()]
    return DATASETS[below[0]] if len(below) == 1 else path.name


def _is_bench(obj: Any) -> bool:
    """A report written by ``lrn bench --out``."""
    return (isinstance(obj, dict) and {"machine", "config", "results"} <= obj.keys()
            and isinstance(obj["results"], list) and all("impls" in r for r in obj["results"]))


def _is_results(obj: Any) -> bool:
    return isinstance(obj, dict) and {"task", "cell", "params", "metrics"} <= obj.keys()


def collect(roots: list[Path]) -> Found:
    """Every report input under ``roots`` (files or directories, searched recursively).
    A run seen twice (its results.json and a compare.json listing it) counts once."""
    runs, benches, analyses, compares, demos, programs, seen = [], [], [], [], [], [], set()

    def add_run(results: dict, path: Path, run_dir: Path | None) -> None:
        key = json.dumps(results, sort_keys=True)
        if key not in seen:
            seen.add(key)
            runs.append(Run(results, path, _dataset_of(results, run_dir), run_dir))

    for root in roots:
        root = Path(root)
        if not root.exists():
            raise ValueError(f"--runs: {root} does not exist")
        files = [root] if root.is_file() else sorted(root.rglob("*.json"))
        # results.json files first, so their runs keep their own directory (for the dataset)
        for path in sorted(files, key=lambda p: p.name != "results.json"):
            if path.name.startswith(".") or "checkpoints" in path.parts:
                continue
            obj = _read_json(path)
            if isinstance(obj, dict) and obj.get("kind") == "lrn.demo":
                demos.append((path, obj))
            elif isinstance(obj, dict) and obj.get("kind") == REAL_PROGRAMS_KIND:
                programs.append((path, obj))
            elif path.name == "results.json" and _is_results(obj):
                add_run(obj, path, path.parent)
            elif path.name == "compare.json" and isinstance(obj, dict) and "runs" in obj:
                for results in obj["runs"]:
                    add_run(results, path, run_dir_of(path.parent, results["config"]["seed"], results["cell"]))
                if obj.get("speed"):
                    compares.append((path, obj))
            elif _is_bench(obj):
                benches.append((path, obj))
            elif isinstance(obj, dict) and obj.get("kind") in ANALYSIS_KINDS:
                analyses.append((path, obj))
    # A demo's own runs (under its --out directory) are shown in the demo section; the task's
    # comparison table comes from `lrn compare` runs with their seeds, not from the demo's one seed.
    demo_dirs = [path.parent for path, _ in demos]
    runs = [run for run in runs if not any(run.path.is_relative_to(d) for d in demo_dirs)]
    compares = [(path, obj) for path, obj in compares if not any(path.is_relative_to(d) for d in demo_dirs)]
    return Found(runs, benches, analyses, compares, demos, programs)


# ------------------------------------------------------------------ formatting
def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]], right_from: int = 1) -> str:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _setting(results: dict) -> str:
    _, kwargs = parse_cell_spec(results["cell"])
    return "+LN" if results["config"].get("layer_norm") or kwargs.get("layer_norm") else "Base"


def _paper_row(run: Run) -> PaperRow | None:
    """The published row of the same task, dataset, setting and cell, for a run of the
    paper's preset (plain cells only: an ablation spec such as lrn:activation=identity has
    no published row)."""
    name, kwargs = parse_cell_spec(run.results["cell"])
    if set(kwargs) - {"layer_norm"} or run.dataset is None or run.results.get("preset") != "paper":
        return None
    for row in paper_rows(run.results["task"], run.dataset):
        if row.cell == name and row.setting == _setting(run.results):
            return row
    return None


def _differing_config(runs: list[Run]) -> list[str]:
    """Config keys whose values differ between the runs of one table (seed excluded)."""
    keys = sorted({k for r in runs for k in r.results["config"]} - {"seed"})
    return [k for k in keys if len({json.dumps(r.results["config"].get(k)) for r in runs}) > 1]


def _metric_names(runs: list[Run]) -> list[str]:
    """Numeric test metrics in the order the runs report them, the task's primary first;
    for a task this installation has, only its declared metrics (NER's per-type scores
    stay in results.json)."""
    task = runs[0].results["task"]
    primary = _primary_metric(task)
    declared = get_task(task).metrics if primary else None
    names: list[str] = []
    for run in runs:
        for name, value in (run.results["metrics"].get("test") or {}).items():
            if name not in names and not isinstance(value, str) and (declared is None or name in declared):
                names.append(name)
    return sorted(names, key=lambda n: n != primary)


def _primary_metric(task: str) -> str | None:
    """The task's primary metric, or None for a task this installation does not have."""
    try:
        return get_task(task).primary_metric
    except ValueError:
        return None


#: the order of the paper's tables; cells outside it follow in the order found
CELL_ORDER = ("lstm", "gru", "atr", "sru", "lrn")


def _by_model(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs of one table grouped by model (cell and layer norm), seeds together, in the
    paper's order."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        r = run.results
        groups.setdefault(r["cell"] + (" +LN" if r["config"].get("layer_norm") else ""), []).append(run)
    rank = {name: i for i, name in enumerate(CELL_ORDER)}
    # A cell's variants ("sru:layer_norm=true", "sru +LN") follow it; the sort is stable.
    order = sorted(groups, key=lambda m: rank.get(groups[m][0].results["cell"].partition(":")[0], len(rank)))
    return {m: groups[m] for m in order}


def task_table(runs: list[Run]) -> str:
    """Model | #Params | test metrics | valid metric (each mean ± std over seeds) | seeds |
    steps | Time s/batch in training | minutes per run | settings that differ, then the
    paper's columns."""
    metrics = _metric_names(runs)
    primary = metrics[0] if metrics else None
    models = _by_model(runs)
    paper = [_paper_row(group[0]) for group in models.values()]
    paper_metrics = [m for m in metrics if any(p and m in p.metrics for p in paper)]
    differing = _differing_config(runs)
    header = (["Model", "#Params"] + [f"{m} (test)" for m in metrics]
              + ([f"{primary} (valid)"] if primary else []) + ["seeds", "steps", "Time s/batch (in training)", "minutes per run"]
              + (["settings"] if differing else []))
    if any(paper):
        header += ["paper #Params"] + [f"paper {m}" for m in paper_metrics] + ["paper Time s/batch"]
    rows = []
    for (model, group), prow in zip(models.items(), paper):
        results = [run.results for run in group]
        tests = [r["metrics"].get("test") or {} for r in results]
        valids = [r["metrics"].get("valid") or {} for r in results]
        times = [r.get("time_per_batch_s") for r in results]
        row = ([model, format_params(results[0]["params"])]
               + [format_mean_std([t.get(m) for t in tests]) for m in metrics]
               + ([format_mean_std([v.get(primary) for v in valids])] if primary else [])
               + [str(len(results)), "/".join(sorted({str(r.get("steps", "–")) for r in results})),
                  format_mean_std(times, 4), _minutes_range([r.get("wall_s") for r in results])]
               + ([", ".join(sorted({", ".join(f"{k}={r['config'].get(k)}" for k in differing if k != "seed")
                                     for r in results}))] if differing else []))
        if any(paper):
            row += ([prow.params] + [_num(prow.metrics.get(m)) for m in paper_metrics]
                    + [_num(prow.time_s, 3)] if prow else ["–"] * (2 + len(paper_metrics)))
        rows.append(row)
    return _table(header, rows)


def _minutes_range(wall_s: list[float | None]) -> str:
    """The shortest and longest run's wall time in whole minutes ("18–23"), as each ran
    (other runs beside it count): what a rerun of the grid costs, not a speed measurement."""
    minutes = sorted({round(w / 60) for w in wall_s if w is not None})
    if not minutes:
        return "–"
    low, high = ("<1" if m == 0 else str(m) for m in (minutes[0], minutes[-1]))
    return low if low == high else f"{low}–{high}"


def reference_table(rows: list[PaperRow]) -> str:
    """The published rows of a task, grouped by dataset and setting."""
    metrics = sorted({m for r in rows for m in r.metrics})
    header = ["dataset", "setting", "Model", "#Params"] + metrics + ["Time s/batch"]
    body = [[r.dataset, r.setting, r.cell, r.params] + [_num(r.metrics.get(m)) for m in metrics]
            + [_num(r.time_s, 3)] for r in rows]
    return _table(header, body, right_from=3)


# ------------------------------------------------------------------ figures
def _save_small_png(source: Path, target: Path) -> Path:
    """Copy a PNG scaled down to at most MAX_FIGURE_WIDTH pixels wide and quantised to 128
    colours (plots use few), which keeps the committed report small."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        image = image.convert("RGB")
        if image.width > MAX_FIGURE_WIDTH:
            height = round(image.height * MAX_FIGURE_WIDTH / image.width)
            image = image.resize((MAX_FIGURE_WIDTH, height), Image.LANCZOS)
        image.quantize(colors=128).save(target, optimize=True)
    return target


def _run_logs(runs: list[Run]) -> dict[Path, dict]:
    """log.json of every run that kept one (the committed results do), by run directory:
    read once per table, for both of its plots."""
    return {r.run_dir: _read_json(r.run_dir / "log.json") for r in runs
            if r.run_dir is not None and (r.run_dir / "log.json").is_file()}


def _mean_curves_of(runs: list[Run], logs: dict[Path, dict]) -> dict[str, dict[str, list]] | None:
    """lrn.compare.mean_curves of the runs that have a log (None when none has)."""
    logged = [r for r in runs if r.run_dir in logs]
    if not logged:
        return None
    summary = summarise(logged[0].results["task"], [r.results for r in logged])
    return mean_curves(summary, {(r.results["config"]["seed"], r.results["cell"]): logs[r.run_dir] for r in logged})


def _equal_step_curves(runs: list[Run], logs: dict[Path, dict], path: Path, title: str) -> Path | None:
    """Training loss and validation metric against step, mean over seeds, one line per model."""
    curves = _mean_curves_of(runs, logs)
    if curves is None:
        return None
    return plot_equal_step_curves(curves, path, title, metric=_primary_metric(runs[0].results["task"]))


# ------------------------------------------------------------------ assembly
def _group_runs(runs: list[Run]) -> dict[tuple, list[Run]]:
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        r = run.results
        groups[(r["task"], run.dataset or "-", r.get("preset", "-"), r.get("device", "-"))].append(run)
    return dict(sorted(groups.items()))


def _slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", "-".join(parts)).strip("-").lower()


def _task_section(key: tuple, runs: list[Run], compares: list[tuple[Path, dict]], figures: Path) -> list[str]:
    task, dataset, preset, device = key
    data = "" if dataset == "-" else f": {dataset}"
    out = [f"### {TASK_TITLES.get(task, task)}{data}, preset {preset}, {device}", ""]
    out.append(task_table(runs))
    # Text-valued test fields (a BLEU signature) are the same for every run: shown once.
    notes = {k: v for r in runs for k, v in (r.results["metrics"].get("test") or {}).items()
             if isinstance(v, str)}
    if notes:
        out += [", ".join(f"{k}: `{v}`" for k, v in sorted(notes.items())), ""]
    published = paper_rows(task)
    matched = any(_paper_row(r) for r in runs)
    if published and preset != "paper":
        out.append("The paper's numbers come from its full-size models and budgets (`--preset paper`): they "
                   "are not set beside this preset's, and are listed under Published numbers at the end.")
    elif matched:
        out.append("Paper columns: the published result of the same cell, dataset and setting; "
                   "the paper's times are seconds per training batch on the authors' GPU with "
                   "their batch sizes, so compare times between cells, not with ours.")
    elif published:
        names = ", ".join(sorted({r.dataset for r in published}))
        out += [f"The paper reports this task on {names}, not on {dataset}: its numbers are listed "
                "for reference only, not as a comparison.", "", reference_table(published)]
    if task == "mt" and published:
        out += ["", "Paper decoding time (ms per sentence, newstest2014): "
                + ", ".join(f"{c} {v:.2f}" for c, v in PAPER_MT_DECODE_MS.items()) + "."]
    out += _anchor_lines(task, dataset, preset)
    logs = _run_logs(runs)
    png = _equal_step_curves(runs, logs, figures / f"curves-{_slug(task, dataset, preset, device)}.png",
                             f"{task} {dataset} ({preset}), mean over seeds")
    if png is not None:
        out += ["", f"![training and validation curves at equal steps]({png.parent.name}/{png.name})"]
    for path, summary in compares:
        slug = _slug(task, dataset, preset, device, path.parent.name)
        out += ["", f"Speed, measured apart by `lrn compare` (`{path.parent.name}`): a training step of each "
                "cell's task model, interleaved in one process:", "", speed_table(summary)]
        if summary.get("time_to_quality"):
            out += ["Time to quality: validation steps to reach the reference's final metric x the measured "
                    "time per step:", "", time_to_quality_table(summary)]
            png = _time_to_quality_plot(runs, logs, path, summary, figures / f"ttq-{slug}.png",
                                        f"{task} {dataset} ({preset}), mean over seeds")
            if png is not None:
                out += ["", f"![time to quality]({png.parent.name}/{png.name})"]
    return out + [""]


def _compares_of(runs: list[Run], found: Found) -> list[tuple[Path, dict]]:
    """The compare.json files (with a speed measurement) that hold any of ``runs``."""
    return [(path, summary) for path, summary in found.compares
            if any(r.run_dir is not None and path.parent in r.run_dir.parents for r in runs)]


def _time_to_quality_plot(runs: list[Run], logs: dict[Path, dict], path: Path, summary: dict, target: Path,
                          title: str) -> Path | None:
    """The validation metric against estimated training time, redrawn from the logs of the
    comparison's runs (those below ``path``'s directory) and its measured time per step."""
    per_cell = summary["speed"]["per_cell"]
    mine = [r for r in runs if r.run_dir is not None and path.parent in r.run_dir.parents
            and r.results["cell"] in per_cell]
    curves = _mean_curves_of(mine, logs)
    if curves is None:
        return None
    seconds = {cell: per_cell[cell]["median_s"] for cell in curves}
    return plot_time_to_quality(curves, seconds, summary["time_to_quality"], target, title)


def _anchor_lines(task: str, dataset: str, preset: str) -> list[str]:
    """The published numbers an anchor preset's baseline is to reach."""
    if preset != "anchor":
        return []
    published = getattr(importlib.import_module(f"lrn.tasks.{task}"), "ANCHOR_PUBLISHED", {})
    entry = next((v for k, v in published.items() if DATASETS.get(k) == dataset), None)
    if entry is None:
        return []
    numbers = ", ".join(f"{k} {v}" for k, v in entry.items() if k != "source")
    return ["", f"Anchor: the published baseline this preset reproduces ({entry['source']}): {numbers}. "
            "Our LSTM row is that configuration; the other cells run it unchanged."]


def _bench_section(index: int, path: Path, bench: dict, figures: Path) -> list[str]:
    config = bench["config"]
    out = [f"### Speed: {config['device']} {config['dtype']} ({path.name})", "", format_markdown(bench)]
    raw = figures / f".bench-{index}-full.png"
    figures.mkdir(parents=True, exist_ok=True)
    plot_report(bench, raw)
    png = _save_small_png(raw, figures / f"bench-{index}.png")
    raw.unlink()
    return out + [f"![speed and memory]({figures.name}/{png.name})", ""]


def _analysis_section(name: str, path: Path, obj: dict, figures: Path) -> list[str]:
    source = path.parent / obj["figure"]
    out = [f"### {obj.get('title', obj['kind'])}", ""]
    if obj["kind"] == "lrn.analysis.gradients":
        for group in obj["groups"]:
            available = group["flows"][0]["distances"]
            # the measured distances nearest to 1, 10, 30, 100 (they are log-spaced)
            marks = sorted({min(available, key=lambda d: abs(math.log(d / want)))
                            for want in (1, 10, 30, 100) if want <= 1.5 * max(available)})
            header = (["cell"] + [f"‖∂h_T/∂x_t‖ at T−t={d}" for d in marks]
                      + ["factor per step, ∂h_T/∂x_t", "factor per step, ∂h_T/∂s_t"])
            rows = [[f["label"]] + [f"{f['input_norms'][f['distances'].index(d)]:.2e}" for d in marks]
                    + [_num(decay_per_step(f["distances"], f[key]), 3)
                       for key in ("input_norms", "state_norms")]
                    for f in group["flows"]]
            out += [f"{group['title']}:", "", _table(header, rows)]
    else:
        out += [f"Run `{obj['run']}` ({obj['cell']}), text: “{obj['text']}”", "",
                "Top tokens of the final state: "
                + ", ".join(f"{t['token']} ({t['weight']:.3f})" for t in obj["top_tokens"]) + "."]
        out += ["", "The paper's gate-only weights (tanh ignored) on this text: relative error of "
                f"sum_k w v {obj['unfolding_gap']:.3f}, correlation with the exact final-state "
                f"weights {obj['gate_only_correlation']:.3f} (the plotted, folded weights are exact)."]
    if source.is_file():
        png = _save_small_png(source, figures / f"{name}.png")
        out += ["", f"![{obj['kind']}]({figures.name}/{png.name})"]
    return out + [""]


def _machine_section(found: Found) -> list[str]:
    here = machine_info(torch.device("cpu"))
    out = ["## Machine and versions", "",
           f"Report assembled on: {here['cpu_model']}, {here['usable_cpus']} usable CPUs, "
           f"torch {here['versions'].get('torch')}, numba {here['versions'].get('numba')}, "
           f"python {here['python']}, {here['date_utc']}.", ""]
    devices = sorted({r.results.get("device", "?") for r in found.runs})
    if devices:
        out += [f"Training runs ran on: {', '.join(devices)}.", ""]
    for path, bench in found.benches:
        m = bench["machine"]
        out.append(f"- `{path.name}`: {m.get('gpu') or m.get('cpu_model')}, {m.get('usable_cpus')} CPUs, "
                   f"{m.get('torch_threads')} threads, load {m.get('load_average')}, "
                   + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v)
                   + f", {m.get('date_utc')}")
    return out + [""]


def build_report(roots: list[Path], out_dir: Path, *, title: str = "lrn-torch reproduction report",
                 readme: Path | None = None, docs: list[Path] = ()) -> dict:
    """Write ``out_dir/report.md`` and ``out_dir/report.html`` (+ ``out_dir/figures/``), with
    ``readme`` that file's generated blocks and with ``docs`` their generated tables; returns
    what went in (counts)."""
    for option, path in [("--readme", readme)] + [("--doc", doc) for doc in docs]:
        if path is not None and not Path(path).is_file():
            raise ValueError(f"{option} {path}: no such file")
    found = collect([Path(r) for r in roots])
    if not (found.runs or found.benches or found.analyses or found.demos or found.programs):
        raise ValueError(f"--runs: no results.json, compare.json, bench or analysis JSON under "
                         f"{', '.join(map(str, roots))}")
    out_dir = Path(out_dir)
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for stale in figures.glob("*.png"):  # figures of an earlier report in the same place
        stale.unlink()
    now = datetime.now(timezone.utc).isoformat(timespec="minutes")
    lines = [f"# {title}", "",
             f"Assembled by `lrn report` on {now} from {len(found.runs)} runs, "
             f"{len(found.benches)} speed reports and {len(found.analyses)} analyses.", "",
             f"Published numbers: {CITATION}.", ""]
    if found.runs:
        lines += ["## Results per task", "",
                  "Ours: test metrics of each run's best validation checkpoint, mean ± standard deviation "
                  "over the seeds; every run of a table trains for the same steps. Time s/batch (in "
                  "training) is the median step time during the runs themselves, which shared the machine "
                  "with other work; the speed tables below are measured apart.", ""]
        lines += ["In short:", ""] + headline_lines(found) + [""]
        for key, runs in _group_runs(found.runs).items():
            lines += _task_section(key, runs, _compares_of(runs, found), figures)
        shown = sorted({key[0] for key in _group_runs(found.runs) if key[2] != "paper"} & {r.task for r in PAPER_ROWS})
        if shown:
            lines += ["## Published numbers", "", f"{CITATION}: the paper's full-size models and budgets.", ""]
            for task in shown:
                lines += [f"{TASK_TITLES.get(task, task)}:", "", reference_table(paper_rows(task)), ""]
    for i, (path, demo) in enumerate(found.demos):
        lines += ["## The demo", "", f"`lrn demo` (from `{path}`):", demo_table(demo).strip(), "",
                  f"![lrn demo](figures/{_demo_figure(i, demo, figures).name})", ""]
    if found.benches:
        lines += ["## Speed", ""]
        for i, (path, bench) in enumerate(found.benches):
            lines += _bench_section(i, path, bench, figures)
    for path, programs in found.programs:
        lines += ["## Speed in realistic programs", "", f"From `{path}`. " + real_programs_summary(programs), "",
                  format_real_programs(programs)]
    if found.analyses:
        lines += ["## Analyses", ""]
        seen: dict[str, int] = defaultdict(int)
        for path, obj in found.analyses:
            kind = obj["kind"].rsplit(".", 1)[-1]  # figure names stay put when other inputs change
            lines += _analysis_section(f"analysis-{kind}-{seen[kind]}", path, obj, figures)
            seen[kind] += 1
    lines += _machine_section(found)
    text = "\n".join(lines)
    (out_dir / "report.md").write_text(text, encoding="utf-8")
    (out_dir / "report.html").write_text(to_html(text, out_dir, title), encoding="utf-8")
    if readme is not None:
        update_readme(Path(readme), found, figures)
    for doc in docs:
        update_doc(Path(doc))
    return {"runs": len(found.runs), "benches": len(found.benches), "analyses": len(found.analyses)}


README_BEGIN = "<!-- results: generated by `lrn report --readme`; do not edit by hand -->"
README_END = "<!-- end of generated results -->"
#: the reference cell of each task's headline (the paper compares LRN with these)
REFERENCE_CELL = "lstm"


def _verdict(a: list[float], b: list[float], higher_is_better: bool) -> str:
    """LRN (``a``) against the reference (``b``): with 3+ seeds each, a tie when the means
    are within the sum of the two standard deviations; with fewer, no claim."""
    if min(len(a), len(b)) < 3:
        return f"{min(len(a), len(b))} seed(s): no tie or difference claimed"
    sa, sb = mean_std(a), mean_std(b)
    if abs(sa["mean"] - sb["mean"]) <= sa["std"] + sb["std"]:
        return "a tie (the means lie within the sum of the two standard deviations)"
    better = (sa["mean"] > sb["mean"]) == higher_is_better
    return "LRN better" if better else "LRN worse"


def headline_lines(found: Found) -> list[str]:
    """One line per table that has both LRN and the reference cell: their primary test
    metric (mean ± std over seeds), the verdict, the other cells, and the speed ratio when
    it was measured apart."""
    lines = []
    for (task, dataset, preset, _device), runs in _group_runs(found.runs).items():
        primary = _primary_metric(task)
        models = _by_model(runs)
        if primary is None or "lrn" not in models or REFERENCE_CELL not in models:
            continue
        values = {m: [r.results["metrics"]["test"][primary] for r in group] for m, group in models.items()}
        steps = "/".join(sorted({str(r.results["steps"]) for r in runs}))
        most = max(len(v) for v in values.values())

        def cell_text(model: str, v: list[float]) -> str:  # a cell with fewer seeds says so
            fewer = f" ({len(v)} seed{'s' if len(v) > 1 else ''})" if len(v) < most else ""
            return f"{model} {format_mean_std(v)}{fewer}"

        cells = ", ".join(cell_text(m, v) for m, v in values.items())
        verdict = _verdict(values["lrn"], values[REFERENCE_CELL], get_task(task).higher_is_better)
        line = (f"- {TASK_TITLES.get(task, task)}, {dataset}, preset {preset}, {steps} steps: test {primary} "
                f"{cells}. LRN vs {REFERENCE_CELL.upper()}: {verdict}.")
        for _path, summary in _compares_of(runs, found):
            per_cell = summary["speed"]["per_cell"]
            if "lrn" in per_cell and REFERENCE_CELL in per_cell:
                ratio = per_cell["lrn"]["median_s"] / per_cell[REFERENCE_CELL]["median_s"]
                line += f" Training step, measured apart: LRN {ratio:.2f}x {REFERENCE_CELL.upper()}'s time."
        lines.append(line)
    return lines


def update_readme(readme: Path, found: Found, figures: Path) -> None:
    """Replace the README's generated results block (between README_BEGIN and README_END) and,
    when it has one and a demo was found, its demo block."""
    text = readme.read_text(encoding="utf-8")
    text = replace_generated_block(readme, text, README_BEGIN, README_END,
                          headline_lines(found) or ["- (no table has both LRN and LSTM yet)"])
    if found.programs and README_SPEED_BEGIN in text:
        path, programs = found.programs[0]
        text = replace_generated_block(readme, text, README_SPEED_BEGIN, README_SPEED_END,
                                       [real_programs_summary(programs) + f" Table: `{path}`."])
    if found.demos and README_DEMO_BEGIN in text:
        path, demo = found.demos[0]
        figure = os.path.relpath(_demo_figure(0, demo, figures), readme.parent)
        block = [f"Output of `lrn demo --out results/demo` (`{path}`, {demo['machine']['cpu_model']}, "
                 f"load average {demo['machine']['load_average'][0]:.1f}):", demo_table(demo).rstrip(), "",
                 f"![lrn demo: validation MSE against step and against measured time]({figure})"]
        text = replace_generated_block(readme, text, README_DEMO_BEGIN, README_DEMO_END, block)
    readme.write_text(text, encoding="utf-8")


README_SPEED_BEGIN = "<!-- speed: generated by `lrn report --readme`; do not edit by hand -->"
README_SPEED_END = "<!-- end of generated speed -->"
README_DEMO_BEGIN = "<!-- demo: generated by `lrn report --readme`; do not edit by hand -->"
README_DEMO_END = "<!-- end of generated demo -->"


def replace_generated_block(readme: Path, text: str, begin: str, end: str, block: list[str]) -> str:
    """``text`` (of the file ``readme``) with the lines between its ``begin`` and ``end`` marker
    lines replaced by ``block``."""
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError(f"{readme}: needs exactly one '{begin}' line and one '{end}' line")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return head + begin + "\n" + "\n".join(block) + "\n" + end + tail


DOC_TABLE = re.compile(r"^<!-- (?P<kind>table|ratios) of (?P<sources>[^:]+): generated by `lrn report --doc`; "
                       r"do not edit by hand -->\n(?:.*?\n)?<!-- end of generated (?P=kind) -->$",
                       re.MULTILINE | re.DOTALL)


def _bench_measured_line(report: dict) -> str:
    """When, where and with what a benchmark ran, from its machine record."""
    m, config = report["machine"], report["config"]
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v and k in ("torch", "numba"))
    return (f"Measured {m['date_utc'][:16].replace('T', ' ')} UTC on {m.get('gpu') or m.get('cpu_model')} "
            f"({m.get('usable_cpus')} usable CPUs, {m.get('torch_threads')} torch threads), {versions}, "
            f"{config['dtype']}, load average {m['load_average'][0]:.1f} at the start; "
            f"median of {config['repeats']} interleaved rounds after {config['warmup']} warm-up rounds.")


def update_doc(doc: Path) -> None:
    """Refill each generated block of ``doc`` (between a ``<!-- table of SOURCE ...: ... -->``
    line and ``<!-- end of generated table -->``, or the same with ``ratios``) from the JSON
    files its marker names, paths relative to where `lrn report` runs (as in its command): one
    `lrn bench` or real-programs report gives its tables, several `lrn bench` reports their
    targets side by side; ``ratios`` of one `lrn bench` report give LRN's range over its shapes."""
    text = doc.read_text(encoding="utf-8")

    def table(match: re.Match) -> str:
        line = text.count("\n", 0, match.start()) + 1
        reports = []
        for source in map(Path, match["sources"].split()):
            if not source.is_file():
                raise ValueError(f"{doc}:{line}: the generated table's source {source} does not exist")
            reports.append((source, _read_json(source)))
        if match["kind"] == "ratios":
            if len(reports) != 1 or not _is_bench(reports[0][1]):
                raise ValueError(f"{doc}:{line}: ratios are drawn from one `lrn bench` report")
            try:
                body = format_ratio_ranges(reports[0][1])
            except ValueError as error:
                raise ValueError(f"{doc}:{line}: {reports[0][0]}: {error}") from None
        elif len(reports) > 1:
            if not all(_is_bench(report) for _, report in reports):
                raise ValueError(f"{doc}:{line}: a table of several sources needs `lrn bench` reports only")
            body = format_targets_across_runs([(source.name, report) for source, report in reports])
        elif _is_bench(reports[0][1]):
            body = _bench_measured_line(reports[0][1]) + "\n\n" + format_markdown(reports[0][1])
        elif isinstance(reports[0][1], dict) and reports[0][1].get("kind") == REAL_PROGRAMS_KIND:
            body = format_real_programs(reports[0][1])
        else:
            raise ValueError(f"{doc}:{line}: {reports[0][0]} is neither an `lrn bench` report nor a "
                             "real-programs report")
        begin, _, _ = match.group(0).partition("\n")
        return f"{begin}\n{body.rstrip()}\n<!-- end of generated {match['kind']} -->"

    filled, count = DOC_TABLE.subn(table, text)
    if count == 0:
        raise ValueError(f"--doc {doc}: has no '<!-- table of SOURCE: generated by `lrn report --doc`; "
                         "do not edit by hand -->' ... '<!-- end of generated table -->' block")
    doc.write_text(filled, encoding="utf-8")


def _demo_figure(index: int, demo: dict, figures: Path) -> Path:
    path = figures / f"demo-{index}.png"
    if not path.is_file():
        plot_demo(demo, path)
    return path


_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)")
_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
          "color:#222}table{border-collapse:collapse;margin:.5em 0;font-size:13px}"
          "th,td{border:1px solid #ccc;padding:2px 6px}th{background:#f3f3f3}img{max-width:100%}")


def to_html(text: str, base: Path, title: str) -> str:
    """The Markdown report as one HTML file: images embedded as base64 data URIs."""
    def embed(match: re.Match) -> str:
        data = base64.b64encode((base / match.group(2)).read_bytes()).decode("ascii")
        return f"![{match.group(1)}](data:image/png;base64,{data})"

    body = markdown.markdown(_IMAGE.sub(embed, text), extensions=["tables"])
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n")
