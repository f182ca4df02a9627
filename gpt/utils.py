"""Small helpers shared by scripts, notebooks and tests: seeding, devices, dtypes, progress bars."""

from __future__ import annotations

import codecs
import contextlib
import functools
import json
import math
import os
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def utf8_stdio() -> None:
    """Make stdout and stderr write UTF-8 whatever the locale or console encoding (PYTHONIOENCODING=cp1252 on a
    Windows console, LC_ALL=C's ASCII): messages ("→", "·") and GPT-2's text hold any character. A character
    UTF-8 cannot write (a lone surrogate) comes out as the argv bytes it stands for, or as a backslash escape.
    Every script in scripts/ and bench/ calls this first.
    Both are line-buffered too: into a file or a pipe (`nohup … > log`, `| tee log`), Python would otherwise hold
    ~8 KB of stdout back — for a training run, hundreds of steps of log lines that `tail -f` cannot show.
    And stderr becomes a Diagnostics, which cannot fail."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):  # a TextIOWrapper (not a notebook's or a test's replacement stream)
            stream.reconfigure(encoding="utf-8", errors="gpt-utf8-out", line_buffering=True)
    if not isinstance(sys.stderr, Diagnostics):
        sys.stderr = Diagnostics(sys.stderr)


def to_null_device(stream) -> None:
    """Point the file descriptor under `stream` at the null device: what is buffered or written later vanishes."""
    with contextlib.suppress(OSError, ValueError):  # (a stream without a descriptor: a test's capture)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)


class Diagnostics:
    """sys.stderr for scripts: logs, warnings and progress bars whose reader went away — `2>&1 | tee log` and tee was
    killed, the terminal was closed — must not end the work they report on (an evaluation, a data preparation, a
    training run). The first write or flush that fails (BrokenPipeError, EIO) sends the rest to the null device.
    Everything else is the wrapped stream's (isatty, fileno, encoding…)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError:
            to_null_device(self._stream)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            to_null_device(self._stream)

    def __getattr__(self, name):
        if name == "_stream":  # (not set yet: copy/pickle probe a fresh instance)
            raise AttributeError(name)
        return getattr(self._stream, name)


def _bytes_back_or_escape(err: UnicodeEncodeError):
    """The error handler of utf8_stdio: a path or argument decoded with surrogateescape (argv under a C locale)
    is written back as the bytes it came from, so "→" prints as "→"; any other unwritable character as \\uXXXX."""
    try:
        return codecs.lookup_error("surrogateescape")(err)
    except UnicodeError:
        return codecs.lookup_error("backslashreplace")(err)


codecs.register_error("gpt-utf8-out", _bytes_back_or_escape)


def run_script(main) -> None:
    """A script's entry point: utf8_stdio(), then sys.exit(main()). Ctrl-C (while loading, say: pretrain.py's
    loop has its own handler that saves a checkpoint) ends in one line and exit code 130, not a traceback.
    A reader that stopped reading (`generate.py … | head`) ends it quietly with 141, as it ends `yes | head`'s yes
    (128 + SIGPIPE); the rest of stdout goes to the null device, so Python's exit-time flush cannot complain."""
    utf8_stdio()
    try:
        code = main()
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C)", file=sys.stderr)
        code = 130
    except SystemExit as e:  # argparse's --help and usage errors: their output is flushed below too
        code = e.code
    except BrokenPipeError:
        code = 141  # 128 + SIGPIPE (13), which Windows lacks
    try:
        sys.stdout.flush()  # here, not in Python's exit, where a failure prints "Exception ignored…" and exits 120
    except OSError:  # the reader went away after the last write (`--help | true`)
        code = code or 141
        to_null_device(sys.stdout)
    sys.exit(code)


def utf8_text(value: str | bytes, what: str) -> str:
    """value as text (a leading UTF-8 byte-order mark dropped), or a ValueError naming `what` when it is not UTF-8:
    bytes (e.g. stdin) are decoded strictly;
    a str from argv carries each undecodable byte as a lone surrogate (PEP 383), which no encoder can write later."""
    raw = os.fsencode(value) if isinstance(value, str) else value  # a str: the bytes it was decoded from
    try:
        return raw.decode("utf-8-sig")  # -sig: a leading byte-order mark (Notepad's) is not text
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{what} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); convert it to UTF-8 first, "
            "e.g. with iconv -f latin1 -t utf-8"
        ) from None


