"""Which launch form and tiles serve a recurrence call (issue 12 item 5; KERNELS.md §2.3, §5).

One step body (step.py), three launch forms (launch.py); P = ⌈H / HS⌉ programs per batch tile of BB rows, grid
(P, ⌈B / BB⌉), program p owning HS hidden units with all their gate columns:
- Tier A: P = 1, the whole W_hhᵀ on chip, h in registers, no exchange, no barrier.
- Tier C: P cooperating programs per batch tile, the W_hh slice (forward [H, G·HS], backward [G·H, HS]) resident
  in shared memory for all T, h_{t-1} (backward: dz_{t+1}) exchanged through global memory, a barrier per step
  among the tile's programs; every program co-resident (grid <= SM count, cooperative launch).
- Tier B: the same sliced body, one launch per step (the kernel boundary is the barrier), W streamed in K-chunks
  of KC: any shape.

`plan_for(H, B, dtype, device, direction)` decides, in this order:
1. TRITONRNN_RECURRENCE_TIER=A|B|C (and TRITONRNN_RECURRENCE_P, a power of two) force a tier, for experiments;
   read at every call, so a benchmark can force a tier per row.
2. The measured table of the device class (measured.py, written by `python -m tritonrnn.perf.recurrence_tiers
   --write-table` from a GPU run under perf/results) where it has the exact key and its plan still applies.
3. The fit rule `fit`: a resident plan (Tier A, Tier C) only where it compiles without spills within the device's
   shared memory (`resident_fits`: the shared-memory model and the register rule below); Tier A where the whole
   W_hhᵀ does (LSTM: H <= 64), else Tier C at the smallest P whose slice does and whose grid P·⌈B/BB⌉ is
   co-resident, else Tier B. Never a resident tier for tf32x3 (its split operands spill). Safety of the default
   (issue 12): `auto` uses Tier C only on a device class whose measured table says a GPU run showed it correct
   ("coop_verified"); until then its cross-program barrier is opt-in and `auto` uses Tier A or B, whose only
   synchronisation is the kernel boundary.

Shared memory is one model, `resident_smem`, an upper bound of what this step body compiles to (set from the AOT
compile of every resident plan up to 227 KB on sm_90, and of every plan `fit` picks on sm_90 and sm_80; the
committed AOT report is held to it by tests/kernels/test_recurrence_dispatch.py): a
resident program holds its W slice, its staged dot operand (forward h_{t-1} [BB, H] in the weight's dtype, the
exchange's; backward dz_{t+1} [BB, G·H] fp32, as stored) and its fp32 result tile (forward [BB, G·HS], backward
[BB, HS]). It also reproduces KERNELS.md §2.3's prototype sizes: tf32 H 128 P 2 (152 KB), H 256 P 16 (104 KB),
H 512 P 32 BB 32 (200 KB), H 1024 P 128 (194 KB), the 288 KB that rules out tf32 H 256 P 4.

Registers, from the same AOT compile (sm_90, BB 16, 8 warps; a spill is what the AOT test refuses): fp32/tf32
plans within the shared-memory model never spill (at most 204 registers). Half plans spill once the resident slice
passes 2^15 elements (bf16 LSTM Tier A H 128: 255 registers, 664 bytes spilled; Tier C H 256 HS 64: 304 bytes;
RNN H 512 HS 128: 136 bytes) and, backward, once H passes 256 (the fp32 dz operand: RNN H 512 spills even at HS
16). So half plans stay within both (HALF_MAX_SLICE, HALF_BWD_MAX_HK), which moves KERNELS.md's prototype facts
for bf16 (Tier A H <= 128, P 4 at H 256) to Tier A H <= 64, P 8 at H 256, P 32 at H 512, Tier B at H 1024 and
for the backward beyond H 256. fp32 keeps KERNELS.md's smallest P (H 128: 2, 256: 8, 512: 32) but H 1024 (P 128
needs HS 8 < MIN_HS: Tier B); its backward, which stages dz [BB, 4H], reaches H 256.
"""
from __future__ import annotations

import dataclasses
import functools
import os

import torch

from .._aot import SHARED_LIMIT
from .._ops import slug
from . import measured as _measured

