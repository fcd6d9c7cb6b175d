"""torch.compile cost against the sequence length (issue #17): first call (compile + forward + backward) per module
family and T, beside torch.compile(nn.LSTM), each point in a fresh process (dynamo's caches live per process).

    python -m tritonrnn.perf.compile_time [--models LSTM,MomentumLSTM,...] [--seq-lens 10,100,784,1000,10000]
        [--batch 8] [--hidden 64] [--compiler inductor] [--compiled-path native-op|step-loop] [--out-dir DIR]

Per point the child process (with an empty inductor cache directory of its own) builds the model (input size
1, as the papers' pixel tasks), compiles it with fullgraph=True (nn.LSTM without: dynamo refuses to trace it
and runs it eagerly) and T marked dynamic, and times with time.perf_counter:
- first_call_s: the first compiled forward + backward (dynamo, AOTAutograd, the compiler; imports and model
  construction excluded),
- steady_ms: the median of --steps further compiled forward + backward calls at the same T,
- second T (T2 = T + 1 unless T2 is given) in the same process: its call time and dynamo's counters after
  it, unique_graphs (graphs captured in the process) and recompiled = unique_graphs > 1.
`--compiled-path` chooses, for the families with a native form (plain / momentum / restart), the op the
compiled module runs (tritonrnn.functional.layers.COMPILED_NATIVE): the native layer as one op ("native-op")
or the fused step loop ("step-loop"); the other families always run the step-loop op.
Rows go to <out-dir>/compile_time-<machine>-<UTC>/compile_time.csv and a Markdown table beside it.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from .results_io import OUT_DIR, OUT_DIR_HELP, environment, result_path

MODELS = ["nn.LSTM", "LSTM", "MomentumLSTM", "SRLSTM", "AdamLSTM", "RMSPropLSTM", "NesterovLSTM",
          "MomentumOrthogonalRNN", "IndRNN"]
NATIVE_MODELS = ("LSTM", "MomentumLSTM", "SRLSTM")  # of MODELS, the families with a native form (SPEC §1.4)
SEQ_LENS = [10, 100, 784, 1000, 10000]
FIELDS = ["timestamp", "commit", "device", "torch", "model", "compiled_path", "compiler", "batch", "input_size",
          "hidden_size", "seq_len", "first_call_s", "steady_ms", "seq_len_2", "second_call_s", "unique_graphs",
          "recompiled", "threads", "note"]
COMPILED_PATHS = ("native-op", "step-loop")


def measure_point(model_name, T, *, batch=8, input_size=1, hidden=64, compiler="inductor", steps=3,
                  compiled_path="native-op", T2=None):
    """One point in this process (call it in a fresh one): the row's measured fields."""
    import torch
    from torch._dynamo.utils import counters

    import tritonrnn.nn as tnn
    from tritonrnn.functional import layers

    if compiled_path not in COMPILED_PATHS:
        raise ValueError(f"compiled_path must be one of {COMPILED_PATHS}, got {compiled_path!r}")
    layers.COMPILED_NATIVE = compiled_path == "native-op"
    torch.manual_seed(0)
    if model_name == "nn.LSTM":
        model = torch.nn.LSTM(input_size, hidden)
    else:
        model = getattr(tnn, model_name)(input_size, hidden, backend="torch")
    # dynamo refuses to trace nn.LSTM (a graph break, an error under fullgraph=True) and runs it eagerly:
    # the peer compiles without fullgraph, as a user's torch.compile(nn.LSTM) does
    compiled = torch.compile(model, backend=compiler, fullgraph=model_name != "nn.LSTM")
    params = [p for p in model.parameters() if p.requires_grad]

    def call(T_):
        x = torch.randn(T_, batch, input_size, requires_grad=True)
        torch._dynamo.mark_dynamic(x, 0)  # a second T reuses the graph (the ops' fake implementations)
        t0 = time.perf_counter()
        out, hn = compiled(x)
        states = hn if isinstance(hn, tuple) else (hn,)
        loss = out.sum() + sum(s.sum() for s in states)
        torch.autograd.grad(loss, [x, *params])
        return time.perf_counter() - t0

    counters.clear()
    first = call(T)
    steady = [call(T) for _ in range(steps)]
    T2 = T + 1 if T2 is None else T2
    second = call(T2)
    graphs = counters["stats"]["unique_graphs"]
    if model_name == "nn.LSTM":
        compiled_path = "none (dynamo runs nn.LSTM eagerly)"
    elif model_name not in NATIVE_MODELS:
        compiled_path = "step-loop"  # no native form: always the step-loop op
    return {"model": model_name, "compiled_path": compiled_path, "compiler": compiler, "batch": batch,
            "input_size": input_size, "hidden_size": hidden, "seq_len": T, "first_call_s": f"{first:.3f}",
            "steady_ms": f"{1e3 * statistics.median(steady):.2f}" if steady else "", "seq_len_2": T2,
            "second_call_s": f"{second:.3f}", "unique_graphs": graphs, "recompiled": graphs > 1,
            "threads": torch.get_num_threads()}


def _child(args):
    import torch

    torch.set_num_threads(args.threads)
    row = measure_point(args.point[0], int(args.point[1]), batch=args.batch, hidden=args.hidden,
                        compiler=args.compiler, steps=args.steps, compiled_path=args.compiled_path, T2=args.seq_len_2)
    print("ROW " + json.dumps(row))
    return 0


