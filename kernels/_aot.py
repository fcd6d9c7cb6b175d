"""Ahead-of-time compile proof: every kernel builds for sm_80 and sm_90 on a CPU-only machine, and the
committed report (perf/results/aot-compile-report.json, .txt) says what the JIT will compile.

The interpreter accepts programs the real compiler rejects, so each kernel module lists representative
configurations in `AOT_CONFIGS`. A configuration is compiled the way the JIT compiles a launch (KERNELS.md
§4): its arguments are handed to the JIT's own binder (`create_function_from_signature`, then
`JITFunction._pack_args`, as `JITFunction.run` does in triton 3.6 and 3.9), so pointers the launch sees
16-byte aligned carry `tt.divisibility=16`, integers the launch passes as multiples of 16 carry it too,
integers equal to 1 become constexprs, `do_not_specialize` arguments are left alone, and the options are the
JIT's. `triton.compile` then runs exactly the JIT's pipeline, ptxas included (its `-v` log, which the JIT
discards, gives registers and spills); shared memory is the compiled metadata's.

Each report row (one configuration on one architecture) carries a key: a hash of the kernel's `cache_key`
(its source, the jit functions it calls and the constexpr globals it reads), the JIT's signature,
constexprs, attrs and options for the configuration, the triton version and the ptxas version (ptxas 12.9
and 13.4 give the same PTX different register counts, e.g. 142 vs 138 for a momentum-scan config on sm_80).
The key is cheap to compute (no compile), so the report is checked for currency without compiling, and
regenerated incrementally. Like the JIT's cache key it includes the kernel's starting line: moving a kernel
down a file makes its rows stale (--write recompiles them, ~1 s a row).

    python -m tritonrnn.kernels._aot --write [--jobs N]
                                               recompile rows whose key changed or that are new, drop rows of
                                               configurations that no longer exist; rewrite .json and .txt
    python -m tritonrnn.kernels._aot --check   stale / missing / extra rows and uncovered kernels, without
                                               compiling (exit 1 if any)
    python -m tritonrnn.kernels._aot --ci      compile the CI subset for sm_90 and compare with the report

Compiling needs TRITON_INTERPRET unset (real JIT functions, not the interpreter's). The triton environment
variables that change compiled code (TRITON_F32_DEFAULT, TRITON_DEFAULT_FP_FUSION, PTXAS_OPTIONS, ...) are
removed for the run: the report is what a user's process, which sets none of them, compiles.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib
import io
import json
import os
import pkgutil
import re
import sys
import tempfile
import time
from pathlib import Path

# Shared memory one block may use (bytes, the opt-in maximum): A100 163 KB (sm_80), H100/H200 227 KB (sm_90).
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
ARCHS = (80, 90)
CI_ARCH = 90
# Bump when the way rows are produced changes (stand-in arguments, ptxas log parsing): every key changes.
KEY_SCHEME = 1
REPORT = Path(__file__).resolve().parent.parent / "perf" / "results" / "aot-compile-report.json"

# Environment variables read while compiling that change the code the JIT emits, besides those triton itself
# lists as cache-invalidating (get_cache_invalidating_env_vars, removed too).
_CODEGEN_ENV = ("TRITON_F32_DEFAULT", "TRITON_DEFAULT_FP_FUSION", "TRITON_FORCE_DISABLE_FP_FUSION", "PTXAS_OPTIONS",
                "DISABLE_PTXAS_OPT", "TRITON_DISABLE_LINE_INFO", "TRITON_OVERRIDE_ARCH", "TRITON_KERNEL_OVERRIDE",
                "TRITON_DEBUG")


@dataclasses.dataclass(frozen=True)
class AotConfig:
    """One compile configuration of one kernel, as one launch presents it to the JIT.

    `signature` maps every argument to its triton type ("*fp32", "*i64", "i32", "fp32", ...) or "constexpr";
    `constexprs` gives the values of the constexpr arguments and of integer arguments the launch passes as 1
    (the JIT turns those into constexprs, e.g. the stride of a contiguous last axis). `divisible` names the
    arguments the JIT sees as multiples of 16 (`tt.divisibility=16`): None means every pointer (torch
    allocations are 16-byte aligned); an integer belongs there only where the launcher guarantees it (a 0
    flag, a padded size). `ci`: whether CI compiles this configuration live; None means the first
    configuration of each kernel. `archs`: the architectures the configuration is launched on (a plan fitted
    to Hopper's shared memory need not build for sm_80). A default configuration must compile with zero spills
    and fit the per-block shared memory of each of its archs."""

    name: str
    kernel: object
    signature: dict
    constexprs: dict
    num_warps: int = 4
    num_stages: int = 2
    default: bool = True
    divisible: tuple[str, ...] | None = None
    ci: bool | None = None
    archs: tuple[int, ...] = ARCHS


@dataclasses.dataclass
class AotReport:
    name: str
    arch: int
    registers: int
    spill_stores: int
    spill_loads: int
    shared: int
    default: bool

    @property
    def spills(self) -> int:
        return self.spill_stores + self.spill_loads


@dataclasses.dataclass(frozen=True)
class JitView:
    """What JITFunction.run hands to ASTSource and triton.compile for one configuration on one target."""

    signature: dict
    constexprs: dict
    attrs: dict
    options: object  # the backend's options dataclass (CUDAOptions)


def _jit_function(kernel):
    """Unwrap autotune/heuristics wrappers down to the JITFunction."""
    from triton.runtime.jit import JITFunction

    while not isinstance(kernel, JITFunction):
        if not hasattr(kernel, "fn"):
            raise TypeError(f"{kernel!r} is not a Triton JIT function (is TRITON_INTERPRET set?)")
        kernel = kernel.fn
    return kernel


def kernel_name(kernel) -> str:
    fn = _jit_function(kernel)
    return f"{fn.fn.__module__}.{fn.__name__}"


# ---------------------------------------------------------------------------------------- the JIT's view
_TORCH_DTYPES = {"fp64": "float64", "fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "i64": "int64",
                 "i32": "int32", "i16": "int16", "i8": "int8", "u8": "uint8", "i1": "bool"}


class _Pointer:
    """Stands in for a tensor argument: the JIT's specialisation reads only data_ptr() and dtype."""

    def __init__(self, dtype, aligned: bool):
        self.dtype = dtype
        self._address = 1 << 20 if aligned else (1 << 20) + 4

    def data_ptr(self) -> int:
        return self._address


def _stand_in(cfg: AotConfig, name: str, kind: str, divisible: bool):
    """An argument value whose JIT specialisation is the one the configuration describes."""
    import torch

    if kind.startswith("*"):
        dtype = _TORCH_DTYPES.get(kind[1:])
        if dtype is None:
            raise ValueError(f"AOT config {cfg.name!r}: argument {name!r} has unsupported pointer type {kind!r}")
        return _Pointer(getattr(torch, dtype), divisible)
    if kind in ("i32", "i64"):
        # The JIT picks i32 or i64 from the value: stay in the declared range, off or on a multiple of 16.
        base = 1 << 36 if kind == "i64" else 1 << 12
        return base if divisible else base + 3
    if kind == "fp32":
        return 1.5
    if kind == "u1":
        return True
    raise ValueError(f"AOT config {cfg.name!r}: argument {name!r} has unsupported type {kind!r}; a scalar the "
                     "JIT sees is i32/i64 (Python int), fp32 (Python float) or u1 (bool)")


def _backend(arch: int):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    target = GPUTarget("cuda", arch, 32)
    return target, make_backend(target)


def jit_view(cfg: AotConfig, arch: int) -> JitView:
    """Bind stand-in arguments with the JIT's own binder, so signature, constexprs, attrs and options are
    exactly what JITFunction.run would compile for a launch matching the configuration."""
    from triton.runtime.jit import create_function_from_signature

    fn = _jit_function(cfg.kernel)
    names = list(fn.arg_names)
    if set(cfg.signature) != set(names):
        raise ValueError(f"AOT config {cfg.name!r}: signature names {sorted(set(cfg.signature) ^ set(names))} "
                         f"do not match the arguments of {fn.__name__}")
    divisible = set(cfg.divisible) if cfg.divisible is not None else {
        n for n in names if cfg.signature[n].startswith("*") and n not in cfg.constexprs}
    unknown = divisible - {n for n in names if cfg.signature[n] != "constexpr" and n not in cfg.constexprs}
    if unknown:
        raise ValueError(f"AOT config {cfg.name!r}: divisible names {sorted(unknown)} are not runtime arguments")
    args = {}
    for name in names:
        if name in cfg.constexprs:
            args[name] = cfg.constexprs[name]
        elif cfg.signature[name] == "constexpr":
            raise ValueError(f"AOT config {cfg.name!r}: constexpr {name!r} has no value in constexprs")
        else:
            args[name] = _stand_in(cfg, name, cfg.signature[name], name in divisible)
    _, backend = _backend(arch)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = dict(args, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    bound, specialization, options = binder(**kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)

    # The configuration must describe a launch the JIT can see: a constexpr the JIT did not make one (only
    # declared constexprs and integers equal to 1 qualify) or a lost divisibility is a wrong configuration.
    for i, name in enumerate(names):
        want = "constexpr" if name in cfg.constexprs else cfg.signature[name]
        if signature[name] != want:
            raise ValueError(f"AOT config {cfg.name!r}: the JIT sees {name!r} as {signature[name]!r}, the config "
                             f"says {want!r} (only tl.constexpr arguments and ints equal to 1 are constexprs)")
        if name in divisible and ["tt.divisibility", 16] not in attrs.get((i, ), []):
            raise ValueError(f"AOT config {cfg.name!r}: the JIT never marks {name!r} divisible by 16 "
                             "(do_not_specialize?); drop it from `divisible`")
    return JitView(signature, constexprs, attrs, options)


def _ptxas_version(arch: int) -> str:
    from triton.backends.nvidia.compiler import get_ptxas_version

    # The last line names the release and build, e.g. "Cuda compilation tools, release 12.9, V12.9.86".
    return get_ptxas_version(arch).strip().splitlines()[-1]


def _value_key(value) -> str:
    # As ASTSource.hash keys constants: tl.dtype and jit functions by cache_key, the rest by str.
    return value.cache_key if hasattr(value, "cache_key") else repr(value)


def row_key(cfg: AotConfig, arch: int, view: JitView | None = None) -> str:
    """Hash of everything that decides the compiled code of (cfg, arch); no compile."""
    import triton

    view = view or jit_view(cfg, arch)
    options = {k: repr(v) for k, v in sorted(vars(view.options).items()) if k != "extern_libs"}  # a local path
    payload = json.dumps([
        KEY_SCHEME, _jit_function(cfg.kernel).cache_key, sorted(view.signature.items()),
        sorted((str(k), _value_key(v)) for k, v in view.constexprs.items()),
        sorted((str(k), repr(v)) for k, v in view.attrs.items()), options,
        triton.__version__, _ptxas_version(arch), arch])
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------------------- compiling
@contextlib.contextmanager
def pinned_environment():
    """The environment a user's process compiles in: no triton codegen knobs, plus a private cache (so
    ptxas runs and its log is seen) and the ptxas log printed (TRITON_DUMP_PTXAS_LOG)."""
    from triton._C.libtriton import get_cache_invalidating_env_vars

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("unset TRITON_INTERPRET: the AOT compile needs real JIT functions")
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="tritonrnn-aot-") as cache:
        try:
            for name in set(get_cache_invalidating_env_vars()) | set(_CODEGEN_ENV):
                os.environ.pop(name, None)
            os.environ.update(TRITON_CACHE_DIR=cache, TRITON_ALWAYS_COMPILE="1", TRITON_DUMP_PTXAS_LOG="1")
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)


