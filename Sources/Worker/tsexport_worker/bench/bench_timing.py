"""Bench measurements: latency percentiles and the peak resident set of a callable, run after warm-up.

Peak memory: the resident set high-water mark (VmHWM in /proc/self/status), reset before each measurement by
writing 5 to /proc/self/clear_refs, minus the resident set just before it (after freed heap memory was returned
with malloc_trim). It covers the whole process (allocator caches, torch's thread pools), not only tensors.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from ..errors import describe


def status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def trim_heap() -> None:
    """Give freed heap memory back to the system (glibc), so the next resident-set delta starts low."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).malloc_trim(0)


def _reset_peak() -> bool:
    """Reset VmHWM to the current resident set (Linux ≥ 4.0); False when that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def memory_method() -> str | None:
    """How peak memory is measured here: `vmhwm_reset`, `vmhwm_growth` (no reset: only growth beyond the process's
    earlier peak shows), or None (no /proc)."""
    if status_kib("VmHWM") is None:
        return None
    return "vmhwm_reset" if _reset_peak() else "vmhwm_growth"


def percentile(sorted_values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return math.nan
    rank = p / 100 * (len(sorted_values) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def _ms(value: float) -> float:
    return round(value, 6)


def summarize(samples_ms: list[float]) -> dict[str, Any]:
    ordered = sorted(samples_ms)
    return {
        "p50_ms": _ms(percentile(ordered, 50)),
        "p90_ms": _ms(percentile(ordered, 90)),
        "p99_ms": _ms(percentile(ordered, 99)),
        "mean_ms": _ms(sum(ordered) / len(ordered)),
        "min_ms": _ms(ordered[0]),
        "max_ms": _ms(ordered[-1]),
        "runs": len(ordered),
    }


def _cuda_sync() -> None:
    torch.cuda.synchronize()


def _no_sync() -> None:
    """Nothing to wait for on the CPU."""


def measure(call: Callable[[], Any], runs: int, warmup: int, device: str, method: str | None) -> dict[str, Any]:
    """Latency over `runs` calls after `warmup` calls, and the peak resident set while they ran."""
    sync: Callable[[], None] = _cuda_sync if device == "cuda" else _no_sync
    trim_heap()
    if method == "vmhwm_reset":
        _reset_peak()
    before_kib = status_kib("VmRSS")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times: list[float] = []
    with torch.no_grad():
        for _ in range(warmup):
            call()
        sync()
        for _ in range(runs):
            started = time.perf_counter_ns()
            call()
            sync()
            times.append((time.perf_counter_ns() - started) / 1e6)
    stats = summarize(times)
    peak_kib = status_kib("VmHWM")
    stats["peak_rss_bytes"] = peak_kib * 1024 if peak_kib is not None else None
    stats["peak_rss_delta_bytes"] = (
        max(0, peak_kib - before_kib) * 1024 if peak_kib is not None and before_kib is not None else None
    )
    if device == "cuda":
        stats["peak_cuda_bytes"] = int(torch.cuda.max_memory_allocated())
    return stats


def timed(call: Callable[[], Any], runs: int, warmup: int, device: str, method: str | None) -> dict[str, Any]:
    """`measure`, with a failure at this shape kept as an `error` (the request goes on)."""
    try:
        return measure(call, runs, warmup, device, method)
    except Exception as exc:  # noqa: BLE001 - e.g. a trace that cannot run at this batch size
        return {"error": describe(exc)}

