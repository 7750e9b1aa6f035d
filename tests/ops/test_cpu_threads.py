"""The CPU kernels inside other people's programs: torch's thread setting, fork() and
DataLoader workers (run in subprocesses, so that a hang or an abort cannot take pytest down)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

from lrn.ops import cpu
from lrn.ops.reference import lrn_scan_reference


def test_kernels_follow_torch_set_num_threads(monkeypatch):
    called = []
    spied = {flags: (lambda *a, _k=kernel, _f=flags: (called.append(_f[2]), _k(*a))[1])
             for flags, kernel in cpu._FORWARD.items()}
    monkeypatch.setattr(cpu, "_FORWARD", spied)
    monkeypatch.setattr(cpu, "_PARALLEL_MIN_ELEMENTS", 0)  # tiny work would run serially anyway
    gates = torch.randn(6, 4, 3 * 16)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert cpu.thread_count() == 1
        out, _ = cpu.scan_forward(gates, None, None, 1, False, True, False)
        assert called == [False]  # the serial kernel: numba's pool is not touched
        if cpu.numba.config.NUMBA_NUM_THREADS > 1:
            torch.set_num_threads(2)
            cpu.scan_forward(gates, None, None, 1, False, True, False)
            assert called == [False, True]
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(out, lrn_scan_reference(gates)[0])


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


# The parent first runs LRN on a size that uses numba's thread pool, as a training script would.
PARENT = """
    import os, torch, lrn
    from lrn.ops import cpu
    cpu._PARALLEL_MIN_ELEMENTS = 0
    model = lrn.LRN(32, 64)
    x = torch.randn(40, 8, 32)
    model(x)[0].sum().backward()
"""


def test_a_forked_child_runs_lrn_and_exits_0():
    done = _run(PARENT + """
    pid = os.fork()
    if pid == 0:
        torch.set_num_threads(1)  # torch's own OpenMP pool does not survive fork either
        out = model(x)[0]
        out.sum().backward()
        os._exit(0 if torch.isfinite(out).all() else 3)
    _, status = os.waitpid(pid, 0)
    raise SystemExit(os.waitstatus_to_exitcode(status))
    """)
    assert done.returncode == 0, done.stderr[-2000:]


def test_dataloader_fork_workers_run_lrn():
    done = _run(PARENT + """
    import multiprocessing
    from torch.utils.data import DataLoader, Dataset

    class Encoded(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            with torch.no_grad():
                return model(x[:, i:i + 1])[0].sum()

    loader = DataLoader(Encoded(), batch_size=2, num_workers=2,
                        multiprocessing_context=multiprocessing.get_context("fork"))
    values = torch.cat(list(loader))
    assert values.shape == (8,) and torch.isfinite(values).all()
    """)
    assert done.returncode == 0, done.stderr[-2000:]


def test_an_install_without_a_writable_cache_place_still_runs(tmp_path):
    # A copy of the package whose __pycache__ cannot be a directory, and a home under /proc:
    # numba's own cache places both fail, as in a read-only install with an unwritable home.
    import os
    import shutil
    from pathlib import Path

    import lrn

    package = tmp_path / "site" / "lrn"
    shutil.copytree(Path(lrn.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "ops" / "__pycache__").write_text("not a directory")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"), HOME="/proc/no-home", XDG_CACHE_HOME="/proc/no-cache",
               TMPDIR=str(tmp_path / "tmp"))
    env.pop("NUMBA_CACHE_DIR", None)
    (tmp_path / "tmp").mkdir()
    code = ("import lrn, torch, numba; assert lrn.__file__.startswith(%r); "
            "print(lrn.LRN(8, 16)(torch.randn(5, 70, 8))[0].shape[-1], numba.config.CACHE_DIR)" % str(package))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    size, cache_dir = done.stdout.split()
    assert size == "16" and cache_dir.startswith(str(tmp_path / "tmp"))


EXTRAS = ["tqdm", "matplotlib", "safetensors", "sacrebleu", "tokenizers", "seqeval", "markdown", "PIL"]


def test_the_bare_layer_needs_none_of_the_extras_and_the_cli_says_which_to_install():
    block = "import sys\nfor name in %r: sys.modules[name] = None\n" % EXTRAS  # as if not installed
    layer = _run(block + """
import torch, lrn
model = lrn.make_rnn("lrn", 8, 16, bidirectional=True)
out, _ = model(torch.randn(5, 70, 8))
out.sum().backward()
print(tuple(out.shape))
""")
    assert layer.returncode == 0 and layer.stdout.strip() == "(5, 70, 32)", layer.stderr[-2000:]
    info = _run(block + "from lrn.cli import main\nraise SystemExit(main(['info']))\n")
    assert info.returncode == 0 and "backends" in info.stdout, info.stderr[-2000:]
    cli = _run(block + "from lrn.cli import main\nraise SystemExit(main(['train', 'adding', '--cell', 'lrn', '--out', 'x']))\n")
    assert cli.returncode == 2
    assert cli.stderr.startswith("lrn: error: `lrn train` needs the 'tasks' extra") and cli.stderr.count("\n") == 1
