"""One GPU session, section by section (issue #13): the Python behind perf/gpu_session.sh.

    python -m tritonrnn.perf.gpu_session SECTION --out-dir DIR [--budget-s S] [--dry-run]
    SECTION: tests | table | scan | optim | report

Every section appends its rows to DIR/<section>.csv as each one finishes (an early stop loses at most the row
in flight), isolates each row (an exception becomes an "error" row and the next row runs), and stops starting
rows when its budget is spent, writing the rows it did not reach to DIR/<section>-not-run.txt. `report`
redraws DIR/summary.md and the PNGs from the CSVs (the driver runs it last, and it is safe to rerun).

- tests: a prioritised pytest subset compiled on the GPU (PRIORITY order), bounded by the budget; what did not
  run is listed by test id.
- table: the papers' table at its shape (SPEC §3) for every family and every provider in one process, in fp32
  (TF32 on, cuDNN's default) and under bf16 autocast; the most decision-relevant rows first.
- scan: forward and forward + backward bandwidth of the scans as a fraction of a device-to-device copy of the
  same bytes measured in the same run, B·T·C from 10⁶ to 10⁹ elements.
- optim: optimizer step bandwidth (SRSGD, NAG, Frank-Wolfe) for 10⁶–10⁹ parameters in 10–10 000 tensors,
  beside torch.optim.SGD(fused=True) and Adam(fused=True) in the same run.
--dry-run: tiny shapes on the CPU (Triton's interpreter for the kernels), a few seconds per section, so the
whole command is exercised in CI (tests/test_gpu_session.py); `tests` then only collects.
"""
from __future__ import annotations

import argparse
import csv
import glob
import math
import os
import subprocess
import sys
import time
import traceback

import torch

from . import papers_table as pt
from .results_io import FIELDS, append_rows, environment, pyplot, save_figure
from .timing import measure

# Kernel tests first (what only a GPU can check), then the paths this issue added, then the optimizers.
# The recurrence tiers' own float64 checks run in the `tiers` section, so their property tests come after the cores.
PRIORITY = ["tests/kernels/test_scan.py", "tests/kernels/test_recurrence.py", "tests/kernels/test_recurrence_dispatch.py",
            "tests/kernels/test_cores_kernels.py", "tests/kernels/test_recurrence_tiers.py", "tests/nn/test_native_rows.py",
            "tests/nn/test_layers.py", "tests/optim/test_equivalence.py",
            "tests/nn/test_modules.py::test_torch_backend_trains_on_cuda", "tests/kernels/test_compile.py"]

# The papers' table: fast providers of every family before the slow reference peers (eager, compiled).
TABLE_MODELS = ["LSTM", "MomentumLSTM", "AdamLSTM", "RMSPropLSTM", "SRLSTM", "NesterovLSTM", "RNN", "MomentumRNN",
                "AdamRNN", "RMSPropRNN", "SRRNN", "OrthogonalRNN", "MomentumOrthogonalRNN", "SROrthogonalRNN",
                "AdamOrthogonalRNN", "RMSPropOrthogonalRNN", "IndRNN", "MomentumIndRNN", "SRIndRNN", "AdamIndRNN",
                "RMSPropIndRNN"]
FAST_PROVIDERS = ["tritonrnn:auto", "torch.nn", "tritonrnn:torch", "tritonrnn:triton", "tritonrnn:identity-native"]
REFERENCE_PROVIDERS = ["eager", "compiled"]
PRECISIONS = {"float32": None, "autocast-bfloat16": torch.bfloat16}
DRY_SHAPE = dict(batch=2, seq_len=3, input_size=1, hidden_size=4, classes=10)
# The dry run: one model per kind of row (a cuDNN form, the identity-native candidate, a core without torch.nn
# peer), bf16 autocast for one; the compiled reference cell is left out (inductor takes minutes on a CPU).
DRY_MODELS = ["MomentumLSTM", "AdamRNN", "IndRNN"]

SCAN_FIELDS = ["timestamp", "commit", "device", "torch", "triton", "op", "provider", "pass", "dtype", "batch",
               "seq_len", "channels", "numel", "p50_ms", "gbps", "copy_gbps", "fraction_of_copy", "note"]
OPTIM_FIELDS = ["timestamp", "commit", "device", "torch", "triton", "optimizer", "provider", "numel", "tensors",
                "words_per_element", "p50_ms", "gbps", "copy_gbps", "fraction_of_copy", "note"]


