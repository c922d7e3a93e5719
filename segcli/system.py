"""What we ran on and how much memory it took, for run folders, tables and benchmarks."""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path


def _cpuinfo(field: str, cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """The value of the first ``field`` line of /proc/cpuinfo; None where there is none (macOS, no such line)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == field:
                return value.strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags ("avx2", "avx512_bf16", "amx_bf16", ...) from /proc/cpuinfo; empty where
    there is none (macOS, or an ARM CPU, whose line is "Features")."""
    return set((_cpuinfo("flags", cpuinfo) or "").split())


def gpu_names() -> list[str]:
    """The GPUs the Keras backend computes on, by name (imports the backend on the first call, not at import)."""
    from segcli.backend import gpu_names as backend_gpu_names

    return backend_gpu_names()


def gpu_available() -> bool:
    """Whether the backend sees a GPU: the one test behind every "auto" that differs with a GPU."""
    return bool(gpu_names())


def hardware_summary() -> str:
    gpus = gpu_names()
    if gpus:
        return f"{len(gpus)}x {gpus[0]}" if len(set(gpus)) == 1 else ", ".join(gpus)
    flags = cpu_flags()
    bf16 = "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else "no native bf16"
    return f"CPU: {cpu_name()}, {os.cpu_count()} cores, {bf16}"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux: VmHWM of /proc/self/status, this address space's own high-water mark. getrusage's ru_maxrss
    survives exec, so in a child process started by a big parent (compare, bench) it would report the
    parent's peak instead; it is the fallback elsewhere (KiB on Linux, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if platform.system() == "Darwin" else peak / 1024.0
