"""Fused CPU kernels (numba) for the LRN recurrence, forward and backward.

Same semantics and packed-gates layout as ``lrn.ops.reference.lrn_scan_reference``.

Design (measured on a 2-core AVX-512 machine):
  * One parallel work item per thread: a direction, a contiguous slice of the batch and,
    when there are fewer (direction, slice) pairs than threads, a chunk of H.  Each item
    walks time in its outer loop and its slice of sequences inside, with the innermost
    loop contiguous over H so that it vectorises.  A step then reads one contiguous block
    of rows, which the hardware prefetcher streams; walking time per sequence instead
    jumps B rows every step (measured: backward 5.3 -> 3.4 ms at B=16, T=1024, H=256).
    Slices are cut so that their summed lengths balance; small problems run on the
    calling thread.
  * float32 uses a rational tanh (sigmoid(x) = (1 + tanh(x/2)) / 2) that LLVM can
    vectorise (libm calls cannot be); max relative error ~3.5e-7, mean ~6e-8.
    float64 (used for gradcheck) uses libm math.
  * The backward pass needs only the gates and the outputs: it walks time backwards
    and recomputes each step's gates from the previous state, which is the output of
    the previous processed step (or h0).  Without an output gate the step's own output
    is its c, so the tanh is read, not recomputed (backward ~10% faster).  No per-step
    tensors are saved.
  * Outputs are allocated once per call (torch.empty, huge pages when large) and
    written through zero-copy numpy views; the state buffers are the returned
    h_last / grad_h0.
  * One kernel per (tanh, output_gate) and dtype, compiled on first use and cached on
    disk (cache=True): importing this module compiles nothing.
"""

from __future__ import annotations

import ctypes
import math
import os
import tempfile

import numba
import numpy as np
import torch
from numba import njit, prange, types
from numba.extending import overload

from lrn.allocator import glibc, keep_freed_memory
from lrn.ops.linear import onednn_backed_empty
from lrn.ops.reference import check_length_range

# Fast-math: FMA contraction only.  The other flags bought nothing measurable here, and
# nnan/ninf would break NaN propagation (the reference propagates NaN).
_FASTMATH = {"contract"}
# error_model="numpy": no ZeroDivisionError branch, which would block vectorisation.
_JIT_OPTIONS = {"fastmath": _FASTMATH, "error_model": "numpy"}

# tanh(x) ~= x * P(x^2) / Q(x^2) on |x| <= 9 (float32 tanh rounds to +-1 beyond);
# coefficients fitted (relative minimax) for this module.
_TANH_CLAMP = np.float32(9.0)
_P1 = np.float32(1.3381032645702362e-01)
_P2 = np.float32(3.4955961164087057e-03)
_P3 = np.float32(2.0609206330846064e-05)
_P4 = np.float32(1.3354819472510826e-08)
_Q1 = np.float32(4.6714347600936890e-01)
_Q2 = np.float32(2.5877011939883232e-02)
_Q3 = np.float32(3.2856475445441900e-04)
_Q4 = np.float32(7.7766259209965940e-07)
_ONE32 = np.float32(1.0)
_HALF32 = np.float32(0.5)


def _tanh(x):
    """tanh for the kernels; numba picks the float32 or float64 version below."""
    raise NotImplementedError("numba-only helper")


def _sigmoid(x):
    """sigmoid for the kernels; numba picks the float32 or float64 version below."""
    raise NotImplementedError("numba-only helper")


def _one_minus_square(x):
    """1 - x*x in the dtype of x (a Python 1 would promote float32 to float64)."""
    raise NotImplementedError("numba-only helper")


def _tanh_f32(x):
    # Comparisons written so that NaN falls through unchanged.
    c = _TANH_CLAMP if x > _TANH_CLAMP else x
    c = -_TANH_CLAMP if c < -_TANH_CLAMP else c
    z = c * c
    p = (((_P4 * z + _P3) * z + _P2) * z + _P1) * z + _ONE32
    q = (((_Q4 * z + _Q3) * z + _Q2) * z + _Q1) * z + _ONE32
    r = c * p / q
    # Beyond the clamp float32 tanh is exactly +-1, and the fit is not: 1 - 1e-6 there made
    # sigmoid(-1e8) = -5e-7 instead of 0, which a large v then turned into garbage.
    r = _ONE32 if x >= _TANH_CLAMP else r
    return -_ONE32 if x <= -_TANH_CLAMP else r


