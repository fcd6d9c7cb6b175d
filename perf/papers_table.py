"""The MomentumRNN paper's timing table (SPEC §3), measured with its peers in one run.

Shape: pixel-by-pixel MNIST — batch 128, T = 784, input 1, hidden 256, one layer, Linear(256→10) on the last h,
cross-entropy, RMSprop(lr 1e-3, alpha 0.9). Training μs/sample = forward + backward + optimizer step;
evaluation μs/sample = forward under no_grad. Every provider is measured in the same process on the same data:
  tritonrnn:<backend>  the drop-in module with that backend (auto, triton on CUDA or under the interpreter, torch
                      on any device), or tritonrnn:identity-native: the torch module with Adam / RMSProp run by
                      the identity-native core (functional.layers.forced_path; KERNELS.md §2.6),
  torch.nn            torch.nn.LSTM / nn.RNN (cuDNN on GPU, the native kernels on CPU) — the plain-core peer, on
                      every row of its core (the momentum families' rows then read as a ratio to nn.LSTM),
  eager               the reference cell: a Python loop of torch ops, as the papers' code,
  compiled            torch.compile of that cell's step, looped in Python.
The orthogonal (DTRIV, modReLU) and IndRNN cores of issue #8 have no torch.nn / cuDNN form: their peers are the
eager and compiled reference cells only (core "rnn_modrelu" / "indrnn"). Their rows are measured at the same
shape; the orthogonal modules materialise U = exp(A) once per forward (inside the timed iteration, for every
provider, as the reference peers read the same U), and the IndRNN rows use recurrent_max = 2^(1/T) (the IndRNN
paper's bound for relu), clipped in the forward for every provider.
Run: `python -m tritonrnn.perf.papers_table [--models ...] [--rows SUBSTR,...] [--providers ...] [--iters N]
[--warmup N] [--batch B] [--seq-len T]` or `python -m tritonrnn bench ...`. A run at another shape than the
paper's is labelled "reduced shape" in its Markdown and its files are named papers_table_reduced-...
"""
from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from tritonrnn.testing import saved_for_backward_bytes

from .results_io import (OUT_DIR, OUT_DIR_HELP, add_threads_option, append_rows, apply_threads_option, environment,
                         pyplot, result_path, save_figure)
from .timing import measure

# (module class name, reference core, reference dynamics)
MODELS = {
    "LSTM": ("lstm", "plain"), "MomentumLSTM": ("lstm", "momentum"), "AdamLSTM": ("lstm", "adam"),
    "RMSPropLSTM": ("lstm", "rmsprop"), "SRLSTM": ("lstm", "restart"), "NesterovLSTM": ("lstm", "nesterov"),
    "RNN": ("rnn_tanh", "plain"), "MomentumRNN": ("rnn_tanh", "momentum"), "AdamRNN": ("rnn_tanh", "adam"),
    "RMSPropRNN": ("rnn_tanh", "rmsprop"), "SRRNN": ("rnn_tanh", "restart"),
    # issue #8 cores (tritonrnn.nn.cores): no torch.nn / cuDNN peer
    "OrthogonalRNN": ("rnn_modrelu", "plain"), "MomentumOrthogonalRNN": ("rnn_modrelu", "momentum"),
    "SROrthogonalRNN": ("rnn_modrelu", "restart"), "AdamOrthogonalRNN": ("rnn_modrelu", "adam"),
    "RMSPropOrthogonalRNN": ("rnn_modrelu", "rmsprop"),
    "IndRNN": ("indrnn", "plain"), "MomentumIndRNN": ("indrnn", "momentum"), "SRIndRNN": ("indrnn", "restart"),
    "AdamIndRNN": ("indrnn", "adam"), "RMSPropIndRNN": ("indrnn", "rmsprop"),
}
# Cores measured only against the reference peers (no torch.nn module computes them).
NO_TORCH_NN = {"rnn_modrelu": "torch.nn has no orthogonal (modReLU) RNN", "indrnn": "torch.nn has no IndRNN"}
# The paper's published figures (training, evaluation) in μs/sample, on an older GPU: orientation only.
PUBLISHED = {"LSTM": (6.18, 2.52), "MomentumLSTM": (7.43, 3.16), "AdamLSTM": (10.34, 4.07),
             "RMSPropLSTM": (9.94, 3.96), "SRLSTM": (8.34, 3.16)}
