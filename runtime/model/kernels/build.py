"""Compile FastServe's C kernels once per machine and load them with ctypes.

The kernels are plain C (AVX2 + FMA + F16C intrinsics, OpenMP), compiled at first use with
the system's C compiler into the cache next to the converted models, keyed by a hash of
the sources, flags and compiler, and published atomically (two processes compiling at
once both end with a whole library). Loaded after torch, the library's libgomp resolves
to the copy torch already loaded, so there is one OpenMP thread pool in the process and
`torch.set_num_threads` governs the kernels too. Without a compiler, on another
architecture, or with FASTSERVE_C_KERNELS=0, `load_kernels` returns None and every
caller keeps its torch path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from fastserve.runtime.model.device_caps import cpu_flags
from fastserve.runtime.model.registry import cache_root

_SOURCES = ("qmatmul.c", "ops.c", "attention.c")
_HEADERS = ("simd_exp.h",)  # included by the sources: part of the build's identity
_FLAGS = ("-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-shared", "-fPIC", "-std=c11")
_REQUIRED_CPU_FLAGS = ("avx2", "fma", "f16c")
_ENV_SWITCH = "FASTSERVE_C_KERNELS"
_P = ctypes.c_void_p
_I = ctypes.c_int64
_F = ctypes.c_float
# Argument types per exported function: pointers as void*, sizes as int64, scalars float.
_SIGNATURES: dict[str, tuple[type, ...]] = {
    "fs_q4_1_matmul": (_P, _P, _P, _P, _P, _P, _I, _I, _I),
    "fs_q8_0_matmul": (_P, _P, _P, _P, _P, _I, _I, _I),
    "fs_rms_norm": (_P, _P, _P, _I, _I, _F),
    "fs_add_rms_norm": (_P, _P, _P, _P, _I, _I, _F),
    "fs_silu_mul": (_P, _P, _I, _I),
    "fs_rope_write_kv": (_P, _P, _P, _P, _P, _P, _P, _I, _I, _I, _I, _I, _I),
    "fs_decode_attention": (_P, _I, _P, _P, _P, _P, _P, _P, _I, _I, _I, _I, _I, _I, _F),
}

log = logging.getLogger(__name__)


def kernels_supported() -> str | None:
    """Why the C kernels cannot run here, or None when they can."""
    if os.environ.get(_ENV_SWITCH, "1") == "0":
        return f"{_ENV_SWITCH}=0"
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"not an x86-64 CPU ({platform.machine()})"
    missing = [f for f in _REQUIRED_CPU_FLAGS if f not in cpu_flags()]
    if missing:
        return f"the CPU lacks {', '.join(missing)}"
    if _compiler() is None:
        return "no C compiler (cc/gcc) on PATH"
    return None


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def _library_path(compiler: str) -> Path:
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in (*_SOURCES, *_HEADERS):
        digest.update((here / name).read_bytes())
    digest.update(" ".join(_FLAGS).encode())
    digest.update(compiler.encode())
    return cache_root().parent / "kernels" / f"fastserve-kernels-{digest.hexdigest()[:16]}.so"


def _compile(compiler: str, target: Path) -> None:
    here = Path(__file__).parent
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [compiler, *_FLAGS, "-o", tmp, *(str(here / s) for s in _SOURCES), "-lm"]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def load_kernels() -> ctypes.CDLL | None:
    """The compiled kernel library (compiling it on first use), or None where it cannot
    run; the reason is logged once."""
    import torch  # noqa: F401 - load torch's libgomp first, so the kernels share it

    reason = kernels_supported()
    if reason is None:
        compiler = _compiler()
        assert compiler is not None
        path = _library_path(compiler)
        try:
            if not path.exists():
                _compile(compiler, path)
            lib = ctypes.CDLL(str(path))
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            reason = f"compiling the kernels failed: {detail.strip()[:500]}"
        else:
            for name, argtypes in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.argtypes = argtypes
                fn.restype = None
            return lib
    log.info("C kernels off (%s): torch ops run instead", reason)
    return None
