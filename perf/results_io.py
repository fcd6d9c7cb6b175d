"""Long-format CSV rows for every measurement (one row per provider × shape × mode), with the environment
that produced them, so that tables and plots are always redrawn from files a real run wrote."""
from __future__ import annotations

import csv
import datetime
import os
import platform
import subprocess

import torch

from tritonrnn.kernels._ops import slug

# The checkout's committed results (perf/results/); runs write to OUT_DIR in the current directory unless
# asked (--out-dir perf/results), so a benchmark never dirties the source tree by default.
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
OUT_DIR = "tritonrnn-results"
OUT_DIR_HELP = (f"folder for the CSV / Markdown / PNG files (default ./{OUT_DIR}; perf/results is the checkout's "
                "committed set)")

FIELDS = ["timestamp", "commit", "device", "torch", "triton", "suite", "model", "provider", "mode",
          "dtype", "batch", "seq_len", "input_size", "hidden_size", "iters", "warmup",
          "p20_ms", "p50_ms", "p80_ms", "p20_us_per_sample", "p50_us_per_sample", "p80_us_per_sample",
          "first_call_ms", "peak_mem_mb", "saved_mb", "note"]


FLUSH_DENORMAL = []   # [True] once --flush-denormal is applied: the device name records it


def add_threads_option(parser) -> None:
    """--threads and --flush-denormal, the CPU settings a timing depends on."""
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU: torch.set_num_threads(N) first (the device name in the files records it); on a "
                             "shared, oversubscribed machine 1 thread avoids OpenMP barrier stalls")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="CPU: torch.set_flush_denormal(True) for every provider (the device name records it as ftz): "
                             "gradients that vanish through time fall below fp32's normal range, and x86 arithmetic "
                             "on subnormals is ~100x slower, which can dominate a long-T training row")


def apply_threads_option(parser, args) -> None:
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if getattr(args, "flush_denormal", False):
        if not torch.set_flush_denormal(True):
            parser.error("--flush-denormal: this CPU does not support flushing denormals")
        FLUSH_DENORMAL.append(True)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    flush = ", ftz" if FLUSH_DENORMAL else ""   # flush-to-zero: --flush-denormal
    return (f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} "
            f"threads{flush})")


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def environment(device: torch.device) -> dict:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "absent"
    return {"timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": commit(), "device": device_name(device), "torch": torch.__version__, "triton": triton_version}


def result_path(out_dir: str, suite: str, env: dict, ext: str = "csv") -> str:
    """<out_dir>/<suite>-<device>-<UTC time>.<ext>: one file per run, named after what produced it."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return os.path.join(out_dir, f"{suite}-{slug(env['device'])}-{stamp}.{ext}")


def append_rows(path: str, rows) -> None:
    """Append rows (dicts with FIELDS keys) to a CSV, writing the header for a new file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in FIELDS})


def read_rows(path: str):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is missing (plots are optional)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(plt, fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