def _parse_ptxas_log(log: str, cfg: AotConfig, arch: int):
    regs = re.search(r"Used (\d+) registers", log)
    if regs is None:
        raise RuntimeError(f"{cfg.name} sm_{arch}: no ptxas -v log captured (TRITON_DUMP_PTXAS_LOG ignored?):\n"
                           f"{log[-2000:]}")
    stores = re.search(r"(\d+) bytes spill stores", log)
    loads = re.search(r"(\d+) bytes spill loads", log)
    return int(regs.group(1)), int(stores.group(1)) if stores else 0, int(loads.group(1)) if loads else 0


def compile_config(cfg: AotConfig, arch: int, view: JitView | None = None) -> AotReport:
    """Compile (cfg, arch) as the JIT would; call inside pinned_environment()."""
    import triton
    from triton.compiler import ASTSource

    view = view or jit_view(cfg, arch)
    target, _ = _backend(arch)
    src = ASTSource(_jit_function(cfg.kernel), view.signature, view.constexprs, view.attrs)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):  # make_cubin prints the ptxas -v log there
        compiled = triton.compile(src, target=target, options=dict(vars(view.options)))
    regs, stores, loads = _parse_ptxas_log(log.getvalue(), cfg, arch)
    return AotReport(cfg.name, arch, regs, stores, loads, int(compiled.metadata.shared), cfg.default)