@overload(_tanh, jit_options=_JIT_OPTIONS)
def _tanh_overload(x):
    if x == types.float32:
        return _tanh_f32
    return lambda x: math.tanh(x)


@overload(_sigmoid, jit_options=_JIT_OPTIONS)
def _sigmoid_overload(x):
    if x == types.float32:
        return lambda x: _HALF32 + _HALF32 * _tanh(_HALF32 * x)
    return lambda x: 1.0 / (1.0 + math.exp(-x))


@overload(_one_minus_square, jit_options=_JIT_OPTIONS)
def _one_minus_square_overload(x):
    if x == types.float32:
        return lambda x: _ONE32 - x * x
    return lambda x: 1.0 - x * x


@njit(inline="always")
def _work_item(item, bounds, n_chunks, chunk, hidden):
    """(direction, first sequence, end sequence, first h, end h) of one work item."""
    # prange hands out unsigned indices; uint64 with int64 would promote to float64
    n_slices = bounds.shape[0] - 1
    d, rest = divmod(np.int64(item), n_slices * n_chunks)
    s, c = divmod(rest, n_chunks)
    h_lo = c * chunk
    return d, bounds[s], bounds[s + 1], h_lo, min(hidden, h_lo + chunk)


@njit(inline="always")
def _previous_row(initial, out, d, b, t, n, backwards, h_lo, h_hi, y_lo):
    """h_{t-1} of sequence b in processing order: the output of the previous processed step,
    or the initial state (D, B, H) for its first step (t = 0, or t = n - 1 when reversed)."""
    if t == (n - 1 if backwards else 0):
        return initial[d, b, h_lo:h_hi]
    return out[t + 1 if backwards else t - 1, b, y_lo:y_lo + h_hi - h_lo]


@njit(inline="always")
def _step_row(q, k, v, o, hp_row, y, width, use_tanh, output_gate):
    """One step of one sequence's row: y = h_t from its gate rows and h_{t-1} (the flags are
    the calling kernel's compile-time constants, so their branches fold away)."""
    for x in range(width):
        hp = hp_row[x]
        f = _sigmoid(q[x] - hp)
        i = _sigmoid(k[x] + hp)
        c = i * v[x] + f * hp
        if use_tanh:
            c = _tanh(c)
        if output_gate:
            c = _sigmoid(o[x] - c) * c
        y[x] = c


def _build_forward(use_tanh: bool, output_gate: bool, parallel: bool):
    """Forward kernel with the flags as compile-time constants (runtime flags would leave
    branches in the inner loop and LLVM then vectorises only one variant, or none)."""

    @njit(parallel=parallel, cache=True, **_JIT_OPTIONS)
    def forward(gates, state, out, lengths, num_directions, reverse, bounds, n_chunks, chunk):
        if parallel:  # a no-op that makes `parallel` a closure variable: numba's on-disk cache
            pass      # keys on closure variables, not on njit's arguments, so without it the
        #               serial and the parallel variant would load each other's machine code
        # gates (T, B, D*G*H); state (D, B, H): holds h0 on entry, h_last on exit;
        # out (T, B, D*H).  Inner loops index slices from 0: an offset index makes numba
        # emit a negative-index check per access, which stops LLVM from vectorising.
        T, B, _ = gates.shape
        H = state.shape[2]
        G = 4 if output_gate else 3
        for item in prange(num_directions * (bounds.shape[0] - 1) * n_chunks):
            d, b_lo, b_hi, h_lo, h_hi = _work_item(item, bounds, n_chunks, chunk, H)
            backwards = d == 1 or (num_directions == 1 and reverse)
            width = h_hi - h_lo
            q_lo = d * G * H + h_lo  # gate block starts: q_lo, q_lo + H, q_lo + 2H, q_lo + 3H
            y_lo = d * H + h_lo
            steps = lengths[b_lo:b_hi].max() if b_hi > b_lo else 0
            for j in range(steps):
                # Absolute time, so that every sequence of the slice reads the same row of
                # gates; a reversed sequence starts at its own last step, t = n - 1.
                t = steps - 1 - j if backwards else j
                for b in range(b_lo, b_hi):
                    n = lengths[b]
                    if t >= n:
                        continue
                    hp_row = _previous_row(state, out, d, b, t, n, backwards, h_lo, h_hi, y_lo)
                    g = gates[t, b]
                    q = g[q_lo:q_lo + width]
                    k = g[q_lo + H:q_lo + H + width]
                    v = g[q_lo + 2 * H:q_lo + 2 * H + width]
                    o = g[q_lo + 3 * H:q_lo + 3 * H + width] if output_gate else v
                    _step_row(q, k, v, o, hp_row, out[t, b, y_lo:y_lo + width], width, use_tanh, output_gate)
            for b in range(b_lo, b_hi):
                n = lengths[b]
                if n > 0:
                    state[d, b, h_lo:h_hi] = out[0 if backwards else n - 1, b, y_lo:y_lo + width]
                for t in range(n, T):
                    out[t, b, y_lo:y_lo + width] = 0

    return forward


