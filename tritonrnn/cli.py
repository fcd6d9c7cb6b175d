"""The command line: `python -m tritonrnn [train|bench|check] ...` (no subcommand: `train` with its defaults).

- train: trains each cell on the same data stream of a long-term dependency task with the same optimizer,
  prints a comparison table (final loss and metric, steps to a threshold, μs/sample) and saves the learning
  curves as CSV and PNG. The default run finishes in about three minutes on a 2-core CPU.
  `--model` / `--cells` takes the snake-case names below or the class names (MomentumOrthogonalRNN, IndRNN, ...).
  Orthogonal (DTRIV) cores: the orthogonal parameter trains at --orthogonal-lr (default lr/10, DTRIV's
  1e-3 / 1e-4), with a change of base (rebase_()) every --rebase-every steps (default never: expRNN).
  IndRNN cores: recurrent_max (default 2^(1/T)) and clip_recurrent_weights_() after every optimizer step.
- bench: the papers' μs/sample table (tritonrnn.perf.papers_table) on the available device.
- check: every Triton kernel (scans, LSTM / RNN / modReLU / Nesterov / momentum-LSTM recurrences, IndRNN,
  the optimizers' multi-tensor kernels) against the torch path on this machine (Triton's interpreter on
  CPU, the compiled kernels on a GPU) with a one-screen verdict (tritonrnn.selfcheck, KERNEL_CASES).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

# Names on the command line → module classes (SPEC §1.2 families; the orthogonal and IndRNN cores of issue #8).
# The class names themselves (e.g. MomentumOrthogonalRNN) are accepted too.
CELLS = {
    "lstm": "LSTM", "momentum_lstm": "MomentumLSTM", "sr_lstm": "SRLSTM", "adam_lstm": "AdamLSTM",
    "rmsprop_lstm": "RMSPropLSTM", "nesterov_lstm": "NesterovLSTM",
    "rnn": "RNN", "momentum_rnn": "MomentumRNN", "sr_rnn": "SRRNN", "adam_rnn": "AdamRNN", "rmsprop_rnn": "RMSPropRNN",
    "orthogonal_rnn": "OrthogonalRNN", "momentum_orthogonal_rnn": "MomentumOrthogonalRNN",
    "sr_orthogonal_rnn": "SROrthogonalRNN", "adam_orthogonal_rnn": "AdamOrthogonalRNN",
    "rmsprop_orthogonal_rnn": "RMSPropOrthogonalRNN",
    "indrnn": "IndRNN", "momentum_indrnn": "MomentumIndRNN", "sr_indrnn": "SRIndRNN", "adam_indrnn": "AdamIndRNN",
    "rmsprop_indrnn": "RMSPropIndRNN",
}
_CLASS_TO_CELL = {cls.lower(): key for key, cls in CELLS.items()}
OPTIMIZERS = ("rmsprop", "adam", "srsgd", "nag", "frank_wolfe")
OPTIMIZER_ALIASES = {"frankwolfe": "frank_wolfe", "frank-wolfe": "frank_wolfe", "fw": "frank_wolfe"}
DEFAULT_LR = {"rmsprop": 1e-3, "adam": 1e-3, "srsgd": 0.05, "nag": 0.01, "frank_wolfe": 1e-3}
# DTRIV trains the orthogonal parameter with a 10× smaller learning rate (RMSprop 1e-3 / 1e-4 on MNIST).
ORTHOGONAL_LR_RATIO = 0.1


def cell_key(name: str):
    """The CELLS key for a command-line name (a key or a class name, any case), or None."""
    key = name.strip()
    if key in CELLS:
        return key
    return _CLASS_TO_CELL.get(key.lower(), key.lower() if key.lower() in CELLS else None)


def is_orthogonal(cell: str) -> bool:
    return "orthogonal" in cell


def is_indrnn(cell: str) -> bool:
    return cell.endswith("indrnn")


def _train_parser(sub):
    p = sub.add_parser("train", help="train cells on a long-term dependency task and compare them")
    p.add_argument("--task", default="adding",
                   help="adding | multiplication | copying | memorization | digits | permuted_digits (alias pdigits)")
    p.add_argument("--cells", "--model", "--models", dest="cells",
                   default="lstm,momentum_lstm,sr_lstm,adam_lstm,rmsprop_lstm",
                   help="comma-separated, from: " + ", ".join(CELLS)
                   + " (or the class names, e.g. MomentumOrthogonalRNN)")
    p.add_argument("--optimizer", default="rmsprop", type=lambda v: OPTIMIZER_ALIASES.get(v.lower(), v.lower()),
                   choices=OPTIMIZERS, help="rmsprop | adam | srsgd | nag | frank_wolfe (alias frankwolfe)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default per optimizer)")
    p.add_argument("--orthogonal-lr", type=float, default=None,
                   help="orthogonal cores: learning rate of the orthogonal (U) parameter (default lr/10, as DTRIV)")
    p.add_argument("--rebase-every", type=int, default=0,
                   help="orthogonal cores: DTRIV change of base (rebase_()) every K optimizer steps (0: never, expRNN)")
    p.add_argument("--recurrent-max", type=float, default=None,
                   help="IndRNN cores: bound on |w| (default 2^(1/T), the IndRNN paper's for relu; 0: none); "
                        "w is clipped back after every optimizer step")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=60, help="sequence length for the synthetic tasks")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--threshold", type=float, default=None,
                   help="metric level for 'steps to threshold' (default: half of chance MSE, or 2× chance accuracy)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="auto", choices=("auto", "triton", "torch"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads(N) first (on a shared CPU, 1 avoids OpenMP oversubscription stalls)")
    p.add_argument("--out", default=None, help="output folder (default runs/train-<task>-<time>)")
    p.add_argument("--no-plot", action="store_true")
    return p


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tritonrnn", description="tritonrnn: momentum-family RNN kernels")
    sub = parser.add_subparsers(dest="command")
    _train_parser(sub)
    b = sub.add_parser("bench", help="the papers' μs/sample table on the available device", add_help=False)
    b.add_argument("args", nargs=argparse.REMAINDER)
    c = sub.add_parser("check", help="every Triton kernel (scans, recurrences incl. modReLU, IndRNN, optimizers) "
                                     "against the torch paths on this machine")
    c.add_argument("--quick", action="store_true", help="fp32 only and smaller shapes (B 2, T 37, H 8)")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["train", *argv]
    if argv and argv[0] == "bench":
        from .perf.papers_table import main as bench_main
        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "check":
        from .selfcheck import main as check_main
        return check_main(quick=args.quick)
    if args.command == "train":
        return train(args)
    build_parser().print_help()
    return 0


# --------------------------------------------------------------------------------------------------------
def _make_optimizer(name, params, lr, backend="auto"):
    """`params`: parameters or param groups (a group may carry its own lr). `backend` is the cells' choice:
    "torch" gives tritonrnn's optimizers their foreach path, "triton" their kernels, "auto" their default."""
    import torch

    from . import optim

    kw = {"backend": {"torch": "foreach"}.get(backend, backend)}
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "srsgd":
        return optim.SRSGD(params, lr=lr, restart=[(200, 10), (10**9, 20)], **kw)
    if name == "nag":
        return optim.NAG(params, lr=lr, momentum=0.99, schedule="sutskever", **kw)
    return optim.FrankWolfe(params, lr=lr, radius=0.1, inner_steps=1, **kw)