# ---------------------------------------------------------------------------------- configs and kernels
def _kernel_modules():
    """Every public module under tritonrnn.kernels, subpackages included (kernels/recurrence/step.py)."""
    package = importlib.import_module("tritonrnn.kernels")
    infos = pkgutil.walk_packages(package.__path__, prefix="tritonrnn.kernels.")
    for info in sorted(infos, key=lambda i: i.name):
        if not any(part.startswith("_") for part in info.name.split(".")[2:]):
            yield importlib.import_module(info.name)


def all_configs() -> list:
    """AOT_CONFIGS of every kernel module, each configuration once (a package may re-export its modules')."""
    seen, configs, names = set(), [], {}
    for module in _kernel_modules():
        for cfg in getattr(module, "AOT_CONFIGS", ()):
            if id(cfg) in seen:
                continue
            seen.add(id(cfg))
            if cfg.name in names:
                if cfg == names[cfg.name][1]:  # the same launch listed twice compiles once
                    continue
                raise ValueError(f"AOT config name {cfg.name!r} names two different configurations "
                                 f"({names[cfg.name][0]}, {module.__name__})")
            names[cfg.name] = (module.__name__, cfg)
            configs.append(cfg)
    return configs


def ci_configs(configs) -> list:
    """ci=True configurations; for a kernel with none, its first configuration not marked ci=False (among
    those built for the CI architecture)."""
    chosen, by_kernel = [], {}
    for cfg in configs:
        if CI_ARCH not in cfg.archs:
            continue
        by_kernel.setdefault(id(_jit_function(cfg.kernel)), []).append(cfg)
    for group in by_kernel.values():
        explicit = [c for c in group if c.ci]
        chosen += explicit or [c for c in group if c.ci is None][:1]
    order = {id(c): i for i, c in enumerate(configs)}
    return sorted(chosen, key=lambda c: order[id(c)])