def set_seed(seed: int) -> None:
    """Seed every generator a run touches: Python, NumPy, torch CPU and all CUDA devices."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    torch.cuda.manual_seed_all(seed)


def mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def get_device(name: str = "auto") -> torch.device:
    """'auto' → cuda if available, else mps, else cpu. An explicit device that is not usable raises a ValueError
    that says why, instead of failing later inside a kernel."""
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available in this PyTorch ({torch.__version__})")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")
    if device.type == "mps" and not mps_available():
        raise ValueError("device 'mps' asked for, but Apple's MPS backend is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def get_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[name]


_YES, _NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_flag(name: str) -> bool | None:
    """A yes/no switch from the environment variable `name`: True for 1/true/yes/on, False for 0/false/no/off (any
    case, spaces ignored), None where it is unset or empty — the caller's own choice then. Any other value is
    ignored (None) after one "warning:" line on stderr naming the values it takes."""
    value = os.environ.get(name, "").strip().lower()
    if value in _YES or value in _NO:
        return value in _YES
    if value:
        _warn_once(f"warning: {name}={os.environ[name]!r} is not a yes/no value ({'/'.join(_YES)} or "
                   f"{'/'.join(_NO)}); ignored")  # fmt: skip
    return None


@functools.cache
def _warn_once(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpuinfo(field: str, path: str | Path = "/proc/cpuinfo") -> str | None:
    """The first value of `field` ("vendor_id", "model name", "flags") in /proc/cpuinfo, stripped: "" where no line
    has it, None where there is no such file (macOS, Windows)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return None
    m = re.search(rf"^{re.escape(field)}\s*:(.*)$", text, re.M)
    return m.group(1).strip() if m else ""


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo ("avx2", "avx512_bf16", "amx_tile", ...; empty where none)."""
    return frozenset((cpuinfo("flags") or "").split())


def num_threads() -> int:
    """Threads torch uses for CPU ops (respects OMP_NUM_THREADS); reported in benchmarks."""
    return int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))


THREADS_ENV = "GPT_THREADS"  # CPU threads for scripts/pretrain.py and scripts/generate.py; overrides cpu_threads()
_THREAD_ENVS = (THREADS_ENV, "OMP_NUM_THREADS")  # the variables that choose the thread count, ours first


def cpu_threads(processes: int = 1, load: float | None = None, cpus: int | None = None) -> int:
    """Threads for each of `processes` processes doing CPU work: GPT_THREADS (or OMP_NUM_THREADS) when set, else
    the CPUs this process may run on (os.sched_getaffinity), less those other programs keep busy (busy_elsewhere()),
    shared among `processes`; at least 1. load (threads other programs keep running) / cpus: given, or read from
    the machine. Raises ValueError on a malformed GPT_THREADS / OMP_NUM_THREADS.

    Why: torch's OpenMP threads wait for each other at every op. With as many threads as cores beside another
    busy process, each op waits for whichever thread the OS has just descheduled, and a tiny training run fell
    from ≈3,000 to 200-500 tokens/s (issue 15); with threads only on the free cores it keeps about its fair share
    (bench/run.py --only threads measures both)."""
    for env in _THREAD_ENVS:
        forced = os.environ.get(env, "").strip()
        if forced:
            if not forced.isdigit() or int(forced) < 1:
                raise ValueError(f"{env} must be a whole number >= 1, got {forced!r}")
            return int(forced)
    cpus = usable_cpus() if cpus is None else cpus
    load = busy_elsewhere() if load is None else load
    free = cpus - int(load + 0.5)
    return max(1, min(cpus, free) // max(1, processes))


def busy_elsewhere(samples: int = 16, interval: float = 0.025) -> float:
    """Threads other programs keep running now: the kernel's count of runnable threads (/proc/loadavg's 4th field,
    "running/total"), less the one reading it, read `samples` times `interval` s apart (0.4 s); the second-highest
    reading, so that a program idle for part of the window still counts and one stray reading does not.
    Where there is no /proc (macOS): the 1-minute load average less this process's own part of it (own_load).
    Why not the load average alone: it lags a minute. A program that started 20 s ago hardly shows in it yet, and
    one that ended 20 s ago still does; and "load - 1 for ourselves" took a lone busy program (load 1.0) beside a
    run that had just started for the run itself, leaving it every core: 3× slower than one thread (issue 15,
    found by a fresh tester). Why lean high: a thread too many beside a busy program cost 60× in decoding (5 vs
    310 tokens/s), a thread too few at most 2×. The count is machine-wide: inside a container or taskset, the
    threads other containers run count too."""
    counts = []
    try:
        for i in range(samples):
            if i:
                time.sleep(interval)
            fields = Path("/proc/loadavg").read_text(encoding="ascii").split()
            counts.append(int(fields[3].split("/")[0]) - 1)  # minus this thread, running while it reads
        return float(max(0, sorted(counts)[-2] if len(counts) > 1 else counts[0]))
    except (OSError, ValueError, IndexError):
        if not hasattr(os, "getloadavg"):
            return 0.0
        return max(0.0, os.getloadavg()[0] - own_load())


def own_load(cpu_seconds: float | None = None, age_seconds: float | None = None) -> float:
    """This process's part of the 1-minute load average: its threads kept busy on average (CPU seconds / age),
    weighted as the kernel's exponentially-decaying 1-minute average weights a process `age` seconds old
    (1 - e^(-age/60)). cpu_seconds / age_seconds: given, or this process's (time.process_time; the time since this
    module was imported, which counts the CPU of the imports before it against a slightly shorter age)."""
    cpu = time.process_time() if cpu_seconds is None else cpu_seconds
    age = time.monotonic() - _IMPORTED if age_seconds is None else age_seconds
    if age <= 0:
        return 0.0
    return cpu / age * (1.0 - math.exp(-age / 60.0))


_IMPORTED = time.monotonic()  # own_load's clock: busy_elsewhere falls back on it only where there is no /proc


def usable_cpus() -> int:
    """The CPUs this process may run on (os.sched_getaffinity; os.cpu_count where there is none, e.g. macOS)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def shared_machine_note(
    threads: int, processes: int = 1, cpus: int | None = None, split: tuple[int, int | None] | None = None
) -> str | None:
    """A line for a CPU training run about its share of the machine, or None when there is nothing to say:
    - one process that cpu_threads() gave fewer threads than it has CPUs (other programs keep the rest busy): that
      data-parallel processes keep more of a shared machine — with the torchrun command when `split` = (processes,
      batch size, or None where the run's own splits) says how the run's step splits (gpt.train.data_parallel_split);
    - more processes on this machine (`processes`, torchrun's LOCAL_WORLD_SIZE) than CPUs: they take turns; fewer
      (`split`'s) train faster.
    Nothing when GPT_THREADS / OMP_NUM_THREADS chose (torchrun sets OMP_NUM_THREADS, so only the second applies).
    Why: OpenMP threads meet after every op, data-parallel processes once a step; beside a 2-thread program on 2
    cores the tiny run kept 38-42% of its best quiet speed in 1 thread, 52-70% as `torchrun --nproc-per-node 2`
    (bench/threads.py; bench/results/cpu-amd-epyc-zen5-avx512bf16-2t.md, 2-core AMD EPYC; issue 15)."""
    cpus = usable_cpus() if cpus is None else cpus
    procs, batch = split or (0, None)
    batch_flag = f" --batch-size {batch}" if batch else ""
    if processes > cpus:
        fix = f"; --nproc-per-node {procs}{batch_flag} trains faster" if split else ""
        return f"cpu: {processes} processes on {cpus} CPUs take turns at every gradient all-reduce{fix}"
    if processes > 1 or threads >= cpus or any(os.environ.get(e, "").strip() for e in _THREAD_ENVS):
        return None
    note = f"cpu threads: {threads} of {cpus}, as other programs keep the rest busy ({THREADS_ENV}=N chooses)"
    if split:
        note += ("; beside a busy program one process per core trains faster: torchrun --standalone --nproc-per-node "
                 f"{procs} scripts/pretrain.py <these arguments>{batch_flag} (README: CPU threads)")  # fmt: skip
    return note


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory of freed tensors for the next ones, instead of handing it back to the
    kernel at once: True where that was set (Linux with glibc), False elsewhere (macOS, Windows, musl: unchanged).

    glibc serves every block over 32 MB (M_MMAP_THRESHOLD's ceiling) with a fresh mmap and unmaps it on free, so a
    CPU training step that makes the same (B·T, 50304) logits or gradient each step (206 MB at 1,024 tokens) pays
    a page fault per 4 KB page of it again and again: filling a fresh 206 MB tensor took 70 ms where a reused one
    took 9 (2-core AMD EPYC Zen 3, torch 2.13), and the tiny run trained ≈ 15% faster without those faults. This
    raises the mmap threshold and the trim threshold (mallopt(3); what MALLOC_MMAP_THRESHOLD_ and
    MALLOC_TRIM_THRESHOLD_ do from the environment, and what jemalloc or tcmalloc preloaded would do). The heap
    settles within a few steps (a freed block can be a few bytes short of the next aligned request), then a step
    reuses freed memory as it is. Cost: the process keeps what it freed until it exits (the tiny run's peak RSS:
    799 MB against 750). Process-wide: scripts/pretrain.py calls it for a CPU run."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl (Alpine) has no libc.so.6 / mallopt
        return False
    m_trim_threshold, m_mmap_threshold, int_max = -1, -3, 2**31 - 1  # <malloc.h>
    return bool(mallopt(m_trim_threshold, int_max)) and bool(mallopt(m_mmap_threshold, int_max))


def progress_bar(**kwargs):
    """A tqdm bar: the notebook widget inside Jupyter when ipywidgets is installed, otherwise the text bar (which
    also works in Jupyter). tqdm.auto alone would print a TqdmWarning in a notebook without ipywidgets."""
    try:
        import ipywidgets  # noqa: F401
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm import tqdm
    return tqdm(**kwargs)


def read_json(path):
    """The JSON value in a UTF-8 file; a truncated or garbled file (what a crash or a cut download leaves) is a
    ValueError naming the file, not a bare JSONDecodeError."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise ValueError(f"{path} is not valid JSON ({e}); it may be truncated: write or download it again") from None


def atomic_write_text(path, text: str) -> None:
    """Write UTF-8 text to `path` through a temp file + os.replace: a crash leaves the old file or the new one,
    never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def output_file_problem(path) -> str | None:
    """Why a file cannot be written at `path` — a directory is there, or a parent is a file — or None; for
    checking an output flag before hours of work are lost to it."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a directory; name a file (e.g. {path / path.name}.json)"
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"{existing} is a file, so {path} cannot be created under it"
    return None


def fsync_path(path) -> None:
    """Flush a file's or a directory's contents to disk (for a directory: the renames done in it), so that an
    atomic write survives a power cut, not only a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