PAPER_SHAPE = dict(batch=128, seq_len=784, input_size=1, hidden_size=256, classes=10)
PROVIDERS = {
    "tritonrnn:triton": "the drop-in module on the Triton kernels (CUDA only)",
    "tritonrnn:torch": "the drop-in module on its torch path",
    "tritonrnn:auto": "the drop-in module with backend='auto' (the dispatcher's choice)",
    "tritonrnn:identity-native": "the torch module with Adam / RMSProp on the identity-native core",
    "torch.nn": "torch.nn.LSTM / nn.RNN (cuDNN on GPU, native on CPU): the plain-core peer of every row",
    "eager": "the reference cell, a Python loop of torch ops (as the papers' code)",
    "compiled": "torch.compile of the reference cell's step, looped in Python",
}
# Timed iterations by default (SPEC §3: >= 50 timed, >= 10 warm-up on GPU). On a CPU one paper-shape iteration
# takes seconds, so fewer; 10 keep p20/p80 from resting on single samples (3 gave p80 up to 6× p50).
DEFAULT_ITERS = {"cuda": 50, "cpu": 10}
DEFAULT_WARMUP = {"cuda": 10, "cpu": 2}
# p80/p50 above this is reported as a wide spread (a noisy machine, or too few iterations).
WIDE_SPREAD = 1.25