def _build_backward(use_tanh: bool, output_gate: bool, parallel: bool):
    """Backward kernel with the flags as compile-time constants (see _build_forward)."""

    @njit(parallel=parallel, cache=True, **_JIT_OPTIONS)
    def backward(grad_out, dstate, gates, out, h0, grad_gates, lengths, num_directions, reverse,
                 bounds, n_chunks, chunk):
        if parallel:  # a no-op that makes `parallel` a closure variable: numba's on-disk cache
            pass      # keys on closure variables, not on njit's arguments, so without it the
        #               serial and the parallel variant would load each other's machine code
        # grad_out (T, B, D*H); dstate (D, B, H): holds grad_h_last on entry, grad_h0 on exit;
        # gates (T, B, D*G*H); out (T, B, D*H); h0 (D, B, H); grad_gates (T, B, D*G*H)
        T, B, _ = gates.shape
        H = dstate.shape[2]
        G = 4 if output_gate else 3
        for item in prange(num_directions * (bounds.shape[0] - 1) * n_chunks):
            d, b_lo, b_hi, h_lo, h_hi = _work_item(item, bounds, n_chunks, chunk, H)
            backwards = d == 1 or (num_directions == 1 and reverse)
            width = h_hi - h_lo
            q_lo = d * G * H + h_lo
            y_lo = d * H + h_lo
            steps = lengths[b_lo:b_hi].max() if b_hi > b_lo else 0
            for j in range(steps):
                # The forward's order reversed, in absolute time as there: a sequence
                # joins when t reaches its last processed step, with dh = grad_h_last.
                t = j if backwards else steps - 1 - j
                for b in range(b_lo, b_hi):
                    n = lengths[b]
                    if t >= n:
                        continue
                    hp_row = _previous_row(h0, out, d, b, t, n, backwards, h_lo, h_hi, y_lo)
                    # gradient w.r.t. the state after the current step
                    dh = dstate[d, b, h_lo:h_hi]
                    g = gates[t, b]
                    q = g[q_lo:q_lo + width]
                    k = g[q_lo + H:q_lo + H + width]
                    v = g[q_lo + 2 * H:q_lo + 2 * H + width]
                    o = g[q_lo + 3 * H:q_lo + 3 * H + width] if output_gate else v
                    gg = grad_gates[t, b]
                    dq = gg[q_lo:q_lo + width]
                    dk = gg[q_lo + H:q_lo + H + width]
                    dv = gg[q_lo + 2 * H:q_lo + 2 * H + width]
                    do = gg[q_lo + 3 * H:q_lo + 3 * H + width] if output_gate else dv
                    dy = grad_out[t, b, y_lo:y_lo + width]
                    y = out[t, b, y_lo:y_lo + width]
                    for x in range(width):
                        hp = hp_row[x]
                        f = _sigmoid(q[x] - hp)
                        i = _sigmoid(k[x] + hp)
                        dc = dy[x] + dh[x]
                        if output_gate:
                            s = i * v[x] + f * hp
                            c = _tanh(s) if use_tanh else s
                            og = _sigmoid(o[x] - c)
                            do_x = dc * c * (og - og * og)
                            do[x] = do_x
                            dc = dc * og - do_x
                        else:
                            # without an output gate the step's output is c itself: read
                            # it (the row is next step's h_{t-1}, so cached) instead of
                            # recomputing a tanh
                            c = y[x]
                        ds = dc * _one_minus_square(c) if use_tanh else dc
                        dk_x = ds * v[x] * (i - i * i)
                        dq_x = ds * hp * (f - f * f)
                        dq[x] = dq_x
                        dk[x] = dk_x
                        dv[x] = ds * i
                        dh[x] = ds * f + dk_x - dq_x
            for b in range(b_lo, b_hi):
                for t in range(lengths[b], T):
                    grad_gates[t, b, q_lo:q_lo + width] = 0
                    grad_gates[t, b, q_lo + H:q_lo + H + width] = 0
                    grad_gates[t, b, q_lo + 2 * H:q_lo + 2 * H + width] = 0
                    if output_gate:
                        grad_gates[t, b, q_lo + 3 * H:q_lo + 3 * H + width] = 0

    return backward