def _progress(prefix, done, total, extra=""):
    width = 28
    filled = int(width * done / max(total, 1))
    sys.stdout.write(f"\r{prefix} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {extra}   ")
    sys.stdout.flush()
    if done == total:
        sys.stdout.write("\n")


def train(args) -> int:
    import torch
    from torch import nn

    import tritonrnn

    from .tasks import make_task

    names = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in names if cell_key(c) is None]
    if unknown:
        raise SystemExit(f"--cells: unknown {unknown}; choose from {list(CELLS)} (or their class names)")
    cells = list(dict.fromkeys(cell_key(c) for c in names))
    for name, value in (("--steps", args.steps), ("--batch", args.batch), ("--hidden", args.hidden),
                        ("--eval-every", args.eval_every), ("--seq-len", args.seq_len)):
        if value < 1:
            raise SystemExit(f"{name} must be >= 1, got {value}")
    if args.rebase_every < 0:
        raise SystemExit(f"--rebase-every must be >= 0, got {args.rebase_every}")
    if args.recurrent_max is not None and not args.recurrent_max >= 0:
        raise SystemExit(f"--recurrent-max must be >= 0, got {args.recurrent_max}")
    if args.orthogonal_lr is not None and not args.orthogonal_lr > 0:
        raise SystemExit(f"--orthogonal-lr must be > 0, got {args.orthogonal_lr}")
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    synthetic = args.task in ("adding", "multiplication", "memorization", "memorisation")
    task_kwargs = {"seq_len": args.seq_len} if synthetic else {}
    if args.task == "copying":
        task_kwargs = {"delay": args.seq_len}
    task = make_task(args.task, device=device, **task_kwargs)
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    orthogonal_lr = args.orthogonal_lr if args.orthogonal_lr is not None else lr * ORTHOGONAL_LR_RATIO
    if args.recurrent_max is None:
        recurrent_max = 2.0 ** (1.0 / task.seq_len)
    else:
        recurrent_max = args.recurrent_max or None
    if args.threshold is not None:
        threshold = args.threshold
    else:
        threshold = task.chance / 2 if not task.higher_is_better else min(1.0, 2 * task.chance)
    better = (lambda m: m >= threshold) if task.higher_is_better else (lambda m: m <= threshold)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = args.out or os.path.join("runs", f"train-{args.task}-{stamp}")
    os.makedirs(out_dir, exist_ok=True)

    # held-out data: a seed the training stream never uses, and the test split where the task has one
    held_out = {"split": "test"} if hasattr(task, "split_size") else {}
    eval_x, eval_y = task.sample(256, generator=args.seed + 10_000, **held_out)
    print(f"task {args.task}: input {task.input_size}, output {task.output_size}, T = {task.seq_len}; "
          f"{task.metric_name} at chance = {task.chance:.4f}; threshold {threshold:.4f}")
    print(f"optimizer {args.optimizer} (lr {lr}), {args.steps} steps of batch {args.batch}, hidden {args.hidden}, "
          f"device {device}, backend {args.backend}")
    if any(is_orthogonal(c) for c in cells):
        print(f"orthogonal cores: U at lr {orthogonal_lr}, change of base "
              + (f"every {args.rebase_every} steps" if args.rebase_every else "never (expRNN)"))
    if any(is_indrnn(c) for c in cells):
        print("IndRNN cores: " + (f"recurrent_max {recurrent_max:.6g}, w clipped after every step"
                                  if recurrent_max else "no recurrent_max"))
    curves, summary = [], []
    for cell in cells:
        torch.manual_seed(args.seed)
        extra = {"recurrent_max": recurrent_max} if is_indrnn(cell) else {}
        body = getattr(tritonrnn, CELLS[cell])(task.input_size, args.hidden, backend=args.backend, **extra)
        head = nn.Linear(args.hidden, task.output_size)
        model = nn.ModuleDict({"body": body, "head": head}).to(device)

        def predict(x):
            return model["head"](task.readout(model["body"](x)[0]))

        opt = _make_optimizer(args.optimizer, param_groups(model, orthogonal_lr), lr, args.backend)
        after_step = _after_step(body, args.rebase_every)
        g = torch.Generator().manual_seed(args.seed)   # the same data stream for every cell
        reached, train_time, loss = None, 0.0, float("nan")
        for step in range(1, args.steps + 1):
            x, y = task.sample(args.batch, generator=g)
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss_t = task.loss(predict(x), y)
            loss_t.backward()
            opt.step()
            after_step(step)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_time += time.perf_counter() - t0
            loss = float(loss_t.detach())
            if step % args.eval_every == 0 or step == args.steps:
                with torch.no_grad():
                    metric = task.metric(predict(eval_x), eval_y)
                curves.append({"cell": cell, "step": step, "train_loss": loss, task.metric_name: metric})
                if reached is None and better(metric):
                    reached = step
                _progress(f"{cell:13s}", step, args.steps, f"loss {loss:.4f} {task.metric_name} {metric:.4f}")
        summary.append({"cell": cell, "loss": loss, "metric": curves[-1][task.metric_name], "reached": reached,
                        "us_per_sample": train_time / (args.steps * args.batch) * 1e6})

    _write_curves(os.path.join(out_dir, "curves.csv"), curves, task.metric_name)
    print()
    print(f"| cell | final train loss | eval {task.metric_name} | steps to {threshold:.4f} | train μs/sample |")
    print("|---|---|---|---|---|")
    for s in summary:
        reached = s["reached"] if s["reached"] is not None else f"> {args.steps}"
        print(f"| {s['cell']} | {s['loss']:.4f} | {s['metric']:.4f} | {reached} | {s['us_per_sample']:.1f} |")
    print(f"(chance {task.metric_name} {task.chance:.4f}; {device}, backend {args.backend})")
    print(f"curves: {os.path.join(out_dir, 'curves.csv')}")
    if not args.no_plot:
        png = _plot(out_dir, curves, task, threshold)
        print(f"plot:   {png}" if png else "plot:   skipped (pip install matplotlib)")
    return 0