class Classifier(nn.Module):
    """An RNN body and Linear(H→classes) on the last output step, as in the paper's pixel-MNIST model."""

    def __init__(self, body: nn.Module, hidden_size: int, classes: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(hidden_size, classes)

    def forward(self, x):
        out = self.body(x)[0]
        return self.head(out[-1])


class ReferenceBody(nn.Module):
    """The eager reference cell over the parameters of a tritonrnn module (same weights, same math)."""

    def __init__(self, module: nn.Module, core: str, dynamics: str, step=None):
        super().__init__()
        self.module, self.core, self.dynamics, self.step = module, core, dynamics, step

    def forward(self, x):
        from tritonrnn.reference import recurrent_layer

        m = self.module
        # getattr, not named_parameters: the orthogonal core's weight_hh is a parametrization (U = exp(A),
        # materialised here once per forward as the module does), and IndRNN's w is read clipped to
        # recurrent_max as the module's forward reads it.
        w_hh = m._recurrent_weight("l0") if hasattr(m, "_recurrent_weight") else m.weight_hh_l0
        hyper = {k: getattr(m, k) for k in ("mu", "s", "beta", "eps", "restart") if hasattr(m, k)}
        kwargs = {} if self.step is None else {"step_fn": self.step}
        return recurrent_layer(x, m.weight_ih_l0, w_hh, getattr(m, "bias_ih_l0", None), getattr(m, "bias_hh_l0", None),
                               core=self.core, dynamics=self.dynamics, **hyper, **kwargs)


class Forced(nn.Module):
    """A module whose layers run one path of functional.layers (forced_path): how a dispatcher candidate that no
    `backend` names (identity-native) is measured through the module."""

    def __init__(self, module: nn.Module, path: str):
        super().__init__()
        self.module, self.path = module, path

    def forward(self, x):
        from tritonrnn.functional.layers import forced_path

        with forced_path(self.path):
            return self.module(x)


def module_kwargs(model_name: str, shape: dict) -> dict:
    """Constructor arguments beyond (input, hidden, backend): IndRNN's recurrent_max = 2^(1/T) (IndRNN paper)."""
    return {"recurrent_max": 2.0 ** (1.0 / shape["seq_len"])} if MODELS[model_name][0] == "indrnn" else {}


def build(model_name: str, provider: str, shape: dict, device, dtype):
    """A Classifier for (model, provider), or a string saying why the pair is not measured."""
    import tritonrnn

    core, dynamics = MODELS[model_name]
    H = shape["hidden_size"]
    extra = module_kwargs(model_name, shape)
    torch.manual_seed(0)
    if provider == "torch.nn":
        if core in NO_TORCH_NN:
            return NO_TORCH_NN[core]
        body = nn.LSTM(shape["input_size"], H) if core == "lstm" else nn.RNN(shape["input_size"], H)
    elif provider.startswith("tritonrnn:"):
        from tritonrnn._backend import interpreting

        backend = provider.split(":", 1)[1]
        if backend == "triton" and torch.device(device).type != "cuda" and not interpreting():
            return "the Triton backend runs on CUDA (on CPU only under the interpreter, which is not timed)"
        if backend == "identity-native":
            if dynamics not in ("adam", "rmsprop") or core not in ("lstm", "rnn_tanh"):
                return "the identity-native core serves Adam / RMSProp on the LSTM / RNN cores"
            body = Forced(getattr(tritonrnn, model_name)(shape["input_size"], H, backend="torch", **extra), backend)
        else:
            body = getattr(tritonrnn, model_name)(shape["input_size"], H, backend=backend, **extra)
    elif provider in ("eager", "compiled"):
        module = getattr(tritonrnn, model_name)(shape["input_size"], H, backend="torch", **extra)
        step = None
        if provider == "compiled":
            step = compiled_step()
        body = ReferenceBody(module, core, dynamics, step)
    else:
        raise ValueError(f"unknown provider {provider!r}")
    return Classifier(body, H, shape["classes"]).to(device=device, dtype=dtype)


def compiled_step():
    """The reference cell's step under torch.compile, compiled afresh for each model: dynamo keeps one cache
    per code object with a recompile limit (8), and 21 models × train/eval of the same `cell_step` would pass
    it (after which dynamo warns and runs the step eagerly, which would time the eager peer under the
    compiled label). A restart schedule's μ_t enters as a 0-d CPU tensor: as a Python float each of its
    values would be a specialised graph of its own."""
    from tritonrnn.reference import cell_step

    torch._dynamo.reset()
    step = torch.compile(cell_step, dynamic=False)

    def call(*args, lam, **kwargs):
        return step(*args, lam=lam if lam is None else torch.tensor(lam, dtype=torch.float32), **kwargs)

    return call


def iteration_fns(model: nn.Module, shape: dict, device, dtype, autocast=None):
    """{"train": ..., "eval": ...} iterations; `autocast` (a dtype) runs the forward under torch.autocast."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(shape["seq_len"], shape["batch"], shape["input_size"], generator=g).to(device, dtype)
    y = torch.randint(0, shape["classes"], (shape["batch"],), generator=g).to(device)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def forward():
        if autocast is None:
            return model(x)
        with torch.autocast(torch.device(device).type, dtype=autocast):
            return model(x)

    def train():
        opt.zero_grad(set_to_none=True)
        loss_fn(forward().float(), y).backward()
        opt.step()

    @torch.no_grad()
    def evaluate():
        forward()

    return {"train": train, "eval": evaluate}


def measure_pair(model_name, provider, shape, *, device, dtype, iters, warmup, env, suite, log=print, tag="",
                 autocast=None, note=""):
    """Train and eval rows (long-format CSV dicts) for one model × provider × shape; [] when skipped.
    `autocast` (a dtype) runs the forwards under torch.autocast (dtype column "autocast-<dtype>"); `iters` may
    be a function of the probe time of one iteration in seconds, returning (iters, warmup)."""
    built = build(model_name, provider, shape, device, dtype)
    if isinstance(built, str):
        log(f"{tag} {model_name:13s} {provider:17s} skipped: {built}")
        return []
    rows = []
    label = str(dtype if autocast is None else autocast).replace("torch.", "")
    label = label if autocast is None else "autocast-" + label
    for mode, fn in iteration_fns(built, shape, device, dtype, autocast).items():
        n_iters, n_warmup = iters, warmup
        if callable(iters):  # size the repetitions to a time budget from a probe (the first call compiles)
            fn()
            probe = measure(fn, device, warmup=0, iters=1).p50_ms / 1e3
            n_iters, n_warmup = iters(probe)
        timing = measure(fn, device, warmup=n_warmup, iters=n_iters)
        us = timing.per_sample_us(shape["batch"])
        rows.append(dict(env, suite=suite, model=model_name, provider=provider, mode=mode, note=note,
                         dtype=label, batch=shape["batch"], seq_len=shape["seq_len"],
                         input_size=shape["input_size"], hidden_size=shape["hidden_size"], iters=n_iters,
                         warmup=n_warmup,
                         p20_ms=f"{timing.p20_ms:.4f}", p50_ms=f"{timing.p50_ms:.4f}", p80_ms=f"{timing.p80_ms:.4f}",
                         p20_us_per_sample=f"{us['p20']:.3f}", p50_us_per_sample=f"{us['p50']:.3f}",
                         p80_us_per_sample=f"{us['p80']:.3f}", first_call_ms=f"{timing.first_call_ms:.1f}",
                         peak_mem_mb=f"{timing.peak_mem_mb:.1f}",
                         saved_mb=f"{saved_for_backward_mb(built, shape, device, dtype):.2f}" if mode == "train" else ""))
        spread = us["p80"] / us["p50"] if us["p50"] > 0 else float("nan")
        log(f"{tag} {model_name:13s} {provider:17s} {mode:5s} p50 {us['p50']:9.2f} μs/sample "
            f"(p20 {us['p20']:.2f}, p80 {us['p80']:.2f}, p80/p50 {spread:.2f}; first call {timing.first_call_ms:.0f} ms)"
            + (f"  WIDE SPREAD (> {WIDE_SPREAD}): a noisy machine or too few --iters" if spread > WIDE_SPREAD else ""))
    del built
    return rows


def saved_for_backward_mb(model: nn.Module, shape: dict, device, dtype) -> float:
    """MiB that autograd keeps for the backward of the RNN body's forward (each storage counted once, whatever
    saved it): the activations of the step loop or of the native cell, and the input and weights both keep."""
    x = torch.rand(shape["seq_len"], shape["batch"], shape["input_size"]).to(device, dtype)
    out, nbytes = saved_for_backward_bytes(model.body, x)
    del out
    return nbytes / 2**20


def default_providers(device) -> list:
    device = torch.device(device)
    base = ["tritonrnn:torch", "torch.nn", "eager", "compiled"]
    return (["tritonrnn:triton"] + base) if device.type == "cuda" else base


def run(models, providers, *, device, dtype=torch.float32, shape=None, iters=None, warmup=None, out_dir=OUT_DIR,
        log=print):
    device = torch.device(device)
    shape = dict(PAPER_SHAPE, **(shape or {}))
    on_gpu = device.type == "cuda"
    iters = iters or DEFAULT_ITERS["cuda" if on_gpu else "cpu"]
    warmup = warmup or DEFAULT_WARMUP["cuda" if on_gpu else "cpu"]
    env = environment(device)
    reduced = is_reduced(shape)
    csv_path = result_path(out_dir, file_label(shape), env)
    protocol = iters >= 50 and warmup >= 10
    log(f"papers' table on {env['device']} (torch {env['torch']}, triton {env['triton']}, commit {env['commit']}); "
        f"{iters} timed iterations after {warmup} warm-up{'' if protocol else ' (fewer than the SPEC §3 protocol)'}"
        + (f"; REDUCED SHAPE {shape_text(shape)}" if reduced else ""))
    rows, jobs = [], [(m, p) for m in models for p in providers]
    for n, (model_name, provider) in enumerate(jobs, 1):
        got = measure_pair(model_name, provider, shape, device=device, dtype=dtype, iters=iters, warmup=warmup,
                           env=env, suite="papers_table", log=log, tag=f"[{n}/{len(jobs)}]")
        rows.extend(got)
        append_rows(csv_path, got)
    md_path = csv_path[:-4] + ".md"
    with open(md_path, "w") as f:
        f.write(markdown_table(rows, providers, env, iters, warmup, shape))
    png_path = csv_path[:-4] + ".png"
    wide = [r for r in rows if spread_of(r) > WIDE_SPREAD]
    if wide:
        log(f"warning: {len(wide)} of {len(rows)} rows have p80/p50 > {WIDE_SPREAD} (worst "
            f"{max(map(spread_of, wide)):.2f}): rerun with more --iters or on a quiet machine before quoting them")
    if not bar_chart(rows, png_path, env, shape):
        png_path = None
    return csv_path, md_path, png_path


def spread_of(row) -> float:
    """p80/p50 of a CSV row: how far the slower fifth of the iterations sits from the median."""
    p50 = float(row["p50_us_per_sample"])
    return float(row["p80_us_per_sample"]) / p50 if p50 > 0 else float("nan")


def is_reduced(shape: dict) -> bool:
    """True when `shape` is not the paper's timing shape (its figures are then not the papers' table)."""
    return any(shape[k] != PAPER_SHAPE[k] for k in PAPER_SHAPE)


def shape_text(shape: dict) -> str:
    return (f"batch {shape['batch']}, T {shape['seq_len']}, input {shape['input_size']}, "
            f"hidden {shape['hidden_size']}")


def file_label(shape: dict) -> str:
    """papers_table at the paper's shape; papers_table-reduced-b<B>-t<T>-h<H> at any other (one shape per file)."""
    if not is_reduced(shape):
        return "papers_table"
    return f"papers_table-reduced-b{shape['batch']}-t{shape['seq_len']}-i{shape['input_size']}-h{shape['hidden_size']}"