class Section:
    """Rows appended to DIR/<name>.csv as they finish, each isolated, under a budget."""

    def __init__(self, name, out_dir, budget_s, fields=FIELDS):
        self.name, self.out_dir, self.fields = name, out_dir, fields
        self.path = os.path.join(out_dir, f"{name}.csv")
        self.deadline = time.monotonic() + budget_s
        self.not_run, self.errors = [], 0

    def left(self):
        return self.deadline - time.monotonic()

    def run(self, label, fn, reserve_s=0.0, context=None):
        """Run fn() -> rows unless the budget (less `reserve_s`, the row's expected cost) is spent; an exception
        becomes one "error" row naming the row (with the fields of `context`, what the row was), and the section
        goes on."""
        if self.left() <= reserve_s:
            self.not_run.append(label)
            return []
        try:
            rows = list(fn())
        except Exception as exc:  # isolation: one failing row never stops the others (its text is kept)
            self.errors += 1
            print(f"[{self.name}] {label}: ERROR {type(exc).__name__}: {exc}", flush=True)
            traceback.print_exc()
            rows = [dict(context or {},
                         note=f"error: {label}: {type(exc).__name__}: {str(exc)[:300]}".replace("\n", " "))]
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.append(rows)
        return rows

    def append(self, rows):
        if not rows:
            return
        os.makedirs(self.out_dir, exist_ok=True)
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            if new:
                writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in self.fields})

    def finish(self):
        with open(os.path.join(self.out_dir, f"{self.name}-not-run.txt"), "w") as f:
            f.write("".join(f"{label}\n" for label in self.not_run))
        print(f"[{self.name}] done: {self.errors} error row(s), {len(self.not_run)} not run (budget)", flush=True)
        return 0


# ------------------------------------------------------------------------------------------ tests
# pytest in one process whatever pyproject's addopts say (it asks for 2 pytest-xdist workers, for the CPU suite):
# the GPU box installs the checkout with --no-deps and has no pytest-xdist, whose -n would be an unknown option.
SERIAL_PYTEST = ("-o", "addopts=--strict-markers")

def section_tests(out_dir, budget_s, dry_run):
    """The prioritised GPU test subset under a time limit; the test ids that did not run are listed."""
    root = os.getcwd()
    paths = [p for p in PRIORITY if os.path.exists(os.path.join(root, p.split("::")[0]))]
    # The dry run collects one file (collecting them all imports every test module: ~30 s on a loaded CI CPU)
    base = [sys.executable, "-m", "pytest", *SERIAL_PYTEST, "-p", "no:cacheprovider", *(paths[5:6] if dry_run else paths)]
    collected = subprocess.run(base + ["-q", "--collect-only"], capture_output=True, text=True,
                               timeout=max(budget_s, 30))
    ids = [line.strip() for line in collected.stdout.splitlines() if "::" in line]
    log = os.path.join(out_dir, "tests.txt")
    ran, rc = set(), None
    if dry_run:  # on CPU the kernels would run under the interpreter for minutes: collecting proves the list
        missing = [p for p in PRIORITY if p not in paths]
        if missing:
            raise FileNotFoundError(f"PRIORITY names test files that do not exist: {missing}")
        with open(log, "w") as f:
            f.write(f"dry run: collected {len(ids)} tests (pytest collect exit {collected.returncode}); none run\n")
        rc = collected.returncode
    else:
        limit = max(budget_s - 10, 10)
        env = dict(os.environ, CI="true")  # the bounded hypothesis profile
        with open(log, "w") as f:
            try:
                # -v prints one "<id> PASSED" line per test as it ends: what ran survives a timeout
                proc = subprocess.run(base + ["-rfE", "-v", "--durations=10"], stdout=f, stderr=subprocess.STDOUT,
                                      timeout=limit, env=env)
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        with open(log) as f:
            for line in f:
                for word in ("PASSED", "FAILED", "SKIPPED", "ERROR", "XFAIL", "XPASS"):
                    if f" {word}" in line and "::" in line:
                        ran.add(line.split(" ")[0])
    not_run = [i for i in ids if i not in ran]
    with open(os.path.join(out_dir, "tests-not-run.txt"), "w") as f:
        f.write("".join(f"{i}\n" for i in not_run))
    with open(log, "a") as f:
        f.write(f"\npytest exit {rc}; {len(ran)} of {len(ids)} collected tests ran; the rest: tests-not-run.txt\n")
    print(f"[tests] pytest exit {rc}; {len(ran)} of {len(ids)} ran", flush=True)
    return 0 if rc in (0, 5) else 1


