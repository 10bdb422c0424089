"""The fused CPU kernel of the additive decoder's output layer, built at first use.

``_lse_native.cpp`` (beside this file) computes ``logsumexp_d(h_d @ w_d + b_d)`` and its
gradients in one pass each (see :func:`scvae_beta.nn.additive.logsumexp_output`). It is plain
C++ with GCC vector extensions, compiled here with the machine's C++ compiler into a shared
library that ``ctypes`` loads, so installing the package needs no compiler: where none is found
(or the CPU lacks AVX2 and FMA, or the build fails, or the library disagrees with the PyTorch
path on a small check problem) :func:`library` returns ``None`` and the decoder uses its
PyTorch path, with the reason in :func:`unavailable_reason` and one INFO log line.

The library is cached in ``$SCVAE_BETA_CACHE_DIR`` (default ``$XDG_CACHE_HOME/scvae_beta`` or
``~/.cache/scvae_beta``) under a name made from the source, the compiler and the flags, so a
changed source or compiler builds anew; writes are atomic (a temporary file, then a rename).

The environment variable ``SCVAE_BETA_NATIVE`` overrides
:data:`scvae_beta.nn.additive.KERNEL`: ``0`` never uses the kernel, ``1`` requires it (an
error, with the reason, where it cannot be built; CI sets it so that a broken build fails).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("_lse_native.cpp")
#: Compiler flags: 256-bit vectors with FMA (x86-64-v3), no fast-math (the exp and log
#: polynomials rely on IEEE rounding).
FLAGS = ("-O3", "-mavx2", "-mfma", "-fPIC", "-shared", "-pthread", "-std=c++11")
#: Tried first: the kernel then runs on PyTorch's OpenMP threads (its ``libgomp.so.1`` is the
#: one already loaded). Without OpenMP (a compiler without it) the kernel starts its own POSIX
#: threads, which compete with PyTorch's spinning idle threads: about 2x slower inside a fit
#: under the default ``OMP_WAIT_POLICY`` (``benchmarks/RESULTS.md``).
OPENMP_FLAGS = ("-fopenmp",)
#: ``scvae_lse_version()`` of the source this module expects.
VERSION = 1
#: CPU capabilities (``torch.backends.cpu.get_cpu_capability()``) the flags need.
_CAPABLE = ("AVX2", "AVX512")

_LOGGER = logging.getLogger("scvae_beta")
_LOCK = threading.Lock()
_STATE: dict[str, object] = {}  # "lib": CDLL | None, "reason": str


def cache_dir() -> Path:
    """Where built libraries are kept (see the module docstring)."""
    env = os.environ.get("SCVAE_BETA_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scvae_beta"


def compiler() -> str | None:
    """``$CXX`` if set, else the first of ``c++``, ``g++``, ``clang++`` on the ``PATH``."""
    env = os.environ.get("CXX")
    if env:
        return env
    for name in ("c++", "g++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _check_platform() -> str | None:
    """Why this machine cannot run the kernel, or ``None``."""
    if sys.platform == "win32":
        return "Windows is not supported by the native kernel"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the native kernel needs an x86-64 CPU, this is {platform.machine()}"
    cap = torch.backends.cpu.get_cpu_capability()
    if cap not in _CAPABLE:
        return f"the native kernel needs AVX2 and FMA; PyTorch reports CPU capability {cap}"
    return None


def _compiler_id(cxx: str) -> str:
    try:
        res = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        raise RuntimeError(f"cannot run the C++ compiler {cxx!r}: {err}") from err
    return res.stdout.splitlines()[0] if res.returncode == 0 and res.stdout else cxx


def _build(cxx: str, target: Path) -> None:
    """Compile :data:`SOURCE` into ``target`` atomically, with OpenMP where the compiler has it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", prefix=".building-", dir=target.parent)
    os.close(fd)
    try:
        for extra in (OPENMP_FLAGS, ()):
            cmd = [cxx, *FLAGS, *extra, "-o", tmp, str(SOURCE)]
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.SubprocessError) as err:
                raise RuntimeError(f"`{' '.join(cmd)}` failed to run: {err}") from err
            if res.returncode == 0:
                break
        else:
            raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{res.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _bind(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.scvae_lse_forward.argtypes = [p] * 4 + [i64] * 4 + [i32]
    lib.scvae_lse_forward.restype = i32
    lib.scvae_lse_backward.argtypes = [p] * 8 + [i64] * 4 + [i32]
    lib.scvae_lse_backward.restype = i32
    lib.scvae_lse_version.restype = i32
    lib.scvae_lse_openmp.restype = i32
    if lib.scvae_lse_version() != VERSION:
        raise RuntimeError(f"{path} is version {lib.scvae_lse_version()}, expected {VERSION}")
    return lib


def _self_check(lib: ctypes.CDLL) -> None:
    """A small ragged problem (3 dimensions, 5 cells, 37 genes) against float64 autograd."""
    gen = torch.Generator().manual_seed(0)
    d, n, k, g = 3, 5, 4, 37
    h = torch.randn(d, n, k, generator=gen).relu_()
    w = torch.randn(d, k, g, generator=gen)
    b = torch.randn(d, 1, g, generator=gen)
    grad = torch.randn(n, g, generator=gen)
    out, gh, gw, gb = run(lib, h, w, b, grad)
    h64, w64, b64 = (t.double().requires_grad_() for t in (h, w, b))
    ref = torch.logsumexp(torch.baddbmm(b64, h64, w64), 0)
    refs = torch.autograd.grad(ref, (h64, w64, b64), grad.double())
    for got, want in zip((out, gh, gw, gb), (ref, *refs), strict=True):
        err = (got.double() - want.detach()).abs().max().item()
        if not err <= 1e-4 * max(1.0, want.abs().max().item()):
            raise RuntimeError(f"the built kernel disagrees with PyTorch (max error {err:.3g})")


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def forward(lib: ctypes.CDLL, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``logsumexp_d(h_d @ w_d + b_d)`` ``(B, G)`` for contiguous float32 CPU ``h`` ``(D, B, H)``,
    ``w`` ``(D, H, G)``, ``b`` ``(D, 1, G)``, on ``torch.get_num_threads()`` threads."""
    d, n, k = h.shape
    g = w.shape[2]
    out = h.new_empty(n, g)
    rc = lib.scvae_lse_forward(
        _ptr(h), _ptr(w), _ptr(b), _ptr(out), d, n, k, g, torch.get_num_threads()
    )
    if rc:
        raise MemoryError("the native logsumexp kernel could not allocate its work buffers")
    return out


def backward(
    lib: ctypes.CDLL,
    h: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    out: torch.Tensor,
    grad: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`forward` with respect to ``h``, ``w``, ``b`` for the incoming
    ``grad`` ``(B, G)``, given the forward's output ``out``."""
    d, n, k = h.shape
    g = w.shape[2]
    gh, gw, gb = torch.empty_like(h), torch.empty_like(w), torch.empty_like(b)
    rc = lib.scvae_lse_backward(
        _ptr(h), _ptr(w), _ptr(b), _ptr(out), _ptr(grad), _ptr(gh), _ptr(gw), _ptr(gb),
        d, n, k, g, torch.get_num_threads(),
    )  # fmt: skip
    if rc:
        raise MemoryError("the native logsumexp kernel could not allocate its work buffers")
    return gh, gw, gb


def run(lib, h, w, b, grad):
    """Forward and backward at once (the self-check and the tests)."""
    out = forward(lib, h, w, b)
    return (out, *backward(lib, h, w, b, out, grad))


def _load() -> ctypes.CDLL:
    """Build (or reuse) and load the library; raises ``RuntimeError`` with the reason."""
    reason = _check_platform()
    if reason:
        raise RuntimeError(reason)
    if not SOURCE.is_file():
        raise RuntimeError(f"the kernel's source {SOURCE} is missing from the installation")
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++ or clang++)")
    key = hashlib.sha256()
    key.update(SOURCE.read_bytes())
    key.update(repr((FLAGS, OPENMP_FLAGS, _compiler_id(cxx), platform.machine())).encode())
    name = f"lse_native_v{VERSION}_{key.hexdigest()[:16]}.so"
    target = cache_dir() / name
    if not target.is_file():
        started = time.perf_counter()
        try:
            _build(cxx, target)
        except OSError as err:  # the cache folder is not writable: build per process
            _LOGGER.debug("cannot write %s (%s); building in a temporary folder", target, err)
            target = Path(tempfile.mkdtemp(prefix="scvae_beta-")) / name
            _build(cxx, target)
        _LOGGER.info(
            "built the additive decoder's CPU kernel in %.1f s: %s",
            time.perf_counter() - started,
            target,
        )
    lib = _bind(target)
    _self_check(lib)
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernel, built on the first call; ``None`` where it is not available
    (:func:`unavailable_reason` says why). Thread-safe; the answer is kept for the process."""
    if "lib" not in _STATE:
        with _LOCK:
            if "lib" not in _STATE:
                try:
                    _STATE["lib"] = _load()
                    _STATE["reason"] = ""
                except (RuntimeError, OSError) as err:
                    _STATE["lib"] = None
                    _STATE["reason"] = str(err)
                    _LOGGER.info(
                        "the additive decoder uses its PyTorch path (the native CPU kernel "
                        "is not available: %s)",
                        err,
                    )
    return _STATE["lib"]  # type: ignore[return-value]


def unavailable_reason() -> str:
    """Why :func:`library` returned ``None`` (empty when it did not, or was not asked yet)."""
    return str(_STATE.get("reason", ""))


def reset() -> None:
    """Forget the loaded library and the reason (tests; the next call builds or loads again)."""
    with _LOCK:
        _STATE.clear()


__all__ = ["library", "unavailable_reason", "cache_dir", "compiler", "forward", "backward"]