def uncovered_kernels(configs) -> list:
    """Launchable kernels (module-level JIT functions named `*_kernel`, wherever imported) that no AOT config
    compiles, by their defining module."""
    from triton.runtime.jit import JITFunction

    covered = {id(_jit_function(cfg.kernel)) for cfg in configs}
    missing = {}
    for module in _kernel_modules():
        for attr, value in vars(module).items():
            if attr.endswith("_kernel"):
                try:
                    fn = _jit_function(value)
                except TypeError:  # not a kernel (a helper named *_kernel); only JIT functions are launched
                    continue
                if isinstance(fn, JITFunction) and id(fn) not in covered:
                    missing[id(fn)] = kernel_name(fn)
    return sorted(missing.values())


# ------------------------------------------------------------------------------------------- the report
def _row(cfg: AotConfig, arch: int, key: str, view: JitView, ci: bool, rep: AotReport | None = None,
         old: dict | None = None) -> dict:
    names = list(_jit_function(cfg.kernel).arg_names)
    measured = dataclasses.asdict(rep) if rep is not None else old
    return {
        "name": cfg.name, "arch": arch, "kernel": kernel_name(cfg.kernel), "key": key,
        "registers": measured["registers"], "spill_stores": measured["spill_stores"],
        "spill_loads": measured["spill_loads"], "shared": measured["shared"],
        "default": cfg.default, "ci": ci, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages,
        "divisible": [names[k[0]] for k, v in sorted(view.attrs.items()) if ["tt.divisibility", 16] in v],
        "constexpr_ones": [n for n in names if n in cfg.constexprs and view.signature[n] == "constexpr"
                           and cfg.signature[n] != "constexpr"],
    }


