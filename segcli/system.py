"""What we ran on and how much memory it took, for run folders, tables and benchmarks."""

from __future__ import annotations

import importlib.util
import os
import platform
import resource
import sys
from pathlib import Path

from segcli.backend import BACKEND_ENV


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


def cpu_line() -> str:
    """This CPU as the results tables name it: model, cores, native bf16 flags."""
    flags = sorted(cpu_flags() & {"amx_bf16", "avx512_bf16"})
    return f"{cpu_name()}, {os.cpu_count()} cores, {', '.join(flags) if flags else 'no native bf16'}"


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


EXIT_PARENT_GONE = 129  # end_with_parent's exit status (128 + SIGHUP: what a process gets when its terminal goes)


def end_with_parent(lifeline_fd: int) -> None:
    """In a child process: exit (EXIT_PARENT_GONE) as soon as the parent ends, however it ends (kill -9 too).
    ``lifeline_fd`` is the read end of a pipe whose only write end the parent holds and never writes to (not
    inherited by anyone else); the kernel closes it when the parent ends, and a daemon thread blocked on a read
    then gets end-of-file. Call it first, before the imports that take seconds.

    Why not prctl(PR_SET_PDEATHSIG): it is Linux-only; it fires when the *thread* that started the child ends,
    not the process; and a parent that dies before the child has set it (during the child's start-up) is
    missed unless the child also compares getppid. The pipe has none of these gaps and needs no polling."""
    import threading

    def watch():
        try:
            while os.read(lifeline_fd, 1):
                pass
        except OSError:  # not a pipe that can be read: nothing to watch (the child's work goes on)
            return
        os._exit(EXIT_PARENT_GONE)  # nobody waits for this child any more: no cleanup that could hang

    threading.Thread(target=watch, name="segcli-parent-watch", daemon=True).start()


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


COMPILE_CACHE_ENV = "SEGCLI_JAX_CACHE"  # a folder for JAX's compiled programs, or "off"
COMPILE_CACHE_MAX_BYTES = 2 << 30  # JAX deletes the least recently used programs beyond this


def machine_fingerprint() -> str:
    """A short digest of what compiled CPU code depends on: the CPU (vendor, family, model, part and feature
    flags, of /proc/cpuinfo's first processor, x86 or ARM), the architecture and jaxlib's version, so that a
    home folder shared by different machines never hands one machine's code to another."""
    import hashlib
    from importlib import metadata

    keys = ("vendor_id", "cpu family", "model", "model name", "flags", "CPU implementer", "CPU architecture",
            "CPU variant", "CPU part", "Features")
    try:
        jaxlib = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        jaxlib = "?"
    found = {key: value for key in keys if (value := _cpuinfo(key)) is not None}
    text = "\n".join([platform.machine(), platform.processor(), jaxlib, *(f"{k}={v}" for k, v in found.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def keep_compiled_programs() -> Path | None:
    """On the jax backend, keep the programs XLA compiles in a folder on disk, and load them in later runs.

    JAX compiles every program it runs, down to each variable initializer of a model being built or loaded:
    dozens of compilations of a second or more each on a small CPU, in every `segcli predict` or `train`. Its
    persistent compilation cache keeps them (those that took 0.1 s or more to compile): the second `predict` of
    a model on jax then takes seconds instead of a minute. The folder is SEGCLI_JAX_CACHE if set ("off": no
    cache), else $XDG_CACHE_HOME/segcli/jax/<this machine's fingerprint> (~/.cache when XDG_CACHE_HOME is
    unset), at most COMPILE_CACHE_MAX_BYTES where the filelock package is there (JAX's eviction needs it);
    JAX's own JAX_COMPILATION_CACHE_DIR, when set, is left as it is. Set as environment variables, so child
    processes (compare, bench) share it. Nothing on the other backends; returns the folder (None: none).
    """
    if os.environ.get(BACKEND_ENV) != "jax":
        return None
    own = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if own:
        return Path(own)
    setting = os.environ.get(COMPILE_CACHE_ENV, "")
    if setting.lower() == "off":
        return None
    if setting:
        folder = Path(setting).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path(os.path.expanduser("~")) / ".cache")
        folder = Path(base) / "segcli" / "jax" / machine_fingerprint()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: compile every time, as JAX does by default
    values = {"jax_compilation_cache_dir": str(folder), "jax_persistent_cache_min_compile_time_secs": 0.1}
    if importlib.util.find_spec("filelock") is not None:  # JAX's size limit (LRU eviction) needs it
        values["jax_compilation_cache_max_size"] = COMPILE_CACHE_MAX_BYTES
    for key, value in values.items():
        os.environ.setdefault(key.upper(), str(value))  # the user's own size or time limit stays
    if "jax" in sys.modules:  # too late for the variables in this process
        import jax

        for key, value in values.items():
            jax.config.update(key, type(value)(os.environ[key.upper()]))
    return folder