def select_models(models=None, rows=None) -> list:
    """Model names from an exact list (`models`) and/or case-insensitive substrings (`rows`), in MODELS order."""
    chosen = list(MODELS) if models is None else list(models)
    if rows:
        subs = [r.lower() for r in rows]
        chosen = [m for m in chosen if any(sub in m.lower() for sub in subs)]
    return chosen


def markdown_table(rows, providers, env, iters, warmup, shape) -> str:
    title = f"# Papers' table — {env['device']}"
    if is_reduced(shape):
        title = (f"# REDUCED SHAPE ({shape_text(shape)}; the paper's is {shape_text(PAPER_SHAPE)}) — "
                 f"papers' table rows — {env['device']}")
    lines = [title, "",
             f"torch {env['torch']}, triton {env['triton']}, commit {env['commit']}, {env['timestamp']}; "
             f"{shape_text(shape)}; "
             f"median (p50) of {iters} timed iterations after {warmup} warm-up, μs/sample, training / evaluation; "
             f"the largest p80/p50 of each model's row in the last column.", "",
             "| model | " + " | ".join(providers) + " | paper (older GPU) | p80/p50 |",
             "|---|" + "---|" * (len(providers) + 2)]
    models = list(dict.fromkeys(r["model"] for r in rows))
    for model in models:
        cells = []
        for provider in providers:
            got = {r["mode"]: float(r["p50_us_per_sample"]) for r in rows if r["model"] == model and r["provider"] == provider}
            cells.append(f"{got['train']:.2f} / {got['eval']:.2f}" if {"train", "eval"} <= set(got) else "—")
        pub = PUBLISHED.get(model)
        cells.append(f"{pub[0]} / {pub[1]}" if pub else "—")
        spreads = [spread_of(r) for r in rows if r["model"] == model]
        cells.append(f"{max(spreads):.2f}" + (" (wide)" if max(spreads) > WIDE_SPREAD else ""))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", "torch.nn is the plain-core peer (nn.LSTM / nn.RNN) on every row of its core. — : not measured "
                  "(torch.nn has no orthogonal / IndRNN core; the Triton backend is timed on CUDA only)."]
    if any(MODELS[m][0] == "indrnn" for m in models):
        lines.append(f"IndRNN rows: recurrent_max = 2^(1/T) = {2.0 ** (1.0 / shape['seq_len']):.6f}, clipped in the "
                     "forward for every provider.")
    if any(MODELS[m][0] == "rnn_modrelu" for m in models):
        lines.append("Orthogonal rows: U = exp(A) materialised once per forward (matrix_exp parametrization) for "
                     "every provider; no torch.nn peer exists.")
    if is_reduced(shape):
        lines.append("Reduced shape: these figures are not comparable with the paper-shape table or the paper's.")
    return "\n".join(lines) + "\n"