def load_report(path: Path = REPORT) -> dict:
    if not path.exists():
        return {"rows": []}
    with open(path) as f:
        return json.load(f)


def _header() -> dict:
    import triton

    return {"triton": triton.__version__, "ptxas": {str(a): _ptxas_version(a) for a in ARCHS},
            "shared_limit": {str(a): SHARED_LIMIT[a] for a in ARCHS}}


def render_text(report: dict) -> str:
    ptxas = ", ".join(f"sm_{a}: {v}" for a, v in report["ptxas"].items())
    lines = [
        f"# AOT compile report: python -m tritonrnn.kernels._aot --write (rows from {REPORT.name}); triton "
        f"{report['triton']}, ptxas ({ptxas}) as the JIT calls it; arguments specialised as the JIT does "
        "(tt.divisibility=16, ints equal to 1 as constexprs); no triton codegen environment variables",
        f"{'kernel configuration':58s} {'arch':>5s} {'regs':>5s} {'spill st/ld':>12s} {'shared':>8s}  flags",
    ]
    for r in report["rows"]:
        flags = ",".join(f for f, on in (("default", r["default"]), ("ci", r["ci"])) if on)
        lines.append(f"{r['name']:58s} sm_{r['arch']:<3d}{r['registers']:5d} {r['spill_stores']:5d}/"
                     f"{r['spill_loads']:<6d} {r['shared']:8d}  {flags}")
    return "\n".join(lines) + "\n"


def _save(report: dict, path: Path) -> None:
    # Atomic: an interrupted --write leaves the previous file or the new one, never half of either.
    # One row a line, so a regenerated report diffs row by row.
    head = json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1)[:-2]
    rows = ",\n".join("  " + json.dumps(r) for r in report["rows"])
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(f'{head},\n "rows": [\n{rows}\n ]\n}}\n')
    os.replace(tmp, path)


def _plan(configs):
    """[(cfg, arch, key, view, ci)] in report order; computing keys compiles nothing."""
    ci = {id(c) for c in ci_configs(configs)}
    plan = []
    for cfg in configs:
        unknown = set(cfg.archs) - set(ARCHS)
        if unknown:
            raise ValueError(f"AOT config {cfg.name!r}: archs {sorted(unknown)} not in {ARCHS}")
        for arch in cfg.archs:
            view = jit_view(cfg, arch)
            plan.append((cfg, arch, row_key(cfg, arch, view), view, id(cfg) in ci))
    return plan


def check(path: Path = REPORT, configs=None) -> dict:
    """Rows the report lacks, rows whose key or flags differ, rows of configurations that no longer exist,
    kernels no configuration covers, and whether the .txt matches the .json. Compiles nothing."""
    configs = all_configs() if configs is None else configs
    report = load_report(path)
    rows = {(r["name"], r["arch"]): r for r in report["rows"]}
    missing, stale = [], []
    wanted = set()
    for cfg, arch, key, view, ci in _plan(configs):
        wanted.add((cfg.name, arch))
        row = rows.get((cfg.name, arch))
        if row is None:
            missing.append(f"{cfg.name} sm_{arch}")
        elif row != _row(cfg, arch, key, view, ci, old=row):
            stale.append(f"{cfg.name} sm_{arch}")
    extra = [f"{n} sm_{a}" for (n, a) in rows if (n, a) not in wanted]
    txt = path.with_suffix(".txt")
    text_current = bool(report["rows"]) and txt.exists() and txt.read_text() == render_text(report)
    return {"missing": missing, "stale": stale, "extra": extra, "uncovered": uncovered_kernels(configs),
            "text_current": text_current, "rows": len(rows)}