def param_groups(model, orthogonal_lr):
    """All parameters in one group, except the orthogonal cores' unconstrained U parameters
    (`parametrizations.weight_hh_l*.original`), which get `orthogonal_lr` (DTRIV's two learning rates)."""
    orth, rest = [], []
    for name, p in model.named_parameters():
        (orth if ".parametrizations.weight_hh" in f".{name}" and name.endswith(".original") else rest).append(p)
    return [{"params": rest}] + ([{"params": orth, "lr": orthogonal_lr}] if orth else [])


def _after_step(body, rebase_every):
    """What runs after each optimizer step: IndRNN's projection of w into [−recurrent_max, recurrent_max]
    (clip_recurrent_weights_, a no-op without recurrent_max) and the orthogonal cores' DTRIV change of base."""
    clip = getattr(body, "clip_recurrent_weights_", None)
    rebase = getattr(body, "rebase_", None) if rebase_every else None

    def after(step):
        if clip is not None:
            clip()
        if rebase is not None and step % rebase_every == 0:
            rebase()

    return after


def _write_curves(path, curves, metric_name):
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["cell", "step", "train_loss", metric_name])
        writer.writeheader()
        writer.writerows(curves)


# Per-model line styles: cells that do not learn sit on the same curve (LSTM, MomentumLSTM and SRLSTM at
# chance in the default run), so colour alone would hide all but the last one drawn. Each model gets its own
# (colour, line style, marker) triple (distinct for up to 40 models: lcm of the cycle lengths 10, 4, 8), and
# its markers sit on every len(models)-th point with its own offset, so coinciding curves show side by side.
_COLORS = [f"C{i}" for i in range(10)]
_LINESTYLES = ["-", "--", "-.", ":"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def line_style(index: int, n_models: int, n_points: int) -> dict:
    """matplotlib keyword arguments for the `index`-th of `n_models` curves of `n_points` points each."""
    every = max(1, min(n_models, n_points // 4))   # at least ~4 markers per curve
    return dict(color=_COLORS[index % len(_COLORS)], linestyle=_LINESTYLES[index % len(_LINESTYLES)],
                marker=_MARKERS[index % len(_MARKERS)], markevery=(index % every, every), markersize=5)


def _figure(plt, curves, task, threshold):
    """The learning-curves figure: train loss and the eval metric against the step, one styled line per model."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    cells = list(dict.fromkeys(c["cell"] for c in curves))
    for i, cell in enumerate(cells):
        pts = [c for c in curves if c["cell"] == cell]
        style = line_style(i, len(cells), len(pts))
        axes[0].plot([p["step"] for p in pts], [p["train_loss"] for p in pts], label=cell, **style)
        axes[1].plot([p["step"] for p in pts], [p[task.metric_name] for p in pts], label=cell, **style)
    axes[0].set_ylabel("train loss")
    axes[1].set_ylabel(f"eval {task.metric_name}")
    axes[1].axhline(task.chance, color="grey", ls=":", label="chance")
    axes[1].axhline(threshold, color="grey", ls="--", label="threshold")
    for ax in axes:
        ax.set_xlabel("step")
        ax.set_yscale("log" if task.kind == "regression" else "linear")
        ax.legend(fontsize=8)
    fig.suptitle(f"{task.name}, T = {task.seq_len}")
    return fig


def _plot(out_dir, curves, task, threshold):
    from .perf.results_io import pyplot, save_figure

    plt = pyplot()
    if plt is None:
        return None
    return save_figure(plt, _figure(plt, curves, task, threshold), os.path.join(out_dir, "curves.png"))