def _build_step(use_tanh: bool, output_gate: bool):
    """One step without lengths or directions, for a cell called step by step (a decoder):
    the scan's per-call work (lengths, slicing, threads) would cost more than the step."""

    @njit(cache=True, **_JIT_OPTIONS)
    def step(gates, state, out):
        # gates (B, G*H); state (B, H): h_{t-1}; out (B, H): h_t
        B, H = state.shape
        for b in range(B):
            g = gates[b]
            hp_row = state[b]
            q = g[0:H]
            k = g[H:2 * H]
            v = g[2 * H:3 * H]
            o = g[3 * H:4 * H] if output_gate else v
            _step_row(q, k, v, o, hp_row, out[b], H, use_tanh, output_gate)

    return step


def _ensure_cache_dir() -> None:
    """Give numba's on-disk cache a writable place.  numba looks beside this file and in the
    user's cache directory; in a read-only install with an unwritable home both fail and
    ``cache=True`` raises "no locator available" at the first call.  Then the cache goes to
    the temporary directory (unless NUMBA_CACHE_DIR chose a place already)."""
    from numba.core.caching import InTreeCacheLocator, UserWideCacheLocator

    if numba.config.CACHE_DIR:
        return
    if any(cls.from_function(_ensure_cache_dir, __file__) is not None
           for cls in (InTreeCacheLocator, UserWideCacheLocator)):
        return
    numba.config.CACHE_DIR = os.path.join(tempfile.gettempdir(), f"lrn-torch-numba-cache-{os.getuid()}")


_ensure_cache_dir()

# One compiled kernel per (use_tanh, output_gate, parallel); numba compiles each on first
# call.  The serial ones (prange is then range) never touch numba's thread pool: they serve
# one-thread work, torch.set_num_threads(1), and forked children (below).
_FLAGS = [(use_tanh, output_gate, parallel) for use_tanh in (False, True) for output_gate in (False, True)
          for parallel in (False, True)]
_FORWARD = {flags: _build_forward(*flags) for flags in _FLAGS}
_BACKWARD = {flags: _build_backward(*flags) for flags in _FLAGS}
_STEP = {(use_tanh, output_gate): _build_step(use_tanh, output_gate)
         for use_tanh in (False, True) for output_gate in (False, True)}

#: set in a child forked from this process: numba's OpenMP pool does not survive fork()
#: (GNU OpenMP aborts the child), so a child runs the serial kernels only.
_FORKED = False


def _after_fork_in_child() -> None:
    global _FORKED
    _FORKED = True


os.register_at_fork(after_in_child=_after_fork_in_child)

_SIMD_FLOATS = 16  # one AVX-512 register of float32; chunks stay vector-aligned
# Below this many (step, sequence, direction, unit) elements (~0.25 ms of work at ~1 ns
# each) the kernels run on the calling thread: waking the pool costs tens of microseconds
# on an idle machine and whole scheduler time slices on a busy one (measured under load:
# B=1, T=512, H=256 forward 8 ms on two threads, 78 us on one).
_PARALLEL_MIN_ELEMENTS = 1 << 18


