"""Which launch form and tiles serve a recurrence call (issue 12 item 5; KERNELS.md §2.3, §5).

`plan_for(H, B, dtype, device, direction)` decides, in this order:
1. TRITONRNN_RECURRENCE_TIER=A|B|C (and TRITONRNN_RECURRENCE_P) force a tier, for experiments; read per call.
2. A measured table for the device class (kernels/recurrence/measured.py, written by
   perf/recurrence_tiers.py --write-table from a GPU run under perf/results/) when it has the key.
3. The fit rule `fit`, from the compile facts: Tier A where the whole W_hhᵀ fits (fp32/tf32 H ≤ 64,
   bf16/fp16 H ≤ 128), Tier C with the smallest P whose resident slice fits shared memory and whose grid is
   co-resident, else Tier B. Tier C is used by `auto` only on a device class whose measured table says a
   GPU run showed it correct (coop_verified): until then its cross-program barrier is opt-in.
"""
from __future__ import annotations

import dataclasses
import functools
import os

import torch
import triton

TIERS = ("A", "B", "C")
BB = 16  # batch rows per program: BB 32 spills in the streamed forward (AOT report)


@dataclasses.dataclass(frozen=True)
class Plan:
    tier: str  # "A" (P = 1, all on chip), "B" (one launch per step), "C" (cooperative, one launch)
    HS: int  # hidden units per program (power of two >= 16); P = ceil(H / HS)
    BB: int = BB
    KC: int = 32  # K-chunk of the streamed product (Tier B)
    num_warps: int = 4
    num_stages: int = 1


@dataclasses.dataclass(frozen=True)
class DeviceFacts:
    device_class: str
    sm_count: int | None
    smem_per_block: int | None


@functools.lru_cache(maxsize=None)
def _cuda_facts(index: int) -> DeviceFacts:
    props = torch.cuda.get_device_properties(index)
    smem = getattr(props, "shared_memory_per_block_optin", None) or 48 * 1024
    name = f"{props.name.lower().replace(' ', '-')}-sm{props.major}{props.minor}"
    return DeviceFacts(name, props.multi_processor_count, int(smem))


def device_facts(device: torch.device) -> DeviceFacts:
    if device.type == "cuda" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        return _cuda_facts(device.index if device.index is not None else torch.cuda.current_device())
    return DeviceFacts(f"{device.type}-interpreter", None, None)


def element_bytes(dtype: torch.dtype, precision: str) -> int:
    """Bytes per resident W element as the compiler holds it: tf32x3 splits each fp32 into two (big, small)."""
    if dtype in (torch.float16, torch.bfloat16):
        return 2
    return 8 if precision == "tf32x3" else 4


def _hk(H: int) -> int:
    return max(16, triton.next_power_of_2(H))


def resident_smem(H: int, HS: int, gates: int, elt: int) -> int:
    """Shared memory of a resident W slice: G tiles [HK, HS]."""
    return gates * _hk(H) * HS * elt


def fit(H: int, B: int, dtype: torch.dtype, direction: str, precision: str, sm_count: int | None,
        smem_per_block: int | None, gates: int = 4) -> Plan:
    elt = element_bytes(dtype, precision)
    HK = _hk(H)
    if precision != "tf32x3":  # resident tf32x3 tiles spill kilobytes (KERNELS.md §2.5)
        if (elt == 4 and H <= 64) or (elt == 2 and H <= 128):
            return Plan("A", HS=HK, num_warps=8 if HK >= 64 else 4)
        if sm_count and smem_per_block:
            nb = triton.cdiv(B, BB)
            HS = HK
            while HS >= 16:
                P = triton.cdiv(H, HS)
                if P * nb > sm_count:
                    break
                if resident_smem(H, HS, gates, elt) <= smem_per_block:
                    return Plan("C", HS=HS, num_warps=8)
                HS //= 2
    return Plan("B", HS=min(HK, 32), KC=_stream_kc(HK, precision), num_warps=4)


def _stream_kc(HK: int, precision: str) -> int:
    """Tier B's K-chunk (AOT report, 4 warps, HS 32): KC 64 spills at H >= 512 (255 registers, the four
    gates' [KC, HS] W tiles and their addresses are live together), KC 32 compiles at 140-182 registers;
    tf32x3 splits every operand in two, so it streams 16."""
    return min(HK, 16 if precision == "tf32x3" else 32)


def _measured(device_class: str) -> dict:
    try:
        from .measured import MEASURED
    except ImportError:
        return {}
    return MEASURED.get(device_class, {})


def _forced(H: int, B: int, dtype, direction, precision, facts) -> Plan | None:
    tier = os.environ.get("TRITONRNN_RECURRENCE_TIER", "").strip().upper()
    if not tier:
        return None
    if tier not in TIERS:
        raise ValueError(f"TRITONRNN_RECURRENCE_TIER must be one of {TIERS}, got {tier!r}")
    HK = _hk(H)
    if tier == "A":
        return Plan("A", HS=HK, num_warps=8 if HK >= 64 else 4)
    P = int(os.environ.get("TRITONRNN_RECURRENCE_P", "0") or 0)
    if P < 0 or (P and P & (P - 1)):
        raise ValueError(f"TRITONRNN_RECURRENCE_P must be a power of two, got {P}")
    if tier == "C" and not P:
        best = fit(H, B, dtype, direction, precision, facts.sm_count, facts.smem_per_block)
        P = triton.cdiv(H, best.HS) if best.tier == "C" else 1
    HS = max(16, HK // P) if P else min(HK, 32)
    if tier == "C":
        return Plan("C", HS=HS, num_warps=8)
    return Plan("B", HS=HS, KC=_stream_kc(HK, precision), num_warps=4)


def plan_for(H: int, B: int, dtype: torch.dtype, device: torch.device, direction: str) -> Plan:
    from .launch import precision as _precision

    prec = _precision(dtype, device)
    facts = device_facts(device)
    forced = _forced(H, B, dtype, direction, prec, facts)
    if forced is not None:
        return forced
    table = _measured(facts.device_class)
    key = (H, B, str(dtype).replace("torch.", ""), direction)
    if key in table.get("plans", {}):
        return Plan(**table["plans"][key])
    plan = fit(H, B, dtype, direction, prec, facts.sm_count, facts.smem_per_block)
    if plan.tier == "C" and not table.get("coop_verified", False):
        # Safety of the default (issue 12): no cross-program barrier in `auto` before a GPU run proved it.
        plan = fit(H, B, dtype, direction, prec, None, None)
    return plan