# ------------------------------------------------------------------------------------------ table
def table_jobs(dry_run):
    """(model, provider, precision) in priority order: the fast providers of every family in fp32, the same
    in bf16 autocast, then the eager and compiled reference cells (slow: last)."""
    if dry_run:
        return ([(m, p, "float32") for m in DRY_MODELS for p in FAST_PROVIDERS]
                + [(DRY_MODELS[1], p, "autocast-bfloat16") for p in FAST_PROVIDERS] + [(DRY_MODELS[0], "eager", "float32")])
    jobs = [(m, p, prec) for prec in PRECISIONS for m in TABLE_MODELS for p in FAST_PROVIDERS]
    jobs += [(m, p, "float32") for m in TABLE_MODELS for p in REFERENCE_PROVIDERS]
    return jobs


def section_table(out_dir, budget_s, dry_run):
    device = torch.device("cpu" if dry_run else "cuda")
    if device.type == "cuda":  # cuDNN's fp32 default is TF32 (KERNELS.md §2.2): every provider gets the same
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    shape = dict(DRY_SHAPE if dry_run else pt.PAPER_SHAPE)
    env = environment(device)
    sec = Section("table", out_dir, budget_s)
    row_budget = 1.0  # seconds of timed iterations per (row, mode)

    def iters(probe_s):  # SPEC §3 asks ≥ 50 timed after ≥ 10 warm-up; the budget may allow fewer (recorded)
        n = max(3, min(50, int(row_budget / max(probe_s, 1e-6))))
        return n, min(10, max(1, n // 5))
    if dry_run:
        iters = 1  # one call to compile, one timed: the dry run proves the rows run, not their speed

    for model, provider, prec in table_jobs(dry_run):
        label = f"{model} {provider} {prec}"
        # a row's expected cost: torch.compile of the reference cell takes tens of seconds on its first call
        reserve = 0.0 if dry_run else (60.0 if provider == "compiled" else 3.0)
        sec.run(label, lambda: pt.measure_pair(model, provider, shape, device=device, dtype=torch.float32,
                                               iters=iters, warmup=1, env=env, suite="papers_table",
                                               autocast=PRECISIONS[prec], tag="[table]",
                                               note="TF32 on" if device.type == "cuda" and prec == "float32" else ""),
                reserve)
    return sec.finish()


# ------------------------------------------------------------------------------------------ scan
def _sizes(dry_run):
    return [24] if dry_run else [10**6, 10**7, 10**8, 10**9]


def _timed_ms(fn, device, dry_run):
    if dry_run:
        return measure(fn, device, warmup=1, iters=1).p50_ms
    fn()  # compile / autotune
    probe = measure(fn, device, warmup=0, iters=1).p50_ms
    n = 1 if dry_run else max(3, min(20, int(300 / max(probe, 1e-3))))
    return measure(fn, device, warmup=1 if dry_run else 2, iters=n).p50_ms


def copy_gbps(numel, device, dry_run, dtype=torch.float32):
    src = torch.randn(numel, device=device).to(dtype)
    dst = torch.empty_like(src)
    ms = _timed_ms(lambda: dst.copy_(src), device, dry_run)
    del src, dst
    return 2 * numel * torch.finfo(dtype).bits // 8 / (ms * 1e-3) / 1e9


def section_scan(out_dir, budget_s, dry_run):
    from tritonrnn import functional as F

    device = torch.device("cpu" if dry_run else "cuda")
    env = environment(device)
    sec = Section("scan", out_dir, budget_s, SCAN_FIELDS)
    B, C = (2, 8) if dry_run else (128, 1024)  # C = 4H at the papers' H 256
    ops = {"momentum_scan": lambda u: F.momentum_scan(u, 0.6, 0.6, backend="triton")[0],
           "restart_scan": lambda u: F.momentum_scan(u, 0.0, 0.6, restart=2, backend="triton")[0],
           "adam_scan": lambda u: F.adam_scan(u, 0.6, 0.6, 0.1, 1e-8, backend="triton")[0],
           "rmsprop_scan": lambda u: F.rmsprop_scan(u, 0.6, 0.9, 1e-8, backend="triton")[0]}
    for dtype in (torch.float32, torch.bfloat16):
        for numel in _sizes(dry_run):
            T = max(1, round(numel / (B * C)))
            n = B * T * C
            elt = torch.finfo(dtype).bits // 8
            state = {}

            def copy_row(n=n, dtype=dtype, state=state):
                state["copy"] = copy_gbps(n, device, dry_run, dtype)
                return [dict(env, op="copy_", provider="torch", **{"pass": "copy"}, dtype=str(dtype)[6:], numel=n,
                             gbps=f"{state['copy']:.4g}", copy_gbps=f"{state['copy']:.4g}", fraction_of_copy="1.000")]

            sec.run(f"copy {n} {dtype}", copy_row, 0 if dry_run else 5)
            for name, op in ops.items():
                def row(name=name, op=op, T=T, n=n, dtype=dtype, state=state):
                    u = torch.randn(B, T, C, device=device).to(dtype).requires_grad_(True)
                    rows = []
                    with torch.no_grad():
                        ms = _timed_ms(lambda: op(u), device, dry_run)
                    rows.append(("forward", ms, 2 * n * elt))  # read u, write the output
                    grad = torch.randn_like(u)

                    def fwd_bwd():
                        torch.autograd.grad(op(u), u, grad)
                    # forward (read u, write out) + backward (read dout and u, write du): the minimal traffic
                    rows.append(("forward+backward", _timed_ms(fwd_bwd, device, dry_run), 5 * n * elt))
                    out = []
                    for kind, ms, nbytes in rows:
                        gbps = nbytes / (ms * 1e-3) / 1e9
                        cp = state.get("copy", float("nan"))
                        out.append(dict(env, op=name, provider="tritonrnn:triton", **{"pass": kind},
                                        dtype=str(dtype)[6:], batch=B, seq_len=T, channels=C, numel=n,
                                        p50_ms=f"{ms:.4f}", gbps=f"{gbps:.4g}", copy_gbps=f"{cp:.4g}",
                                        fraction_of_copy=f"{gbps / cp:.4g}"))
                    del u, grad
                    return out

                sec.run(f"{name} {n} {dtype}", row, 0 if dry_run else 5)
    return sec.finish()


# ------------------------------------------------------------------------------------------ optim
def optimizer_makers():
    """name -> (constructor, fp32 words each element moves per step: reads + writes of params, grads, state)."""
    import tritonrnn.optim as optim

    return {"SRSGD": (lambda ps: optim.SRSGD(ps, lr=1e-3, restart=10, backend="triton"), 5),
            "NAG": (lambda ps: optim.NAG(ps, lr=1e-3, backend="triton"), 5),
            # an inner iteration (the window never closes): the norm pass reads g, then read g, Δ, anchor and
            # write Δ, w
            "FrankWolfe (inner step)": (lambda ps: optim.FrankWolfe(ps, lr=1e-3, radius=0.1, inner_steps=10**9,
                                                                    backend="triton"), 6),
            "torch.SGD(nesterov, fused)": (lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, nesterov=True,
                                                                        fused=True), 5),
            "torch.Adam(fused)": (lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True), 7)}


