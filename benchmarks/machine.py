"""The machine, the load on it and the versions a report records; thread limits."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path

import torch

from . import rivals as R
from .config import clock_name

HERE = Path(__file__).resolve().parent


def _cmd(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _proc_field(path: str, key: str) -> str:
    """The value after ``key`` on its line of a /proc file ("" when absent)."""
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return ""


def machine_info(device: str) -> dict[str, str]:
    """CPU, memory, OS, threads, clock and device of this run."""
    cpu = _proc_field("/proc/cpuinfo", "model name")
    mem_kb = _proc_field("/proc/meminfo", "MemTotal").split()
    clock = clock_name()
    info = {
        "cpu": f"{cpu or platform.processor()} ({os.cpu_count()} logical cores)",
        "memory": f"{int(mem_kb[0]) / 1024**2:.1f} GiB" if mem_kb else "",
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch threads": str(torch.get_num_threads()),
        "clock": clock + (" (process CPU time)" if clock == "cpu" else " (elapsed time)"),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def load_snapshot() -> str:
    """Load average and the busiest other processes, to judge the numbers."""
    try:
        la = os.getloadavg()
        load = f"load average {la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f}"
    except OSError:
        load = "load average unknown"
    busy = []
    me = str(os.getpid())
    for line in _cmd(["top", "-bn1", "-w", "160"]).splitlines():
        parts = line.split()
        if len(parts) >= 12 and parts[0].isdigit() and parts[0] != me:
            with contextlib.suppress(ValueError):
                if float(parts[8]) >= 10.0:
                    busy.append(f"pid {parts[0]} {parts[11]} {parts[8]}% CPU")
    return load + ("; other busy processes: " + ", ".join(busy[:6]) if busy else "; no other busy process")


def versions(libraries: dict[str, str]) -> dict[str, str]:
    """Versions of Python, torch, timm, numpy, explainzoo (and its commit) and the rivals."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("timm", "numpy", "explainzoo"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    for lib in R.LIBRARIES:
        out[lib] = libraries.get(lib, "not installed")
    commit = _cmd(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"])
    if commit:
        dirty = _cmd(["git", "-C", str(HERE.parent), "status", "--porcelain", "--", "explainers", "backbones"])
        out["explainzoo commit"] = commit + (" + uncommitted changes in explainers/backbones" if dirty else "")
    return out


def limit_threads(n: int) -> None:
    """Every thread pool of the process to ``n``.

    torch's, BLAS/OpenMP's (numpy, used by pytorch-grad-cam's Eigen-CAM) and
    OpenCV's (its resize), so no library gets more cores than another.
    """
    torch.set_num_threads(n)
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    with contextlib.suppress(ImportError, AttributeError):
        import cv2

        cv2.setNumThreads(n)
