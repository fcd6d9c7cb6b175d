"""Scaling curves (issue 5 item 4): μs/sample against T, batch and hidden size, fp32 and bf16, peers included.

Each axis is swept with the other two at the paper's shape (batch 128, T 784, hidden 256). The full grid is
meant for a GPU (T 64…8192, batch 1…512, hidden 64…1024); on a CPU `--quick` (the default there) keeps the
sweep to minutes with a reduced grid and says so in the output. Rows go to a long-format CSV in
./tritonrnn-results/ (--out-dir to choose), and a PNG per model is drawn from it.
"""
from __future__ import annotations

import argparse
import sys

import torch

from .papers_table import PAPER_SHAPE, default_providers, measure_pair
from .results_io import (OUT_DIR, OUT_DIR_HELP, add_threads_option, append_rows, apply_threads_option, environment,
                         pyplot, result_path, save_figure)

FULL = {"seq_len": [64, 256, 784, 2048, 8192], "batch": [1, 8, 32, 128, 512], "hidden_size": [64, 128, 256, 512, 1024]}
QUICK = {"seq_len": [64, 256, 784], "batch": [1, 16, 128], "hidden_size": [64, 128, 256]}
QUICK_BASE = dict(batch=32, seq_len=128, hidden_size=128)  # CPU: a smaller base shape keeps each point short


def sweep(models, providers, *, device, dtypes, grid, base, iters, warmup, out_dir=OUT_DIR, log=print):
    env = environment(device)
    csv_path = result_path(out_dir, "scaling", env)
    rows = []
    for dtype in dtypes:
        for axis, values in grid.items():
            for value in values:
                shape = {**PAPER_SHAPE, **base, axis: value}
                for model in models:
                    for provider in providers:
                        got = measure_pair(model, provider, shape, device=device, dtype=dtype, iters=iters,
                                           warmup=warmup, env=env, suite=f"scaling:{axis}", log=log,
                                           tag=f"{axis}={value} {str(dtype)[6:]}")
                        rows.extend(got)
                        append_rows(csv_path, got)
    return csv_path, plot(rows, csv_path[:-4] + ".png", env)


def plot(rows, path, env):
    plt = pyplot()
    if plt is None:
        return None
    axes_names = list(dict.fromkeys(r["suite"].split(":")[1] for r in rows))
    if not axes_names:
        return None
    fig, axes = plt.subplots(1, len(axes_names), figsize=(5 * len(axes_names), 4), squeeze=False)
    for ax, axis in zip(axes[0], axes_names):
        sel = [r for r in rows if r["suite"] == f"scaling:{axis}" and r["mode"] == "train"]
        for key in dict.fromkeys((r["model"], r["provider"], r["dtype"]) for r in sel):
            pts = sorted((int(r[axis]), float(r["p50_us_per_sample"])) for r in sel
                         if (r["model"], r["provider"], r["dtype"]) == key)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=" ".join(key))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(axis)
        ax.set_ylabel("train μs / sample (p50)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"scaling — {env['device']}")
    return save_figure(plt, fig, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tritonrnn.perf.scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="LSTM,MomentumLSTM,AdamLSTM")
    parser.add_argument("--providers", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--full", action="store_true", help="the full grid (default on GPU)")
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    add_threads_option(parser)
    parser.add_argument("--out-dir", default=OUT_DIR, help=OUT_DIR_HELP)
    args = parser.parse_args(argv)
    apply_threads_option(parser, args)
    on_gpu = torch.device(args.device).type == "cuda"
    full = args.full or on_gpu
    grid, base = (FULL, {}) if full else (QUICK, QUICK_BASE)
    if not full:
        print(f"CPU quick grid {QUICK} around {QUICK_BASE} (the full grid {FULL} is for a GPU: --full)")
    providers = default_providers(args.device) if args.providers is None else args.providers.split(",")
    providers = [p for p in providers if p not in ("eager", "compiled")] if args.providers is None else providers
    csv_path, png = sweep(args.models.split(","), providers, device=torch.device(args.device),
                          dtypes=[getattr(torch, d) for d in args.dtypes.split(",")], grid=grid, base=base,
                          iters=args.iters or (20 if on_gpu else 2), warmup=args.warmup or (5 if on_gpu else 1),
                          out_dir=args.out_dir)
    print(f"wrote {csv_path}" + (f"\n      {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