def section_optim(out_dir, budget_s, dry_run):
    device = torch.device("cpu" if dry_run else "cuda")
    env = environment(device)
    sec = Section("optim", out_dir, budget_s, OPTIM_FIELDS)
    counts = [1, 4] if dry_run else [10, 100, 1000, 10000]
    copies = {}
    for numel in _sizes(dry_run):
        def copy_row(numel=numel):
            copies[numel] = copy_gbps(numel, device, dry_run)
            return [dict(env, optimizer="copy_", provider="torch", numel=numel, gbps=f"{copies[numel]:.4g}",
                         copy_gbps=f"{copies[numel]:.4g}", fraction_of_copy="1.000")]

        sec.run(f"copy {numel}", copy_row, 0 if dry_run else 5)
        for tensors in counts:
            if tensors > numel:
                continue
            for name, (make, words) in optimizer_makers().items():
                def row(name=name, make=make, words=words, numel=numel, tensors=tensors):
                    # `tensors` tensors of unequal sizes (±50 % around the mean) summing to `numel`
                    mean = numel / tensors
                    sizes = [max(1, int(mean * (0.5 + i / max(tensors - 1, 1)))) for i in range(tensors)]
                    sizes[-1] += numel - sum(sizes)
                    ps = [torch.zeros(n, device=device, requires_grad=True) for n in sizes]
                    for p in ps:
                        p.grad = torch.randn_like(p) * 1e-3
                    opt = make(ps)
                    ms = _timed_ms(opt.step, device, dry_run)
                    gbps = words * 4 * numel / (ms * 1e-3) / 1e9
                    cp = copies.get(numel, float("nan"))
                    del opt, ps
                    return [dict(env, optimizer=name, provider="triton" if "torch." not in name else "torch",
                                 numel=numel, tensors=tensors, words_per_element=words, p50_ms=f"{ms:.4f}",
                                 gbps=f"{gbps:.4g}", copy_gbps=f"{cp:.4g}", fraction_of_copy=f"{gbps / cp:.4g}")]

                sec.run(f"{name} {numel} in {tensors}", row, 0 if dry_run else 5)
    return sec.finish()


