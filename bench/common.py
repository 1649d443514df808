"""Shared benchmark plumbing: the header every bench prints, and percentile timing."""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from importlib import metadata

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions(*pkgs: str) -> str:
    out = [f"python {platform.python_version()}"]
    for p in pkgs:
        try:
            out.append(f"{p} {metadata.version(p)}")
        except metadata.PackageNotFoundError:
            out.append(f"{p} (not installed)")
    return ", ".join(out)


def print_header(title: str, *, extra: dict[str, object] | None = None,
                 pkgs: tuple[str, ...] = ("jax", "jaxlib", "numpy")) -> None:
    print(f"# {title}")
    print(f"command : {shlex.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"versions: {versions(*pkgs)}")
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"cpu     : {cpu_model()} ({os.cpu_count()} cores, this process on {affinity})")
    print(f"env     : OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    for k, v in (extra or {}).items():
        print(f"{k:8s}: {v}")
    print()


def time_calls(fn: Callable[[], object], n: int, warmup: int = 20) -> np.ndarray:
    """Per-call wall times in microseconds for ``n`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out[i] = (time.perf_counter_ns() - t0) / 1e3
    return out


def pct(a: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def table(rows: list[dict[str, object]]) -> str:
    """A fixed-width text table (rich is not needed for bench output piped to files)."""
    if not rows:
        return ""
    cols = list(rows[0])
    width = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols), "  ".join("-" * width[c] for c in cols)]
    lines += ["  ".join(_fmt(r.get(c)).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return "" if v is None else str(v)