def _chunking(pairs: int, hidden: int, threads: int) -> tuple[int, int]:
    """(n_chunks, chunk): split H so that every thread gets work when pairs < threads."""
    n_chunks = 1 if pairs >= threads else min(-(-threads // pairs), -(-hidden // _SIMD_FLOATS))
    chunk = -(-hidden // n_chunks)
    chunk = -(-chunk // _SIMD_FLOATS) * _SIMD_FLOATS
    return -(-hidden // chunk), chunk


def _batch_slices(lengths: np.ndarray, slices: int) -> np.ndarray:
    """Bounds (slices + 1,) of contiguous batch slices whose summed lengths balance.

    numba's OpenMP pool gives each thread one contiguous block of work items; equal
    slices of a batch sorted by length (as packed sequences are) would leave one thread
    all the long ones.  Cut at the points where the running total of steps crosses each
    thread's share instead.
    """
    if slices == 1:
        return np.array([0, lengths.shape[0]], dtype=np.int64)
    total = np.cumsum(lengths)
    shares = total[-1] * np.arange(1, slices) / slices
    cuts = np.searchsorted(total, shares, side="left") + 1
    bounds = np.concatenate([[0], np.minimum(cuts, lengths.shape[0]), [lengths.shape[0]]])
    return bounds.astype(np.int64)


def thread_count() -> int:
    """Threads the kernels may use: torch's setting (``torch.set_num_threads``), at most the
    numba pool's size (NUMBA_NUM_THREADS), and 1 in a forked child."""
    if _FORKED:
        return 1
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def _launch(kernels: dict, flags: tuple[bool, bool], lengths: np.ndarray, num_directions: int, hidden: int,
            *args) -> None:
    """The (use_tanh, output_gate) kernel, (*args, bounds, n_chunks, chunk), on as many
    threads as the work is worth and the caller allows; one thread runs the serial kernel."""
    work = int(lengths.sum()) * num_directions * hidden
    threads = thread_count() if work >= _PARALLEL_MIN_ELEMENTS else 1
    slices = max(1, min(lengths.shape[0], -(-threads // num_directions)))
    bounds = _batch_slices(lengths, slices)
    n_chunks, chunk = _chunking(num_directions * slices, hidden, threads)
    kernel = kernels[(*flags, threads > 1)]
    if threads == 1:
        kernel(*args, bounds, n_chunks, chunk)
        return
    pool = numba.get_num_threads()
    if threads == pool:  # set_num_threads costs ~1 us a call: skip it when it changes nothing
        kernel(*args, bounds, n_chunks, chunk)
        return
    numba.set_num_threads(threads)
    try:
        kernel(*args, bounds, n_chunks, chunk)
    finally:
        numba.set_num_threads(pool)


_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14


def _empty(*shape: int, dtype: torch.dtype, onednn_backed: bool = False) -> torch.Tensor:
    """torch.empty, asking Linux for 2 MiB pages on large buffers; with ``onednn_backed``
    (float32 only) in memory that the oneDNN projection's backward reads without a copy.

    Buffers over glibc's mmap threshold (32 MiB at most) come fresh from the kernel on
    every call, and first-touch faults on 4 KiB pages cost more than the recurrence itself
    (measured: backward at B=16, T=1024, H=256 went from 19 ms to 7.5 ms).  Best effort:
    madvise only marks the 2 MiB-aligned interior and is ignored where THP is off.
    """
    out = onednn_backed_empty(*shape) if onednn_backed else torch.empty(*shape, dtype=dtype)
    nbytes = out.numel() * out.element_size()
    libc = glibc()
    if libc is not None and nbytes >= 4 * _HUGE_PAGE:
        # A plain program gets the speed that `lrn bench` measures: from the first large
        # buffer on, freed memory is reused instead of page-faulted in again every step
        # (lrn/allocator.py; LRN_KEEP_FREED_MEMORY=0 opts out).
        keep_freed_memory()
        start = -(-out.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
        end = (out.data_ptr() + nbytes) // _HUGE_PAGE * _HUGE_PAGE
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_HUGEPAGE)
    return out


def _check_gates(gates: torch.Tensor, num_directions: int, output_gate: bool) -> int:
    """Validate the packed gates; returns H."""
    if gates.device.type != "cpu":
        raise ValueError(f"cpu backend: gates must be on the CPU, got {gates.device}")
    if gates.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"cpu backend: gates must be float32 or float64, got {gates.dtype}")
    if gates.dim() != 3:
        raise ValueError(
            f"cpu backend: gates must be (T, B, D*G*H), got shape {tuple(gates.shape)}")
    blocks = num_directions * (4 if output_gate else 3)
    if gates.shape[2] % blocks:
        raise ValueError(
            f"cpu backend: gates last dim {gates.shape[2]} is not a multiple of {blocks}")
    return gates.shape[2] // blocks


def _check_shape(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    # The kernels do not bounds-check: a wrong shape would read or write out of bounds.
    if tuple(tensor.shape) != shape:
        raise ValueError(f"cpu backend: {name} must have shape {shape}, got {tuple(tensor.shape)}")


def _lengths_array(lengths: torch.Tensor | None, T: int, B: int) -> np.ndarray:
    """(B,) int64 valid steps per sequence, checked to lie in [0, T]."""
    if lengths is None:
        return np.full(B, T, dtype=np.int64)
    _check_shape("lengths", lengths, (B,))
    check_length_range(lengths, T)
    return lengths.detach().to("cpu", torch.int64).contiguous().numpy()


def _np(t: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """Numpy view of a CPU tensor in dtype, C-contiguous (zero-copy when it already is)."""
    return t.detach().to(dtype).contiguous().numpy()


def scan_forward(gates, h0, lengths, num_directions: int, reverse: bool, tanh: bool,
                 output_gate: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """LRN recurrence over packed gates (T, B, D*G*H) -> (out (T, B, D*H), h_last (D, B, H))."""
    H = _check_gates(gates, num_directions, output_gate)
    T, B, _ = gates.shape
    lengths_array = _lengths_array(lengths, T, B)
    if h0 is None:
        h_last = torch.zeros(num_directions, B, H, dtype=gates.dtype)
    else:
        _check_shape("h0", h0, (num_directions, B, H))
        h_last = h0.detach().to(gates.dtype, copy=True).contiguous()
    out = _empty(T, B, num_directions * H, dtype=gates.dtype)
    _launch(_FORWARD, (tanh, output_gate), lengths_array, num_directions, H,
            _np(gates, gates.dtype), h_last.numpy(), out.numpy(), lengths_array,
            num_directions, reverse)
    return out, h_last


def scan_backward(grad_out, grad_h_last, gates, out, h0, lengths, num_directions: int,
                  reverse: bool, tanh: bool,
                  output_gate: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradients of scan_forward: (grad_gates (T, B, D*G*H), grad_h0 (D, B, H) or None)."""
    H = _check_gates(gates, num_directions, output_gate)
    T, B, width = gates.shape
    lengths_array = _lengths_array(lengths, T, B)
    for name, tensor, shape in [("grad_out", grad_out, (T, B, num_directions * H)),
                                ("out", out, (T, B, num_directions * H)),
                                ("grad_h_last", grad_h_last, (num_directions, B, H))]:
        _check_shape(name, tensor, shape)
    if h0 is None:
        h0 = torch.zeros(num_directions, B, H, dtype=gates.dtype)
        wants_grad_h0 = False
    else:
        _check_shape("h0", h0, (num_directions, B, H))
        wants_grad_h0 = True
    grad_h0 = grad_h_last.detach().to(gates.dtype, copy=True).contiguous()
    # The gate gradient goes straight into the projection's backward (lrn.ops.linear).
    grad_gates = _empty(T, B, width, dtype=gates.dtype, onednn_backed=gates.dtype == torch.float32)
    _launch(_BACKWARD, (tanh, output_gate), lengths_array, num_directions, H,
            _np(grad_out, gates.dtype), grad_h0.numpy(), _np(gates, gates.dtype),
            _np(out, gates.dtype), _np(h0, gates.dtype), grad_gates.numpy(), lengths_array,
            num_directions, reverse)
    return grad_gates, (grad_h0 if wants_grad_h0 else None)


def step_forward(gates: torch.Tensor, h: torch.Tensor | None, tanh: bool, output_gate: bool) -> torch.Tensor:
    """One step on the calling thread, no autograd: gates (B, G*H), h (B, H) or None for
    zeros -> the new state (B, H)."""
    if gates.dim() != 2 or gates.dtype not in (torch.float32, torch.float64) or gates.is_cuda:
        raise ValueError(f"cpu backend: step gates must be a (B, G*H) float32/float64 CPU tensor, got "
                         f"{gates.dim()}-D {gates.dtype} on {gates.device}")
    B, width = gates.shape
    H = width // (4 if output_gate else 3)
    if h is None:
        h = torch.zeros(B, H, dtype=gates.dtype)
    else:
        _check_shape("h", h, (B, H))
    out = torch.empty(B, H, dtype=gates.dtype)
    # Not _np: a decoder's step is a few microseconds, and each of its conversions costs ~0.3.
    _STEP[tanh, output_gate](gates.detach().contiguous().numpy(), h.detach().to(gates.dtype).contiguous().numpy(),
                             out.numpy())
    return out