TIERS = ("A", "B", "C")
DIRECTIONS = ("fwd", "bwd")
ENV_TIER = "TRITONRNN_RECURRENCE_TIER"
ENV_P = "TRITONRNN_RECURRENCE_P"
BB = 16  # batch rows per program: BB 32 spills in the streamed forward (AOT report)
MIN_HS = 16  # hidden units per program: the backward's dh = dz W_hh[:, slice] is a dot with N = HS (tl.dot: >= 16)
# The register rule of half resident plans (module docstring): resident W slice elements, and the backward's H.
HALF_MAX_SLICE = 1 << 15
HALF_BWD_MAX_HK = 256
# Shared memory per block where the device does not say (the interpreter, the AOT report): sm_90's.
DEFAULT_SMEM = SHARED_LIMIT[90]


@dataclasses.dataclass(frozen=True)
class Plan:
    tier: str  # "A" (P = 1, all on chip), "B" (one launch per step), "C" (cooperative, one launch)
    HS: int  # hidden units per program (power of two >= 16); P = ceil(H / HS)
    BB: int = BB
    KC: int = 32  # K-chunk of the streamed product (Tier B)
    num_warps: int = 4
    num_stages: int = 1

    def programs(self, H: int) -> int:
        """P: programs per batch tile."""
        return -(-H // self.HS)

    def grid(self, H: int, B: int) -> tuple:
        return self.programs(H), -(-B // self.BB)


@dataclasses.dataclass(frozen=True)
class DeviceFacts:
    device_class: str  # the measured table's key: the GPU's name as tritonrnn.dispatch spells it ("nvidia-h200")
    sm_count: int | None  # None: no GPU (the interpreter)
    smem_per_block: int | None  # opt-in maximum, bytes


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def _cuda_facts(index: int) -> DeviceFacts:
    import triton  # a CUDA device runs the kernels, so triton is there; its driver reads the opt-in limit

    props = triton.runtime.driver.active.utils.get_device_properties(index)
    return DeviceFacts(slug(torch.cuda.get_device_name(index)), int(props["multiprocessor_count"]),
                       int(props["max_shared_mem"]))


def device_facts(device) -> DeviceFacts:
    """The device's class, SM count and opt-in shared memory per block; off a GPU (or under the interpreter)
    ("<type>-interpreter", None, None)."""
    device = torch.device(device)
    if device.type == "cuda" and not _interpreting():
        return _cuda_facts(device.index if device.index is not None else torch.cuda.current_device())
    return DeviceFacts(f"{device.type}-interpreter", None, None)


def element_bytes(dtype: torch.dtype, precision: str) -> int:
    """Bytes per resident W element as the compiler holds it: tf32x3 splits each fp32 into two (big, small)."""
    if dtype in (torch.float16, torch.bfloat16):
        return 2
    if dtype != torch.float32:
        raise TypeError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    return 8 if precision == "tf32x3" else 4


def _hk(H: int) -> int:
    """H as the kernels tile it (HK): the next power of two, at least 16 (tl.dot's K)."""
    return max(16, 1 << (H - 1).bit_length())


def resident_smem(plan: Plan, H: int, elt_bytes: int, direction: str = "fwd", gates: int = 4) -> int:
    """Bytes of shared memory one program of `plan` holds (the model of the module docstring). Tiers A / C: the
    resident W slice + the staged operand + the fp32 result tile. Tier B: one K-chunk of the operand and of W
    per stage (num_stages; the operand at the weight's size forward, fp32 backward). Dimensions are the padded
    tiles (HK, HS)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    HK, HS, G = _hk(H), plan.HS, gates
    if plan.tier == "B":  # forward [BB, KC] of h and [KC, G·HS] of W; backward [BB, KC] of dz and [KC, HS] of W
        if direction == "fwd":
            return plan.num_stages * (plan.BB * plan.KC + plan.KC * G * HS) * elt_bytes
        return plan.num_stages * (plan.BB * plan.KC * 4 + plan.KC * HS * elt_bytes)
    weights = G * HK * HS * elt_bytes
    if direction == "fwd":
        return weights + plan.BB * HK * elt_bytes + plan.BB * G * HS * 4
    return weights + plan.BB * G * HK * 4 + plan.BB * HS * 4


def resident_fits(plan: Plan, H: int, elt_bytes: int, direction: str, limit: int, gates: int = 4) -> bool:
    """Whether a resident plan (Tier A / C) compiles within `limit` bytes of shared memory and, for half weights
    (elt_bytes 2), within the register rule (module docstring)."""
    if resident_smem(plan, H, elt_bytes, direction, gates) > limit:
        return False
    if elt_bytes != 2:
        return True
    return gates * _hk(H) * plan.HS <= HALF_MAX_SLICE and (direction == "fwd" or _hk(H) <= HALF_BWD_MAX_HK)


def tier_a(H: int) -> Plan:
    HK = _hk(H)
    return Plan("A", HS=HK, num_warps=8 if HK >= 64 else 4)


def tier_b(H: int, precision: str, HS: int | None = None) -> Plan:
    """Tier B (AOT report, 4 warps, HS 32): K-chunks of 32 (KC 64 spills at H >= 512: 255 registers, the four
    gates' [KC, HS] W tiles and their addresses are live together; KC 32 compiles at 140-182 registers);
    tf32x3 splits every operand in two, so it streams 16."""
    HK = _hk(H)
    return Plan("B", HS=min(HK, HS or 32), KC=min(HK, 16 if precision == "tf32x3" else 32), num_warps=4)


def tier_c(HS: int) -> Plan:
    return Plan("C", HS=HS, num_warps=8)


def _cooperative(H, B, elt, direction, gates, sm_count, limit):
    """Tier C with the fewest programs per batch tile whose slice fits (resident_fits, `limit` bytes) and whose
    grid is co-resident (P·⌈B/BB⌉ <= sm_count), or None. More programs only widen the grid, so the search stops at the first
    P whose grid does not fit."""
    HS = _hk(H) // 2
    while HS >= MIN_HS:
        plan = tier_c(HS)
        P, nb = plan.grid(H, B)
        if P * nb > sm_count:
            return None
        if resident_fits(plan, H, elt, direction, limit, gates):
            return plan
        HS //= 2
    return None


def fit(H: int, B: int, dtype: torch.dtype, direction: str, precision: str, sm_count: int | None,
        smem_per_block: int | None, gates: int = 4, *, cooperative: bool = True) -> Plan:
    """The plan the compile facts give (module docstring). sm_count None (no GPU) or cooperative=False: never
    Tier C; smem_per_block None: DEFAULT_SMEM."""
    if H < 1 or B < 1:
        raise ValueError(f"H and B must be >= 1, got H={H}, B={B}")
    elt = element_bytes(dtype, precision)
    limit = smem_per_block or DEFAULT_SMEM
    if precision != "tf32x3":  # resident tf32x3 tiles spill kilobytes (KERNELS.md §2.5)
        if resident_fits(tier_a(H), H, elt, direction, limit, gates):
            return tier_a(H)
        if cooperative and sm_count:
            plan = _cooperative(H, B, elt, direction, gates, sm_count, limit)
            if plan is not None:
                return plan
    return tier_b(H, precision)


def _env_programs():
    """TRITONRNN_RECURRENCE_P as a power of two, or None where unset, empty or 0 (the tier's own choice)."""
    raw = os.environ.get(ENV_P, "").strip()
    try:
        P = int(raw or 0)
    except ValueError:
        P = -1
    if P < 0 or P & (P - 1):
        raise ValueError(f"{ENV_P} must be a power of two (0 or unset: the tier's own choice), got {raw!r}")
    return P or None


def _forced(tier, H, B, dtype, direction, precision, facts, gates=4) -> Plan:
    """The plan TRITONRNN_RECURRENCE_TIER asks for. Tier C without P: the fit rule's Tier C (verified or not),
    P = 1 off a GPU. A plan the model says overflows the device's shared memory, or a Tier C search that finds
    no co-resident grid, is a ValueError (a benchmark records it as "not applicable"); launch.py refuses the
    rest (Tier C at P > 1 without a GPU, a grid beyond the SM count). Resident tiers are allowed for tf32x3
    here: slow (spills), but what the experiment asked for."""
    P = _env_programs()
    HK = _hk(H)
    elt = element_bytes(dtype, precision)
    if tier == "A":
        if P not in (None, 1):
            raise ValueError(f"{ENV_TIER}=A runs one program per batch tile; {ENV_P}={P} asks for {P}")
        plan = tier_a(H)
    elif tier == "B":
        plan = tier_b(H, precision, max(MIN_HS, HK // P) if P else None)
    elif P is not None:
        plan = tier_c(max(MIN_HS, HK // P))
    elif facts.sm_count is None:
        plan = tier_c(HK)  # the interpreter runs programs one at a time: only P = 1 can meet its barrier
    else:
        plan = _cooperative(H, B, elt, direction, gates, facts.sm_count, facts.smem_per_block or DEFAULT_SMEM)
        if plan is None:
            raise ValueError(f"{ENV_TIER}=C at H={H}, B={B}, {dtype}, {direction}: no P with a slice in "
                             f"{facts.smem_per_block} bytes of shared memory and a grid of at most "
                             f"{facts.sm_count} co-resident programs")
    need = resident_smem(plan, H, elt, direction, gates)
    if facts.smem_per_block and need > facts.smem_per_block:
        raise ValueError(f"{ENV_TIER}={tier} at H={H}, {dtype} ({precision}), {direction}: {plan} needs {need} "
                         f"bytes of shared memory per program; the device has {facts.smem_per_block}")
    return plan


def dtype_key(dtype: torch.dtype) -> str:
    """The measured table's dtype spelling: "float32", "bfloat16", "float16"."""
    return str(dtype).replace("torch.", "")


def _entry(device_class: str, H: int, B: int, dtype, direction: str):
    table = _measured.MEASURED.get(device_class) or {}
    return (table.get("plans") or {}).get((H, B, dtype_key(dtype), direction))


def coop_verified(device_class: str) -> bool:
    """Whether a committed GPU run showed Tier C correct on this device class (issue 12, safety of the default)."""
    return bool((_measured.MEASURED.get(device_class) or {}).get("coop_verified", False))


def cudnn_faster(H: int, B: int, dtype: torch.dtype, device, direction: str) -> bool:
    """Whether the measured table says cuDNN beat every tier at this key (forward; forward + backward for
    "bwd"): the caller keeps cuDNN there for the families with a cuDNN form (KERNELS.md §5)."""
    return bool((_entry(device_facts(device).device_class, H, B, dtype, direction) or {}).get("cudnn_faster"))


def _measured_plan(entry, H, B, precision, facts, verified):
    """The table's plan if it still applies: measured at this precision (fp32 timed under TF32 says nothing of
    tf32x3), never resident for tf32x3, and Tier C only when verified and co-resident on this device."""
    if not entry or entry.get("precision", precision) != precision:
        return None
    plan = Plan(**{f.name: entry[f.name] for f in dataclasses.fields(Plan) if f.name in entry})
    if plan.tier != "B" and precision == "tf32x3":
        return None
    if plan.tier == "C":
        P, nb = plan.grid(H, B)
        if not verified or not facts.sm_count or P * nb > facts.sm_count:
            return None
    return plan


def plan_for(H: int, B: int, dtype: torch.dtype, device, direction: str, precision: str | None = None,
             gates: int = 4) -> Plan:
    """The plan of one call (module docstring). precision: launch.precision(dtype, device) unless given;
    gates: G of the cell (4 for the LSTM family, 1 for the RNN cells), which sizes the resident slice."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    device = torch.device(device)
    if precision is None:
        from .launch import precision as _precision  # launch imports this module: resolved at call time

        precision = _precision(dtype, device)
    facts = device_facts(device)
    tier = os.environ.get(ENV_TIER, "").strip().upper()
    if tier:
        if tier not in TIERS:
            raise ValueError(f"{ENV_TIER} must be one of {TIERS}, got {os.environ[ENV_TIER]!r}")
        return _forced(tier, H, B, dtype, direction, precision, facts, gates)
    verified = coop_verified(facts.device_class)
    plan = _measured_plan(_entry(facts.device_class, H, B, dtype, direction), H, B, precision, facts, verified)
    if plan is not None:
        return plan
    return fit(H, B, dtype, direction, precision, facts.sm_count, facts.smem_per_block, gates,
               cooperative=verified)
