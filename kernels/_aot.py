"""Ahead-of-time compile proof: every kernel must build for sm_80 and sm_90 on a CPU-only machine.

The interpreter accepts programs the real compiler rejects, so each kernel module lists representative
configurations in `AOT_CONFIGS`; this compiles them with `triton.compile(ASTSource(...), GPUTarget(...))`
and reads registers, spills and shared memory from the ptxas that triton ships (`ptxas -v`).

Run as `python -m tritonrnn.kernels._aot [--json]` (with TRITON_INTERPRET unset: compiling needs real
JIT functions, not the interpreter's).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
import tempfile

# Shared memory a block may use (bytes): A100 164 KB (sm_80), H100 227 KB (sm_90).
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
ARCHS = (80, 90)


@dataclasses.dataclass(frozen=True)
class AotConfig:
    """One compile configuration of one kernel: the signature maps each argument to a triton type
    string ("*fp32", "i64", "fp32", ...) or "constexpr"; `constexprs` gives the constexpr values."""

    name: str
    kernel: object
    signature: dict
    constexprs: dict
    num_warps: int = 4
    num_stages: int = 2
    default: bool = True  # a default configuration must compile with zero spills


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


def _jit_function(kernel):
    """Unwrap autotune/heuristics wrappers down to the JITFunction."""
    from triton.runtime.jit import JITFunction

    while not isinstance(kernel, JITFunction):
        if not hasattr(kernel, "fn"):
            raise TypeError(f"{kernel!r} is not a Triton JIT function (is TRITON_INTERPRET set?)")
        kernel = kernel.fn
    return kernel


def _ptxas() -> str:
    import triton.backends.nvidia as nvidia

    folder = os.path.join(os.path.dirname(nvidia.__file__), "bin")
    for name in ("ptxas-blackwell", "ptxas"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"no ptxas in {folder}")


def _ptxas_report(ptx: str, arch: int):
    gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        out = subprocess.run([_ptxas(), "-v", f"--gpu-name={gpu}", src, "-o", os.path.join(tmp, "k.cubin")],
                             capture_output=True, text=True, check=True)
    text = out.stdout + out.stderr
    regs = int(re.search(r"Used (\d+) registers", text).group(1))
    stores = re.search(r"(\d+) bytes spill stores", text)
    loads = re.search(r"(\d+) bytes spill loads", text)
    return regs, int(stores.group(1)) if stores else 0, int(loads.group(1)) if loads else 0


def compile_config(cfg: AotConfig, arch: int) -> AotReport:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn=_jit_function(cfg.kernel), signature=dict(cfg.signature), constexprs=dict(cfg.constexprs))
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})
    regs, stores, loads = _ptxas_report(compiled.asm["ptx"], arch)
    return AotReport(cfg.name, arch, regs, stores, loads, int(compiled.metadata.shared), cfg.default)


def _kernel_modules():
    package = importlib.import_module("tritonrnn.kernels")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"tritonrnn.kernels.{info.name}")


def all_configs():
    """AOT_CONFIGS of every module in tritonrnn.kernels."""
    return [cfg for module in _kernel_modules() for cfg in getattr(module, "AOT_CONFIGS", ())]


def uncovered_kernels(configs):
    """Launchable kernels (module-level JIT functions named `*_kernel`) that no AOT config compiles."""
    from triton.runtime.jit import JITFunction

    covered = {id(_jit_function(cfg.kernel)) for cfg in configs}
    missing = []
    for module in _kernel_modules():
        for attr, value in vars(module).items():
            if attr.endswith("_kernel"):
                try:
                    fn = _jit_function(value)
                except TypeError:
                    continue
                if isinstance(fn, JITFunction) and id(fn) not in covered:
                    missing.append(f"{module.__name__}.{attr}")
    return missing


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: the AOT compile needs real JIT functions", file=sys.stderr)
        return 2
    configs = all_configs()
    reports = [compile_config(cfg, arch) for cfg in configs for arch in ARCHS]
    missing = uncovered_kernels(configs)
    if "--json" in argv:
        print(json.dumps({"reports": [dataclasses.asdict(r) for r in reports], "uncovered": missing}))
    else:
        for name in missing:
            print(f"NOT COVERED by any AOT config: {name}")
        print(f"{'kernel configuration':58s} {'arch':>5s} {'regs':>5s} {'spill st/ld':>12s} {'shared':>8s}")
        for r in reports:
            print(f"{r.name:58s} sm_{r.arch:<3d}{r.registers:5d} {r.spill_stores:5d}/{r.spill_loads:<6d} {r.shared:8d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