# ------------------------------------------------------------------------------------------ report
def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def section_report(out_dir, budget_s, dry_run):
    """DIR/summary.md and PNGs from whatever CSVs the sections left (rerunnable; figures come from the files)."""
    lines = [f"# GPU session — {os.path.basename(os.path.abspath(out_dir))}", ""]
    info = os.path.join(out_dir, "device.txt")
    if os.path.exists(info):
        lines += ["```", open(info).read().strip(), "```", ""]
    status = os.path.join(out_dir, "status.txt")
    if os.path.exists(status):
        lines += ["| section | exit |", "|---|---|"]
        lines += [f"| {' | '.join(line.split())} |" for line in open(status).read().splitlines() if line.strip()]
        lines.append("")
    table = os.path.join(out_dir, "table.csv")
    if os.path.exists(table):
        rows = [r for r in _read(table) if r.get("model")]
        env = rows[0] if rows else environment(torch.device("cpu"))
        for prec in dict.fromkeys(r["dtype"] for r in rows):
            sel = [r for r in rows if r["dtype"] == prec]
            shape = {k: int(sel[0][k]) for k in ("batch", "seq_len", "input_size", "hidden_size")}
            shape["classes"] = pt.PAPER_SHAPE["classes"]
            providers = list(dict.fromkeys(r["provider"] for r in sel))
            iters = sorted({int(r["iters"]) for r in sel})
            warm = sorted({int(r["warmup"]) for r in sel})
            text = pt.markdown_table(sel, providers, env, f"{iters[0]}–{iters[-1]}", f"{warm[0]}–{warm[-1]}", shape)
            lines += [text.replace("# ", f"## {prec}: ", 1), ""]
            pt.bar_chart(sel, os.path.join(out_dir, f"table-{prec}.png"), env)
        errors = [r["note"] for r in _read(table) if r.get("note", "").startswith("error")]
        lines += [f"- {e}" for e in errors] + [""]
    for name, key in (("scan", "op"), ("optim", "optimizer")):
        path = os.path.join(out_dir, f"{name}.csv")
        if not os.path.exists(path):
            continue
        rows = [r for r in _read(path) if r.get(key)]
        cols = [c for c in (SCAN_FIELDS if name == "scan" else OPTIM_FIELDS)[5:] if c != "note"]
        lines += [f"## {name} bandwidth (fraction of a device-to-device copy of the same bytes, same run)", "",
                  "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(r.get(c, "") for c in cols) + " |" for r in rows]
        lines += [f"- {r['note']}" for r in _read(path) if r.get("note", "").startswith("error")] + [""]
        _bandwidth_plot(rows, key, os.path.join(out_dir, f"{name}.png"))
    tiers = os.path.join(out_dir, "tiers.md")  # the recurrence tiers (tritonrnn.perf.recurrence_tiers), as written
    if os.path.exists(tiers):
        lines += [open(tiers).read().replace("# ", "## ", 1), ""]
    for path in sorted(glob.glob(os.path.join(out_dir, "*-not-run.txt"))):
        missing = open(path).read().split("\n")
        missing = [m for m in missing if m]
        if missing:
            lines += [f"Not run ({os.path.basename(path)}): {len(missing)}: " + "; ".join(missing[:40])
                      + (" …" if len(missing) > 40 else ""), ""]
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


def _bandwidth_plot(rows, key, path):
    plt = pyplot()
    if plt is None or not rows:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    groups = {}
    for r in rows:
        try:
            frac = float(r["fraction_of_copy"])
        except (KeyError, ValueError):
            continue
        label = " ".join(r.get(k, "") for k in (key, "pass", "dtype", "tensors") if r.get(k))
        groups.setdefault(label, []).append((int(r["numel"]), frac))
    for label, pts in groups.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("elements")
    ax.set_ylabel("fraction of copy bandwidth")
    ax.legend(fontsize=5)
    save_figure(plt, fig, path)


SECTIONS = {"tests": section_tests, "table": section_table, "scan": section_scan, "optim": section_optim,
            "report": section_report}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tritonrnn.perf.gpu_session", description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=list(SECTIONS))
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--budget-s", type=float, default=60.0,
                        help="stop starting rows after this many seconds (the driver's `timeout` is the hard stop)")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (interpreter): CI")
    args = parser.parse_args(argv)
    if not args.dry_run and args.section != "report" and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --dry-run on a CPU")
    os.makedirs(args.out_dir, exist_ok=True)
    return SECTIONS[args.section](args.out_dir, args.budget_s, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