def sweep(models, seq_lens, *, out_dir, batch, hidden, compiler, steps, compiled_path, threads, timeout, log=print):
    """Each (model, T) in a fresh `python -m tritonrnn.perf.compile_time --point` process; rows appended to the
    CSV as they come (a point that fails or runs past `timeout` is a row with the reason in `note`)."""
    import torch

    torch.set_num_threads(threads)  # the environment's device name says the points' thread count
    env = environment(torch.device("cpu"))
    folder = result_path(out_dir, "compile_time", env, ext="")[:-1]
    os.makedirs(folder, exist_ok=True)
    csv_path = os.path.join(folder, "compile_time.csv")
    rows = []
    for T in seq_lens:
        for model in models:
            cmd = [sys.executable, "-m", "tritonrnn.perf.compile_time", "--point", model, str(T), "--batch", str(batch),
                   "--hidden", str(hidden), "--compiler", compiler, "--steps", str(steps), "--compiled-path",
                   compiled_path, "--threads", str(threads)]
            base = {**env, "model": model, "compiled_path": compiled_path, "compiler": compiler, "batch": batch,
                    "input_size": 1, "hidden_size": hidden, "seq_len": T, "threads": threads}
            # inductor keeps compiled graphs and C++ objects on disk across processes: an empty cache per point,
            # so every first call pays what a user's first compile pays
            cache = tempfile.mkdtemp(prefix="compile_time-")
            child_env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": os.path.join(cache, "t")}
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env)
                lines = [ln for ln in done.stdout.splitlines() if ln.startswith("ROW ")]
                if done.returncode == 0 and lines:
                    row = {**base, **json.loads(lines[-1][4:]), "note": ""}
                else:
                    errors = [ln for ln in done.stderr.splitlines() if re.search(r"Error|Exception|Unsupported", ln)]
                    reason = (errors or done.stderr.splitlines() or [""])[-1]
                    row = {**base, "note": f"exit {done.returncode}: {reason}"}
            except subprocess.TimeoutExpired:
                row = {**base, "note": f"timed out after {timeout} s"}
            finally:
                shutil.rmtree(cache, ignore_errors=True)
            rows.append(row)
            _append(csv_path, row)
            log(f"{model:22s} T={T:<6d} first call {row.get('first_call_s', '-'):>8s} s  steady "
                f"{row.get('steady_ms', '-'):>9s} ms  second T recompiled={row.get('recompiled', '-')} {row['note']}")
    md_path = os.path.join(folder, "compile_time.md")
    with open(md_path, "w") as f:
        f.write(markdown(rows, env, " ".join(["python -m tritonrnn.perf.compile_time", *sys.argv[1:]])))
    return csv_path, md_path


def _append(path, row):
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)


def markdown(rows, env, command):
    """First-call seconds, model × T, and the growth from the smallest to the largest T measured."""
    Ts = sorted({int(r["seq_len"]) for r in rows})
    models = list(dict.fromkeys(r["model"] for r in rows))
    cell = {(r["model"], int(r["seq_len"])): r for r in rows}
    lines = [f"First call (compile + forward + backward), seconds — {env['device']}, torch {env['torch']}, "
             f"commit {env['commit']}, {env['timestamp']}", "", f"Command: `{command}`", "",
             "| model | " + " | ".join(f"T={T}" for T in Ts)
             + f" | growth T={Ts[0]}→{Ts[-1]} | second T recompiles |",
             "|---|" + "---|" * (len(Ts) + 2)]
    for m in models:
        firsts = [cell.get((m, T), {}).get("first_call_s") for T in Ts]
        growth = (f"{float(firsts[-1]) / float(firsts[0]):.2f}x" if firsts[0] and firsts[-1] else "-")
        recompiles = {str(cell[(m, T)]["recompiled"]) for T in Ts if "recompiled" in cell.get((m, T), {})}
        lines.append(f"| {m} | " + " | ".join(f or cell.get((m, T), {}).get("note", "-") or "-"
                                              for f, T in zip(firsts, Ts))
                     + f" | {growth} | {', '.join(sorted(recompiles)) or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tritonrnn.perf.compile_time",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"default {','.join(MODELS)}")
    parser.add_argument("--seq-lens", default=",".join(map(str, SEQ_LENS)))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--compiler", default="inductor", help="the torch.compile backend (default inductor)")
    parser.add_argument("--compiled-path", default="native-op", choices=COMPILED_PATHS)
    parser.add_argument("--steps", type=int, default=3, help="steady-state calls after the first (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per point (default 1: a shared CPU)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per point before it is recorded as "
                        "timed out")
    parser.add_argument("--out-dir", default=OUT_DIR, help=OUT_DIR_HELP)
    parser.add_argument("--point", nargs=2, metavar=("MODEL", "T"), help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--seq-len-2", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.point:
        return _child(args)
    models = args.models.split(",")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {MODELS}")
    csv_path, md_path = sweep(models, [int(t) for t in args.seq_lens.split(",")], out_dir=args.out_dir,
                              batch=args.batch, hidden=args.hidden, compiler=args.compiler, steps=args.steps,
                              compiled_path=args.compiled_path, threads=args.threads, timeout=args.timeout)
    print(f"wrote {csv_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