_WORKER_CONFIGS = None


def _compile_job(name: str, arch: int):
    """One row compiled in a --jobs worker (a spawned interpreter: it imports the kernel modules itself and
    inherits the pinned environment)."""
    global _WORKER_CONFIGS
    if _WORKER_CONFIGS is None:
        _WORKER_CONFIGS = {cfg.name: cfg for cfg in all_configs()}
    start = time.perf_counter()
    return compile_config(_WORKER_CONFIGS[name], arch), time.perf_counter() - start


def _compile_all(todo, jobs: int):
    """Yield (plan item, AotReport or the exception it raised, seconds), in completion order."""
    if jobs <= 1:
        for item in todo:
            start = time.perf_counter()
            try:
                rep = compile_config(item[0], item[1], item[3])
            except Exception as exc:  # handed to write(), which reports it and fails the run
                rep = exc
            yield item, rep, time.perf_counter() - start
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: the parent has torch and triton (and their threads) loaded.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_compile_job, item[0].name, item[1]): item for item in todo}
        for future in as_completed(futures):
            try:
                rep, seconds = future.result()
            except Exception as exc:  # handed to write(), which reports it and fails the run
                rep, seconds = exc, 0.0
            yield futures[future], rep, seconds


def write(path: Path = REPORT, configs=None, log=sys.stderr, jobs: int = 1) -> list:
    """Recompile the rows whose key changed or that are new, keep the others, drop rows of configurations that
    no longer exist; saves after every compile (an interrupted run keeps its progress). Returns failures."""
    configs = all_configs() if configs is None else configs
    old = {(r["name"], r["arch"]): r for r in load_report(path)["rows"]}
    plan = _plan(configs)
    done = {}
    for cfg, arch, key, view, ci in plan:
        row = old.get((cfg.name, arch))
        if row is not None and row["key"] == key:
            done[(cfg.name, arch)] = _row(cfg, arch, key, view, ci, old=row)  # flags may have changed
    todo = [p for p in plan if (p[0].name, p[1]) not in done]
    print(f"{len(plan)} rows: {len(done)} current, {len(todo)} to compile, "
          f"{len(set(old) - {(p[0].name, p[1]) for p in plan})} dropped", file=log)
    header = _header()
    failures = []

    def save():
        rows = [done[(c.name, a)] for c, a, *_ in plan if (c.name, a) in done]
        report = dict(header, rows=rows)
        _save(report, path)
        return report

    save()
    for i, ((cfg, arch, key, view, ci), rep, seconds) in enumerate(_compile_all(todo, jobs), 1):
        if isinstance(rep, Exception):  # the row stays missing, so --check fails on it too
            failures.append(f"{cfg.name} sm_{arch}: {type(rep).__name__}: {rep}")
            print(f"[{i}/{len(todo)}] FAILED {failures[-1]}", file=log)
            continue
        done[(cfg.name, arch)] = _row(cfg, arch, key, view, ci, rep=rep)
        save()
        print(f"[{i}/{len(todo)}] {cfg.name} sm_{arch}: {rep.registers} regs, spills {rep.spill_stores}/"
              f"{rep.spill_loads}, shared {rep.shared} ({seconds:.1f} s)", file=log)
    report = save()
    path.with_suffix(".txt").write_text(render_text(report))
    return failures


