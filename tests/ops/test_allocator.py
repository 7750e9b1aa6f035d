"""keep_freed_memory: glibc reuses freed large blocks afterwards (no fresh page faults)."""

import os
import subprocess
import sys

SCRIPT = """
import resource, sys, torch
from lrn.allocator import keep_freed_memory
if sys.argv[1] == "on":
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(12):  # the steady state of a training loop (reached after ~8 here)
    torch.empty(2**23).fill_(1.0)  # 32 MiB, above glibc's default mmap threshold
before = faults()
for _ in range(5):
    torch.empty(2**23).fill_(1.0)
print(faults() - before)
"""


def _minor_faults(mode: str) -> int:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split()[-1])


def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    pages = 5 * 2**25 // 4096  # what five fresh 32 MiB blocks fault in
    assert _minor_faults("off") > pages // 2
    assert _minor_faults("on") < pages // 20


def test_opt_out_leaves_the_allocator_alone():
    env = {**os.environ, "LRN_KEEP_FREED_MEMORY": "0"}
    code = "from lrn.allocator import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


AUTO = """
import torch, lrn
from lrn.allocator import freed_memory_kept
with torch.no_grad():
    lrn.LRN(8, 8)(torch.randn(4, 2, 8))
    small = freed_memory_kept()  # a small layer leaves the process's allocator alone
    lrn.LRN(8, 512, backend="cpu")(torch.randn(64, 64, 8))  # an 8 MiB output buffer
print(small, freed_memory_kept())
"""


def test_a_plain_program_gets_freed_memory_kept_from_its_first_large_buffer_unless_opted_out():
    env = {k: v for k, v in os.environ.items() if k != "LRN_KEEP_FREED_MEMORY"}
    for extra, expected in (({}, "False True"), ({"LRN_KEEP_FREED_MEMORY": "0"}, "False False")):
        out = subprocess.run([sys.executable, "-c", AUTO], capture_output=True, text=True, env=env | extra,
                             timeout=120)
        assert out.stdout.strip() == expected, out.stderr[-2000:]