def bar_chart(rows, path, env, shape=None) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    models = list(dict.fromkeys(r["model"] for r in rows))
    providers = list(dict.fromkeys(r["provider"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / max(len(providers), 1)
    for ax, mode in zip(axes, ("train", "eval")):
        for k, provider in enumerate(providers):
            xs, ys = [], []
            for i, model in enumerate(models):
                for r in rows:
                    if r["model"] == model and r["provider"] == provider and r["mode"] == mode:
                        xs.append(i + k * width)
                        ys.append(float(r["p50_us_per_sample"]))
            ax.bar(xs, ys, width, label=provider)
        ax.set_xticks([i + width * (len(providers) - 1) / 2 for i in range(len(models))], models, rotation=30)
        ax.set_ylabel("μs / sample (p50)")
        ax.set_yscale("log")
        ax.set_title(f"{mode} — {env['device']}")
    axes[0].legend(fontsize=8)
    if shape is not None and is_reduced(shape):
        fig.suptitle(f"REDUCED SHAPE ({shape_text(shape)}; the paper's is {shape_text(PAPER_SHAPE)}): "
                     "not comparable with the paper's figures", color="firebrick", fontsize=10)
    save_figure(plt, fig, path)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tritonrnn bench", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="providers:\n" + "\n".join(f"  {k:17s} {v}" for k, v in PROVIDERS.items())
                                     + "\nmodels:\n  " + ", ".join(MODELS))
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, from: " + ", ".join(MODELS))
    parser.add_argument("--rows", default=None,
                        help="comma-separated case-insensitive substrings: keep the models whose name contains one "
                             "(e.g. --rows Orthogonal,IndRNN)")
    parser.add_argument("--providers", default=None,
                        help="comma-separated, from: " + ", ".join(PROVIDERS) + " (default: all that run on the device)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--iters", type=int, default=None, help="timed iterations (default {cuda} on GPU, {cpu} on CPU)".format(**DEFAULT_ITERS))
    parser.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default {cuda} on GPU, {cpu} on CPU)".format(**DEFAULT_WARMUP))
    parser.add_argument("--batch", type=int, default=PAPER_SHAPE["batch"])
    parser.add_argument("--seq-len", type=int, default=PAPER_SHAPE["seq_len"])
    parser.add_argument("--hidden-size", type=int, default=PAPER_SHAPE["hidden_size"])
    add_threads_option(parser)
    parser.add_argument("--out-dir", default=OUT_DIR, help=OUT_DIR_HELP)
    args = parser.parse_args(argv)
    apply_threads_option(parser, args)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {list(MODELS)}")
    if args.rows is not None:
        models = select_models(models, [r.strip() for r in args.rows.split(",") if r.strip()])
        if not models:
            parser.error(f"--rows {args.rows!r} matches none of {list(MODELS)}")
    providers = default_providers(args.device) if args.providers is None else [p.strip() for p in args.providers.split(",")]
    unknown = [p for p in providers if p not in PROVIDERS]
    if unknown:
        parser.error(f"--providers: unknown {unknown}; choose from {list(PROVIDERS)}")
    shape = dict(batch=args.batch, seq_len=args.seq_len, hidden_size=args.hidden_size)
    csv_path, md_path, png_path = run(models, providers, device=args.device, dtype=getattr(torch, args.dtype),
                                      shape=shape, iters=args.iters, warmup=args.warmup, out_dir=args.out_dir)
    print(open(md_path).read())
    print(f"wrote {csv_path}\n      {md_path}" + (f"\n      {png_path}" if png_path else " (no PNG: matplotlib missing)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