def ci_compare(path: Path = REPORT, configs=None, arch: int = CI_ARCH) -> list:
    """Compile the CI subset live on `arch` and compare with the report: a compile is deterministic for a
    given key (source, specialisation, options, triton and ptxas versions), so registers, spills and shared
    must equal the row's exactly. Returns [{name, live, row, problems}]."""
    configs = all_configs() if configs is None else configs
    rows = {(r["name"], r["arch"]): r for r in load_report(path)["rows"]}
    results = []
    for cfg in ci_configs(configs):
        view = jit_view(cfg, arch)
        key = row_key(cfg, arch, view)
        rep = compile_config(cfg, arch, view)
        live = {"registers": rep.registers, "spill_stores": rep.spill_stores, "spill_loads": rep.spill_loads,
                "shared": rep.shared}
        row = rows.get((cfg.name, arch))
        problems = []
        if row is None:
            problems.append("no report row")
        elif row["key"] != key:
            problems.append("report row is stale (key differs): run --write")
        else:
            problems += [f"{k}: live {v}, report {row[k]}" for k, v in live.items() if row[k] != v]
        if cfg.default and rep.spills:
            problems.append(f"default configuration spills {rep.spill_stores}/{rep.spill_loads} bytes")
        if rep.shared > SHARED_LIMIT[arch]:
            problems.append(f"shared {rep.shared} > limit {SHARED_LIMIT[arch]}")
        results.append({"name": cfg.name, "arch": arch, "live": live, "problems": problems})
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tritonrnn.kernels._aot", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="recompile changed/new rows, drop removed ones")
    parser.add_argument("--check", action="store_true", help="report stale/missing rows without compiling")
    parser.add_argument("--ci", action="store_true", help=f"compile the CI subset for sm_{CI_ARCH}, compare")
    parser.add_argument("--jobs", type=int, default=1, help="--write: compile in this many processes")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout (for the tests)")
    parser.add_argument("--report", type=Path, default=REPORT, help=f"report path (default {REPORT})")
    args = parser.parse_args(argv)
    if not (args.write or args.check or args.ci):
        parser.error("choose --write, --check and/or --ci")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: the AOT compile needs real JIT functions", file=sys.stderr)
        return 2
    out, rc = {}, 0
    with pinned_environment():
        configs = all_configs()
        if args.write:
            start = time.perf_counter()
            out["write_failures"] = write(args.report, configs, jobs=args.jobs)
            out["write_seconds"] = round(time.perf_counter() - start, 1)
            print(f"--write: {out['write_seconds']} s", file=sys.stderr)
            rc |= bool(out["write_failures"])
        if args.check:
            start = time.perf_counter()
            out["check"] = check(args.report, configs)
            out["check_seconds"] = round(time.perf_counter() - start, 1)
            c = out["check"]
            rc |= bool(c["missing"] or c["stale"] or c["extra"] or c["uncovered"] or not c["text_current"])
        if args.ci:
            start = time.perf_counter()
            out["ci"] = ci_compare(args.report, configs)
            out["ci_seconds"] = round(time.perf_counter() - start, 1)
            rc |= any(r["problems"] for r in out["ci"])
    if args.json:
        print(json.dumps(out))
        return rc
    for failure in out.get("write_failures", []):
        print(f"compile failed: {failure}")
    if "check" in out:
        c = out["check"]
        for what in ("missing", "stale", "extra", "uncovered"):
            for item in c[what]:
                print(f"{what}: {item}")
        if not c["text_current"]:
            print(f"{args.report.with_suffix('.txt')} does not match {args.report.name}: run --write")
        print(f"check: {c['rows']} rows, {len(c['missing'])} missing, {len(c['stale'])} stale, "
              f"{len(c['extra'])} extra, {len(c['uncovered'])} uncovered kernels ({out['check_seconds']} s)")
    for r in out.get("ci", []):
        print(f"ci {r['name']} sm_{r['arch']}: {r['live']} {'; '.join(r['problems']) or 'agrees'}")
    return rc


if __name__ == "__main__":
    # Run as the package's module, not as __main__: the kernel modules build their AotConfigs from
    # tritonrnn.kernels._aot, and --jobs workers find _compile_job under that name.
    from tritonrnn.kernels._aot import main as _main

    sys.exit(_main())
