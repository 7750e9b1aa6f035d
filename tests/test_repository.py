"""Promises the repository makes about itself."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"```bash\n(.+?)\n```", readme, re.S)
    test_command = next(c for c in commands if "pytest" in c)
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == test_command
    assert "torch==2.13.0" in test_command and "--durations=15" in test_command


def test_the_committed_results_figures_are_what_lrn_report_generates(tmp_path, monkeypatch):
    """README.md's generated blocks, docs/performance.md's generated tables and
    docs/results/report.md's tables are rebuilt from the committed results files: a number typed in by hand, or a results file changed without
    rerunning `lrn report`, fails here."""
    import difflib
    import shutil

    from lrn.analysis.report import build_report

    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copy(ROOT / "docs" / "performance.md", tmp_path / "performance.md")
    monkeypatch.chdir(ROOT)  # the report names its sources as given: the paths of docs/results.md's command
    sources = [Path("results")] + [Path("benchmarks") / name for name in
                                   ("cpu_targets.json", "cpu_grid.json", "cpu_real_programs.json")]
    build_report(sources, tmp_path / "docs" / "results", readme=tmp_path / "README.md",
                 docs=[tmp_path / "performance.md"])
    for built, committed in ((tmp_path / "README.md", ROOT / "README.md"),
                             (tmp_path / "performance.md", ROOT / "docs" / "performance.md")):
        assert built.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8"), committed

    def tables(path):  # the stamped lines (date, load, this machine) differ from run to run
        stamped = ("Assembled by", "Report assembled on")
        return [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith(stamped)]
    built, committed = tables(tmp_path / "docs" / "results" / "report.md"), tables(ROOT / "docs" / "results" / "report.md")
    assert built == committed, "\n".join(difflib.unified_diff(committed, built, "committed", "built", lineterm="", n=0))
