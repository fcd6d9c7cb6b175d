"""Optimizers of SPEC §2: SRSGD (§2.1), classical momentum / NAG with constant, Sutskever and restart
schedules (§2.2) and the Frank-Wolfe RNN optimizer (§2.3), fused per SPEC §2.4.

All three are `torch.optim.Optimizer`s:
- every param group carries its own hyper-parameters AND its counters (`step`, `k`, `F`, `mu`, ...), so
  `state_dict()` / `load_state_dict()` resume the exact trajectory and LR schedulers (or a hand-written
  schedule on any group key, e.g. Frank-Wolfe's `radius`) work without rebuilding the optimizer;
- per-parameter state is fp32 whatever the parameter dtype (fp32 / bf16 / fp16), and all arithmetic is
  fp32; float64 parameters keep fp64 state and arithmetic, and SRSGD / NAG take complex parameters (state of
  their dtype, the elementwise update on their real view, as torch's SGD), both on the foreach path;
  parameters are updated in place, `p.grad` is never written; parameters without a gradient are
  skipped; sparse gradients are rejected; `lr` may be a Python number or a one-element CPU tensor;
- the group counters are 0-dim CPU tensors (int64; NAG's `mu` float64), as torch.optim's `step`: a
  compiled step traces them instead of guarding on their values, so `torch.compile` of a step loop
  compiles once (issue 17; tests/optim/test_compile_once.py). An eager step reads them with `.item()`
  (host memory: no device synchronisation); `load_state_dict` accepts Python-number counters too;
- backend "triton" runs one multi-tensor launch per (param group, device, dtype) (kernels/multi_tensor.py),
  "foreach" the same math through `torch._foreach_*` ops, "auto" picks Triton on CUDA (and under
  TRITON_INTERPRET=1 on CPU), else foreach (tritonrnn._backend.resolve_backend); the kernels serve
  fp32 / bf16 / fp16: "triton" refuses other dtypes naming them, "auto" runs them through foreach. Nothing
  in `step()` synchronises the host with the device;
- DTensor parameters (FSDP2 `fully_shard`, tensor parallel): the state is a DTensor placed like its
  parameter and the step runs on each rank's local shard; Frank-Wolfe's p=2 norms are all-reduced over the
  mesh dimensions a parameter is sharded on (tests/test_distributed_modules.py). FSDP1
  (`FullyShardedDataParallel`) hands the optimizer plain views of each rank's flat shard, so Frank-Wolfe's
  p=2 norms would be per shard: use FSDP2 with Frank-Wolfe.

Mixed precision (GradScaler recipe, tested in tests/optim): keep fp32 parameters, run the forward under
`torch.autocast`, and step through the scaler:

    scaler.scale(loss).backward()
    scaler.step(opt)        # unscales the grads; skips opt.step() when any grad is inf/NaN, leaving the
    scaler.update()         # parameters AND the optimizer state (counters included) untouched

Frank-Wolfe with a scaler uses the streaming form (one `scaler.step(opt)` per inner iteration):
GradScaler does not accept closures.
"""
from __future__ import annotations

import math
import numbers

import torch

from ._backend import kernel_module, resolve_backend
from ._validate import FLOAT_DTYPES, check_float, check_int
from .schedules import restart_momentum, sutskever_momentum

__all__ = ["SRSGD", "NAG", "FrankWolfe"]

BACKENDS = ("auto", "triton", "foreach")


# ----------------------------------------------------------------------------------------------------
# Schedules shared by SRSGD and NAG(schedule="restart")
# ----------------------------------------------------------------------------------------------------
def _check_restart(restart, name: str = "restart"):
    """An int F >= 1, or stages [(until_step, F), ...] with strictly increasing until_step (SPEC §2.1)."""
    if isinstance(restart, (list, tuple)):
        if len(restart) == 0:
            raise ValueError(f"{name} must be an int or a non-empty list of (until_step, F) stages")
        stages, previous = [], 0
        for i, stage in enumerate(restart):
            if not isinstance(stage, (list, tuple)) or len(stage) != 2:
                raise TypeError(f"{name}[{i}] must be a pair (until_step, F), got {stage!r}")
            until = check_int(stage[0], f"{name}[{i}] until_step", low=1)
            if until <= previous:
                raise ValueError(f"{name} stages must have strictly increasing until_step, got {until} after {previous}")
            stages.append((until, check_int(stage[1], f"{name}[{i}] F", low=1)))
            previous = until
        return stages
    return check_int(restart, name, low=1)


def _period(restart, step: torch.Tensor) -> torch.Tensor:
    """The restart period F in force at optimizer step `step` (0-based, a counter tensor). A stage
    (until_step, F) holds while step < until_step; after the last stage its F stays."""
    if isinstance(restart, int):
        return torch.tensor(restart)
    period = torch.tensor(restart[-1][1])
    for until, F in reversed(restart):
        period = torch.where(step < until, F, period)
    return period


def _restart_position(group):
    """(F, k) of the step about to be taken: k = steps since the last restart, restarting when k
    reaches the period in force (so μ_k = (k mod F)/((k mod F)+3) with k < F, SPEC §2.1)."""
    F = _period(group["restart"], group["step"])
    return F, torch.where(group["k"] < F, group["k"], 0)


def _advance_restart(group) -> None:
    F, k = _restart_position(group)
    group["F"], group["k"] = F, k + 1


# ----------------------------------------------------------------------------------------------------
# Counters and step scalars (issue 17). dynamo guards on Python numbers, so counters held as ints made
# a compiled step recompile on every step. They are 0-dim CPU tensors instead, as torch.optim's `step`,
# and every scalar a step derives from them (μ_k, 1/k, bias corrections, ...) is computed by torch ops
# in float64. Why CPU and not the parameters' device: an eager step turns those scalars into Python
# numbers (`.item()` of host memory, never a device synchronisation) and passes them to the Triton
# kernels as runtime arguments (SPEC §2.4) and to the foreach ops as Python scalars (faster than tensor
# scalars, torch.optim's `_get_value`); a compiled step passes the tensors themselves (the custom ops of
# kernels/multi_tensor.py read them on the host inside the op), so nothing is guarded on or synchronised.
# ----------------------------------------------------------------------------------------------------
_COUNTER_DTYPES = {"step": torch.int64, "k": torch.int64, "F": torch.int64, "outer_step": torch.int64,
                   "mu": torch.float64}


def _counter(value, name: str):
    """A fresh 0-dim CPU tensor for counter `name` from a Python number (an older state_dict) or a tensor."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu")
    return torch.as_tensor(value, dtype=_COUNTER_DTYPES[name], device="cpu").reshape(()).clone()


def _f64(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().reshape(()).to(torch.float64)
    return torch.tensor(float(value), dtype=torch.float64)


def _host(scalars: dict) -> dict:
    """Eager: the scalars as Python numbers (CPU tensors: no device sync). Compiled: unchanged tensors."""
    if torch.compiler.is_compiling():
        return scalars
    return {n: v.item() if isinstance(v, torch.Tensor) else v for n, v in scalars.items()}


def _in_dtype(scalars: dict, dtype: torch.dtype) -> dict:
    """Tensor scalars (a compiled step) cast to the dtype a foreach bucket computes in: a 0-dim float64
    scalar would otherwise promote a 0-dim parameter's arithmetic to float64 (a Python scalar does not)."""
    return {n: v.to(dtype) if isinstance(v, torch.Tensor) else v for n, v in scalars.items()}


# ----------------------------------------------------------------------------------------------------
# foreach paths: the same math as the kernels in kernels/multi_tensor.py, through torch._foreach_* ops
# ----------------------------------------------------------------------------------------------------
# Scalars may be Python numbers (eager) or 0-dim tensors (compiled), hence no `alpha=`/`value=` taking
# them (those need numbers); group constants (weight_decay, betas, eps, radius) stay numbers.
_STATE_DTYPES = {torch.float32: torch.float32, torch.bfloat16: torch.float32, torch.float16: torch.float32,
                 torch.float64: torch.float64, torch.complex64: torch.complex64, torch.complex128: torch.complex128}
REAL_DTYPES = FLOAT_DTYPES + (torch.float64,)
COMPLEX_DTYPES = (torch.complex64, torch.complex128)


def _real(tensors):
    """Complex tensors as their real views (same storage): SRSGD and NAG are elementwise, so they update
    the real and imaginary parts alike, as torch's SGD does."""
    return [torch.view_as_real(t) if t.is_complex() else t for t in tensors]


def _compute(tensors):
    """The values the step computes with: fp32 for fp32 / bf16 / fp16, fp64 for fp64, complex as its real
    view. `.float()` is the tensor itself for fp32: callers only read these, never write into them."""
    return [t if t.dtype in (torch.float32, torch.float64) else t.float() for t in _real(tensors)]


def _coupled_grad(params32, grads32, weight_decay: float):
    return torch._foreach_add(grads32, params32, alpha=weight_decay) if weight_decay != 0 else grads32


def _srsgd_foreach(params, grads, bufs, *, lr, momentum, weight_decay):
    w = _compute(params)
    g = _coupled_grad(w, _compute(grads), weight_decay)
    v = torch._foreach_sub(w, torch._foreach_mul(g, lr))
    new = torch._foreach_sub(v, _real(bufs))
    torch._foreach_mul_(new, momentum)
    torch._foreach_add_(new, v)
    torch._foreach_copy_(_real(bufs), v)
    torch._foreach_copy_(_real(params), new)


def _nag_foreach(params, grads, velocities, *, lr, momentum, c_new, c_old, weight_decay):
    w = _compute(params)
    g = _coupled_grad(w, _compute(grads), weight_decay)
    velocities = _real(velocities)
    v_new = torch._foreach_mul(velocities, momentum)
    torch._foreach_sub_(v_new, torch._foreach_mul(g, lr))
    new = torch._foreach_mul(v_new, c_new)
    torch._foreach_add_(new, w)
    torch._foreach_sub_(new, torch._foreach_mul(velocities, c_old))
    torch._foreach_copy_(velocities, v_new)
    torch._foreach_copy_(_real(params), new)


def _grad_norm_foreach(params, grads, *, weight_decay):
    """Per-tensor (m, s), ‖g‖₂ = m·√s with m = max|g|, s = ‖g/m‖² (scale-safe, as kernels' grad_norm)."""
    g = _coupled_grad(_compute(params), _compute(grads), weight_decay)
    # The infinity norm has no identity on an empty tensor: those get m = 0 (and s = 0) directly.
    nonempty = [t for t in g if t.numel() > 0]
    found = iter(torch._foreach_norm(nonempty, math.inf) if nonempty else ())
    zero = g[0].new_zeros(())
    m = torch.stack([next(found) if t.numel() > 0 else zero for t in g])
    q = torch._foreach_div(g, list(torch.where(m > 0, m, 1).unbind()))
    return m, torch.stack(torch._foreach_norm(q, 2)).square()


def _blend_(xs, ys, f):
    """xs ← xs·(1 − f) + ys·f for a flag f ∈ {0, 1}: exactly xs or ys (finite values), one traced graph
    for both, where a Python branch on f would make dynamo guard on it."""
    torch._foreach_mul_(xs, 1.0 - f)
    torch._foreach_add_(xs, torch._foreach_mul(ys, f))


def _fw_foreach(params, grads, anchors, deltas, exp_avgs, exp_avg_sqs, scales, *, inv_k, keep, first, last, radius,
                lr, beta1, beta2, eps, step_size, inv_sqrt_bc2, weight_decay, p_inf, outer_adam):
    """`keep` = 1 − 1/k, computed by the caller in float64 before the scalars are cast to the compute dtype
    (1 − fp32(1/k) would round differently, and a compiled step would drift from the eager one)."""
    w = _compute(params)
    g = _coupled_grad(w, _compute(grads), weight_decay)
    if p_inf:
        s = torch._foreach_sign(g)
        torch._foreach_mul_(s, -radius)
    else:
        s = torch._foreach_mul(g, list(torch.neg(scales).unbind()))
    # k = 1 (first): anchor ← w, and Δ ← (1 − 1/k)Δ + (1/k)s is s (the stale Δ weighted by 0). A stale
    # non-finite anchor or Δ element can only sit where w itself is non-finite (the same step wrote both).
    _blend_(anchors, w, first)
    torch._foreach_mul_(deltas, keep)
    torch._foreach_add_(deltas, torch._foreach_mul(s, inv_k))
    new = torch._foreach_add(anchors, deltas)  # the inner iterate, replaced by the outer update at k = K
    if outer_adam:
        gh = torch._foreach_mul(deltas, -1.0 / radius)
        m = torch._foreach_mul(exp_avgs, beta1)
        torch._foreach_add_(m, gh, alpha=1.0 - beta1)
        v = torch._foreach_mul(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(v, gh, gh, value=1.0 - beta2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_mul_(denom, inv_sqrt_bc2)
        torch._foreach_add_(denom, eps)
        update = torch._foreach_div(m, denom)
        torch._foreach_mul_(update, step_size)
        outer = torch._foreach_sub(anchors, update)
        _blend_(exp_avgs, m, last)  # the moments move only with the outer update
        _blend_(exp_avg_sqs, v, last)
    else:
        outer = torch._foreach_add(anchors, torch._foreach_mul(deltas, lr))
    _blend_(new, outer, last)
    torch._foreach_copy_(params, new)


# ----------------------------------------------------------------------------------------------------
# Common machinery
# ----------------------------------------------------------------------------------------------------
def _state_like(p: torch.Tensor, *, copy: bool = False) -> torch.Tensor:
    """State for parameter p: fp32 for fp32 / bf16 / fp16, else p's own dtype (fp64, complex)."""
    dtype = _STATE_DTYPES[p.dtype]
    if copy:
        return p.detach().to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)
    # zeros_like keeps a DTensor parameter's mesh and placements (FSDP2 shards the state like the parameter).
    return torch.zeros_like(p, dtype=dtype, memory_format=torch.contiguous_format)


def _dtensor_layout(p):
    """(mesh, placements) of a DTensor parameter (FSDP2, tensor parallel), else None."""
    if not hasattr(p, "device_mesh") or not hasattr(p, "placements"):
        return None
    return (p.device_mesh, tuple(p.placements))


def _local(t):
    """The local shard of a DTensor (the same storage, so in-place updates reach the parameter); else t.
    SRSGD, NAG and Frank-Wolfe's p=inf step are elementwise, so they run on local shards unchanged."""
    return t.to_local() if _dtensor_layout(t) is not None else t


def _set_counter(group, name: str, start) -> None:
    value = group[name] if name in group else (start() if callable(start) else start)
    group[name] = _counter(value, name)


def _triton_dtype_message(dtype) -> str:
    return (f"backend='triton' runs parameters of dtype {[str(d) for d in FLOAT_DTYPES]}, got {dtype}: use "
            f"backend='foreach', or 'auto' (which runs {dtype} through foreach)")


class _Bucket:
    """Parameters of one group that share device and dtypes: one launch (or one foreach call) each."""

    def __init__(self, backend: str, key):
        self.backend, self.key = backend, key
        self.params, self.grads = [], []  # local tensors (a DTensor's shard): what the kernels see
        self.keys = []  # the parameters themselves: the optimizer's state is keyed by them


class _FusedOptimizer(torch.optim.Optimizer):
    """Shared plumbing: validation hook, bucketing, backend choice, plan cache, fp32 state on load."""

    def __init__(self, params, defaults):
        defaults["backend"] = self._check_backend(defaults["backend"])
        # Read by nothing here. It is a group key only because dynamo, tracing any torch.optim.Optimizer's
        # step, sets `capturable` = True in each group (torch/_dynamo/variables/optimizer.py): a group
        # without it, or with False, would differ after the first compiled step and compile the step again.
        defaults["capturable"] = True
        super().__init__(params, defaults)

    # -- validation --------------------------------------------------------------------------------
    @staticmethod
    def _check_backend(backend):
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        return backend

    PARAM_DTYPES = REAL_DTYPES + COMPLEX_DTYPES  # Frank-Wolfe: real only

    @staticmethod
    def _check_lr(lr):
        """A real number >= 0, or a one-element real floating CPU tensor (kept as given, so that changing it
        in place reaches the optimizer, as torch.optim's tensor lr)."""
        if isinstance(lr, torch.Tensor):
            if lr.numel() != 1 or not lr.dtype.is_floating_point:
                raise TypeError(f"lr as a tensor must have one element of a real floating dtype, got shape "
                                f"{tuple(lr.shape)} and dtype {lr.dtype}")
            if lr.device.type != "cpu":
                raise ValueError(f"lr as a tensor must be on the CPU (each step reads it on the host; a {lr.device} "
                                 f"tensor would synchronise the device every step), got {lr.device}")
            check_float(lr.item(), "lr", low=0.0)
            return lr
        return check_float(lr, "lr", low=0.0)

    def _check_group(self, group) -> None:
        """Validate (and normalise) a group's hyper-parameters in place; subclasses extend it."""
        group["lr"] = self._check_lr(group["lr"])
        group["weight_decay"] = check_float(group["weight_decay"], "weight_decay", low=0.0)
        group["backend"] = self._check_backend(group["backend"])
        for p in group["params"]:
            if p.dtype not in self.PARAM_DTYPES:
                raise TypeError(f"{type(self).__name__}: params must have dtype in "
                                f"{[str(d) for d in self.PARAM_DTYPES]}, got {p.dtype}")
            if group["backend"] == "triton" and p.dtype not in FLOAT_DTYPES:
                raise TypeError(_triton_dtype_message(p.dtype))

    def _init_counters(self, group) -> None:
        """Counters as fresh 0-dim CPU tensors: their start values, or the values a state_dict brought
        (tensors, or the Python numbers of an older state_dict). Subclasses add theirs."""
        _set_counter(group, "step", 0)

    def add_param_group(self, param_group) -> None:
        super().add_param_group(param_group)  # fills in the defaults
        group = self.param_groups[-1]
        try:
            self._check_group(group)
        except (TypeError, ValueError):
            self.param_groups.pop()  # a rejected group must not stay half-added
            raise
        self._init_counters(group)

    # -- per-step plumbing -----------------------------------------------------------------------------
    def _buckets(self, group):
        """Parameters with a gradient, grouped by (device, param dtype, grad dtype, layout, DTensor layout)."""
        buckets = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad
            if g.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            layout = _dtensor_layout(p)
            if layout != _dtensor_layout(g):
                raise ValueError(f"{type(self).__name__}: a parameter and its gradient must have the same DTensor "
                                 f"placements, got {layout} and {_dtensor_layout(g)}")
            key_param, p, g = p, _local(p), _local(g)
            # The kernels index flat storage: a non-contiguous parameter takes the foreach path.
            key = (p.device, p.dtype, g.dtype, p.is_contiguous(), layout)
            bucket = buckets.get(key)
            if bucket is None:
                backend = resolve_backend(group["backend"], p.device, torch_name="foreach")
                if backend == "triton" and (p.dtype not in FLOAT_DTYPES or g.dtype not in FLOAT_DTYPES):
                    if group["backend"] == "triton":
                        raise TypeError(_triton_dtype_message(p.dtype if p.dtype not in FLOAT_DTYPES else g.dtype))
                    backend = "foreach"  # "auto": the kernels serve fp32 / bf16 / fp16 only
                bucket = buckets[key] = _Bucket(backend if key[3] else "foreach", key)
            bucket.params.append(p)
            bucket.keys.append(key_param)
            bucket.grads.append(g if g.is_contiguous() or bucket.backend == "foreach" else g.contiguous())
        return list(buckets.values())

    def _plan(self, group_index: int, bucket):
        from .kernels.multi_tensor import MultiTensorPlan

        plans = self.__dict__.setdefault("_plans", {})
        key = (group_index, bucket.key)
        if key not in plans:
            plans[key] = MultiTensorPlan(bucket.key[0])
        return plans[key]

    @staticmethod
    def _kernels():
        return kernel_module("multi_tensor")  # traceable by torch.compile (an import statement is not always)

    def _launch(self, name, index, bucket, *tensors, scalars=None, **flags):
        """The multi-tensor kernel `name` on a bucket, `scalars` (from `_host`) as its runtime arguments.
        Under torch.compile through its custom op (a traced step has fake tensors without data_ptr()s; the
        op builds the plan from the real ones), the scalars stacked into one float64 CPU tensor."""
        kernels = self._kernels()
        scalars = scalars or {}
        if torch.compiler.is_compiling():
            args = (torch.stack([_f64(scalars[n]) for n in kernels.SCALARS[name]]),) if scalars else ()
            return getattr(kernels, f"{name}_op")(bucket.params, bucket.grads, *tensors, *args, **flags)
        return getattr(kernels, name)(self._plan(index, bucket), bucket.params, bucket.grads, *tensors,
                                      **scalars, **flags)

    def _state_names(self, group):
        """(name, initialised to a copy of w?) of each per-parameter state tensor; subclasses say."""
        raise NotImplementedError

    def _init_group(self, group) -> None:
        """Create the state of each parameter of `group` that has a gradient, lazily (its first step), as
        torch.optim. Named as torch's optimizers name theirs: dynamo runs `_init_group` eagerly while it
        traces a step (torch/_dynamo/variables/optimizer.py), so the first compiled step already sees the
        state and a compiled step loop compiles once, not once more after its first step (issue 17)."""
        names = self._state_names(group)
        for p in group["params"]:
            if p.grad is not None:
                for name, copy in names:
                    self._state(p, name, copy=copy)

    def _state(self, p, name, *, copy=False):
        state = self.state[p]
        if name not in state:
            state[name] = _state_like(p, copy=copy)
        return _local(state[name])

    def load_state_dict(self, state_dict) -> None:
        """torch casts floating state to each parameter's dtype on load; ours stays fp32 for fp32 / bf16 /
        fp16 parameters (SPEC §2). Group counters become fresh CPU tensors, also from Python numbers."""
        saved = state_dict["state"]
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        for index, values in saved.items():
            p = params[index]
            for name, value in values.items():
                if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
                    self.state[p][name] = value.to(device=p.device, dtype=_STATE_DTYPES[p.dtype],
                                                   memory_format=torch.contiguous_format, copy=True)
        for group in self.param_groups:
            group.setdefault("capturable", True)  # absent from state_dicts saved before it was a key
            self._init_counters(group)

    def _update(self) -> None:
        raise NotImplementedError

    def step(self, closure=None):
        """One optimizer step; `closure` (re-evaluating the loss) is called once, under enable_grad."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            self._update()
        return loss


# ----------------------------------------------------------------------------------------------------
# SPEC §2.1
# ----------------------------------------------------------------------------------------------------
class SRSGD(_FusedOptimizer):
    r"""Scheduled Restart SGD (SPEC §2.1): Nesterov momentum with a scheduled restart.

    Per param group, with k the steps this group has taken since its last restart (0-based)::

        g = grad + weight_decay·w;   v = w − lr·g;   w ← v + μ_k (v − v_prev);   v_prev ← v
        μ_k = (k mod F)/((k mod F) + 3)

    Args:
        params: parameters or param groups (each group may override every keyword below).
        lr: learning rate (>= 0); may change between steps (LR schedulers), momentum survives.
        restart: the period F (an int >= 1), or stages ``[(until_step, F), ...]``: F holds while the
            group's step count is < until_step; after the last stage its F stays. A restart happens when
            k reaches the F in force. The period is F as in the paper (the reference code's is F − 1).
        weight_decay: coupled L2 (added to the gradient; ``p.grad`` itself is not modified).
        backend: "auto" | "triton" | "foreach".

    Group counters (in ``param_groups``, hence in ``state_dict``): ``step`` (steps taken), ``k`` (steps
    since the last restart, including the last one) and ``F`` (the period of the last step), 0-dim int64
    CPU tensors. Every group advances on every step. Per-parameter state: ``v_prev`` (fp32; the
    parameter's dtype for fp64 / complex parameters), initialised to w on the first step.
    """

    def __init__(self, params, lr, restart=40, weight_decay=0.0, *, backend="auto"):
        super().__init__(params, dict(lr=lr, restart=restart, weight_decay=weight_decay, backend=backend))

    def _check_group(self, group) -> None:
        super()._check_group(group)
        group["restart"] = _check_restart(group["restart"])

    def _init_counters(self, group) -> None:
        super()._init_counters(group)
        _set_counter(group, "k", 0)
        _set_counter(group, "F", lambda: _period(group["restart"], group["step"]))

    def _state_names(self, group):
        return (("v_prev", True),)

    def _update(self) -> None:
        for index, group in enumerate(self.param_groups):
            self._init_group(group)
            F, k = _restart_position(group)
            scalars = _host(dict(lr=group["lr"], momentum=restart_momentum(k.double(), F),
                                 weight_decay=group["weight_decay"]))
            for bucket in self._buckets(group):
                bufs = [self._state(p, "v_prev") for p in bucket.keys]
                if bucket.backend == "triton":
                    self._launch("srsgd_step", index, bucket, bufs, scalars=scalars)
                else:
                    _srsgd_foreach(bucket.params, bucket.grads, bufs, **_in_dtype(scalars, _compute_dtype(bucket)))
            _advance_restart(group)
            group["step"] = group["step"] + 1


# ----------------------------------------------------------------------------------------------------
# SPEC §2.2
# ----------------------------------------------------------------------------------------------------
SCHEDULES = ("constant", "sutskever", "restart")


class NAG(_FusedOptimizer):
    r"""Classical momentum and Nesterov's accelerated gradient with the schedules of SPEC §2.2.

    CM:  v ← μ_t v − lr·∇f(θ);  θ ← θ + v.      NAG: v ← μ_t v − lr·∇f(θ + μ_t v);  θ ← θ + v.

    μ_t: ``schedule="constant"``: ``momentum``; ``"sutskever"``: Sutskever et al. (2013) eq. 5,
    min(1 − 2^(−1−log2(⌊t/250⌋+1)), momentum); ``"restart"``: the scheduled restart of SPEC §2.1,
    μ = (k mod F)/((k mod F)+3) with ``restart`` = F or stages (``momentum`` is not used then).

    How the NAG gradient point is realised (look-ahead parameters): with ``nesterov=True`` the parameters
    hold the look-ahead point φ_t = θ_t + μ_t v_t, so the gradient the caller computes at the parameters
    IS ∇f(θ_t + μ_t v_t), with no second forward pass. The step is then

        v_{t+1} = μ_t v_t − lr·g;   φ_{t+1} = φ_t + (1 + μ_{t+1}) v_{t+1} − μ_t v_t

    (θ_{t+1} = θ_t + v_{t+1}, φ_{t+1} = θ_{t+1} + μ_{t+1} v_{t+1}). With a constant μ this is the
    Sutskever/Bengio form φ ← φ + μ² v − (1+μ) lr·g that torch.optim.SGD(nesterov=True) also uses. The
    schedules are deterministic in the counters, so μ_{t+1} is known at step t; the μ already applied to
    the look-ahead is kept in the group as ``mu`` (so a change of ``momentum`` takes effect one step
    later under NAG). θ_t itself is ``p − mu · state['velocity']``. Weight decay is coupled L2 taken at
    the gradient point. tests/optim check this against a direct implementation of the equations.

    Group counters (0-dim CPU tensors): ``step``, ``mu`` (μ of the next step, float64), and for the restart
    schedule ``k`` and ``F`` as in SRSGD. Per-parameter state: ``velocity`` (v, zeros at start; fp32, or
    the parameter's dtype for fp64 / complex parameters).
    """

    def __init__(self, params, lr, momentum=0.9, *, schedule="constant", nesterov=True, restart=None,
                 weight_decay=0.0, backend="auto"):
        super().__init__(params, dict(lr=lr, momentum=momentum, schedule=schedule, nesterov=nesterov,
                                      restart=restart, weight_decay=weight_decay, backend=backend))

    def _check_group(self, group) -> None:
        super()._check_group(group)
        group["momentum"] = check_float(group["momentum"], "momentum", low=0.0, high=1.0, high_open=True)
        if not isinstance(group["schedule"], str) or group["schedule"] not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {group['schedule']!r}")
        if not isinstance(group["nesterov"], bool):
            raise TypeError(f"nesterov must be a bool, got {type(group['nesterov']).__name__}")
        if group["schedule"] == "restart":
            if group["restart"] is None:
                raise ValueError("restart (F or [(until_step, F), ...]) is required with schedule='restart'")
            group["restart"] = _check_restart(group["restart"])
        elif group["restart"] is not None:
            raise ValueError(f"restart is only used with schedule='restart', got schedule={group['schedule']!r}")

    def _init_counters(self, group) -> None:
        super()._init_counters(group)
        _set_counter(group, "k", 0)
        if group["schedule"] == "restart":
            _set_counter(group, "F", lambda: _period(group["restart"], torch.tensor(0)))
        else:
            group.setdefault("F", None)
        _set_counter(group, "mu", lambda: self._scheduled_mu(group))

    @staticmethod
    def _scheduled_mu(group) -> torch.Tensor:
        """μ of the step about to be taken, from the group's counters (a float64 tensor)."""
        if group["schedule"] == "constant":
            return _f64(group["momentum"])
        if group["schedule"] == "sutskever":
            return sutskever_momentum(group["step"], group["momentum"])
        F, k = _restart_position(group)
        return restart_momentum(k.double(), F)

    def _state_names(self, group):
        return (("velocity", False),)

    def _update(self) -> None:
        for index, group in enumerate(self.param_groups):
            self._init_group(group)
            nesterov = group["nesterov"]
            mu = group["mu"] if nesterov else self._scheduled_mu(group)
            if group["schedule"] == "restart":
                _advance_restart(group)
            group["step"] = group["step"] + 1
            mu_next = self._scheduled_mu(group)
            c_new, c_old = (1.0 + mu_next, mu) if nesterov else (1.0, 0.0)
            scalars = _host(dict(lr=group["lr"], momentum=mu, c_new=c_new, c_old=c_old,
                                 weight_decay=group["weight_decay"]))
            for bucket in self._buckets(group):
                velocities = [self._state(p, "velocity") for p in bucket.keys]
                if bucket.backend == "triton":
                    self._launch("nag_step", index, bucket, velocities, scalars=scalars)
                else:
                    _nag_foreach(bucket.params, bucket.grads, velocities,
                                 **_in_dtype(scalars, _compute_dtype(bucket)))
            group["mu"] = mu_next


# ----------------------------------------------------------------------------------------------------
# SPEC §2.3
# ----------------------------------------------------------------------------------------------------
def _check_p(p):
    if isinstance(p, str):
        if p.strip().lower() in ("inf", "infinity"):
            return math.inf
        raise ValueError(f"p must be 2 or inf, got {p!r}")
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"p must be 2 or inf, got {type(p).__name__}")
    if p == 2:
        return 2
    if p == math.inf:
        return math.inf
    raise ValueError(f"p must be 2 or inf, got {p!r}")


class FrankWolfe(_FusedOptimizer):
    r"""The Frank-Wolfe RNN optimizer (Yue et al., Algorithm 1; SPEC §2.3).

    Each ``step()`` is one inner iteration k = 1..K (K = ``inner_steps``) on the gradient the caller just
    computed (streaming use, one fresh minibatch per call); ``step(closure)`` runs the rest of the
    current window (all K inner iterations when called at a window start), calling the closure once per
    inner iteration, and returns the first loss (the one at the outer iterate)::

        k = 1:  anchor ← w;  Δ ← 0
        s_k = LMO(g):  p=2: −δ g/‖g‖₂ (per tensor, or one norm over the group with norm="global");
                       p=inf: −δ sign(g);  ‖g‖ = 0 gives s_k = 0
        Δ ← (1 − 1/k) Δ + (1/k) s_k;   w ← anchor + Δ        (the next gradient is taken there)
        k = K:  outer="sgd":  w ← anchor + lr·Δ
                outer="adam": w ← anchor, then one Adam step (lr, betas, eps; torch.optim.Adam's
                formula) on the gradient −Δ/δ

    Args:
        lr: the outer step η.  radius: δ (> 0), a group key: schedulers may change it like ``lr``.
        inner_steps: K >= 1.  p: 2 or inf.  norm: "tensor" | "global".  outer: "adam" | "sgd".
        betas, eps: Adam's (outer="adam").  weight_decay: coupled L2 added to the gradient before the LMO.

    Group counters (0-dim int64 CPU tensors): ``k`` (inner iterations done in the current window, 0..K−1),
    ``outer_step`` (outer updates done: Adam's bias-correction count) and ``step`` (inner iterations in
    all). Per-parameter state (fp32; fp64 for fp64 parameters): ``anchor``, ``delta``, and ``exp_avg``,
    ``exp_avg_sq`` for the Adam outer update. ``eps`` must be at least the smallest normal number of the
    dtype the step computes in (fp32, or fp64 for a group of fp64 parameters): a smaller one rounds to 0
    there and divides 0 by 0 where Δ = 0.
    A parameter without a gradient is left as it is for that inner iteration.
    """

    # Real parameters only: the p = inf LMO −δ·sign(g) of a complex g has no elementwise real-view form.
    PARAM_DTYPES = REAL_DTYPES

    def __init__(self, params, lr, radius, inner_steps=1, *, p=2, norm="tensor", outer="adam",
                 betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, backend="auto"):
        super().__init__(params, dict(lr=lr, radius=radius, inner_steps=inner_steps, p=p, norm=norm, outer=outer,
                                      betas=betas, eps=eps, weight_decay=weight_decay, backend=backend))

    def _check_group(self, group) -> None:
        super()._check_group(group)
        group["radius"] = check_float(group["radius"], "radius", low=0.0, low_open=True)
        group["inner_steps"] = check_int(group["inner_steps"], "inner_steps", low=1)
        group["p"] = _check_p(group["p"])
        if not isinstance(group["norm"], str) or group["norm"] not in ("tensor", "global"):
            raise ValueError(f"norm must be 'tensor' or 'global', got {group['norm']!r}")
        if not isinstance(group["outer"], str) or group["outer"] not in ("adam", "sgd"):
            raise ValueError(f"outer must be 'adam' or 'sgd', got {group['outer']!r}")
        betas = group["betas"]
        if not isinstance(betas, (list, tuple)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        group["betas"] = (check_float(betas[0], "betas[0]", low=0.0, high=1.0, high_open=True),
                          check_float(betas[1], "betas[1]", low=0.0, high=1.0, high_open=True))
        # eps below the compute dtype's smallest normal rounds to 0 (or to a subnormal a GPU flushes to 0)
        # and Adam's m/(√v·c + eps) is 0/0 where Δ = 0 (issue 14).
        compute = (torch.float64 if group["params"] and all(p.dtype == torch.float64 for p in group["params"])
                   else torch.float32)
        tiny = torch.finfo(compute).tiny
        group["eps"] = check_float(group["eps"], "eps", low=0.0)
        if group["eps"] < tiny:
            raise ValueError(f"eps must be >= {tiny} (the smallest normal {compute}, the dtype this group's step "
                             f"computes in): a smaller eps rounds to 0 and divides 0 by 0, got {group['eps']}")

    def _init_counters(self, group) -> None:
        super()._init_counters(group)
        _set_counter(group, "k", 0)
        _set_counter(group, "outer_step", 0)

    def step(self, closure=None):
        if closure is None:
            with torch.no_grad():
                self._update()
            return None
        calls = max(max(g["inner_steps"] - int(g["k"]), 1) for g in self.param_groups)
        first = None
        for i in range(calls):
            with torch.enable_grad():
                loss = closure()
            if i == 0:
                first = loss
            with torch.no_grad():
                self._update()
        return first

    def _state_names(self, group):
        moments = (("exp_avg", False), ("exp_avg_sq", False)) if group["outer"] == "adam" else ()
        return (("anchor", True), ("delta", False)) + moments

    def _update(self) -> None:
        for index, group in enumerate(self.param_groups):
            self._init_group(group)
            K = group["inner_steps"]
            k = torch.clamp(group["k"] + 1, max=K)  # a K lowered mid-window ends the window now
            last = k == K
            outer_step = group["outer_step"] + 1  # 1-based count of Adam steps, this one included
            outer_adam = group["outer"] == "adam"
            p_inf = group["p"] == math.inf
            buckets = self._buckets(group)
            scales = None if p_inf else self._scales(index, group, buckets)
            beta1, beta2 = group["betas"]
            t = outer_step.double()
            scalars = _host(dict(inv_k=1.0 / k.double(), first=(k == 1).double(), last=last.double(),
                                 radius=group["radius"], lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                                 step_size=group["lr"] / (1.0 - beta1 ** t),
                                 inv_sqrt_bc2=1.0 / torch.sqrt(1.0 - beta2 ** t), weight_decay=group["weight_decay"]))
            flags = dict(p_inf=p_inf, outer_adam=outer_adam)
            for i, bucket in enumerate(buckets):
                names = ("anchor", "delta", "exp_avg", "exp_avg_sq") if outer_adam else ("anchor", "delta")
                states = [[self._state(p, name) for p in bucket.keys] for name in names]
                states += [None] * (4 - len(states))
                scale = None if p_inf else scales[i]
                if bucket.backend == "triton" and torch.compiler.is_compiling():
                    self._launch("fw_step", index, bucket, *(x if x is not None else [] for x in states), scale,
                                 scalars=scalars, **flags)
                elif bucket.backend == "triton":
                    if scale is None:  # a placeholder pointer: P_INF never reads it
                        scale = states[0][0]
                    self._launch("fw_step", index, bucket, *states, scale, scalars=scalars, **flags)
                else:
                    foreach = _in_dtype(dict(scalars, keep=1.0 - scalars["inv_k"]), _compute_dtype(bucket))
                    _fw_foreach(bucket.params, bucket.grads, *states, scale, **foreach, **flags)
            group["k"] = torch.where(last, 0, k)
            group["outer_step"] = group["outer_step"] + last.long()
            group["step"] = group["step"] + 1

    def _scales(self, index, group, buckets):
        """Per bucket, a device tensor of δ/‖g‖₂ per parameter (0 where ‖g‖ = 0) in the bucket's compute
        dtype: per-tensor norms, or one norm over the whole group (all buckets) with norm="global".

        Scale-safe (issue 14): a norm is held as (m, s), ‖g‖ = m·√s with m = max|g|, so g is never squared
        unscaled (LAPACK's nrm2); a gradient scaled by 2^±80 gives the same step bitwise, where Σ g² under/
        overflowed fp32 to a zero step. Pairs combine as M = max m_i, S = Σ s_i (m_i/M)², in float64. No
        host synchronisation."""
        wd = group["weight_decay"]
        parts = []
        for bucket in buckets:
            if bucket.backend == "triton":
                m, ssq = self._launch("grad_norm", index, bucket, weight_decay=wd)
            else:
                m, ssq = _grad_norm_foreach(bucket.params, bucket.grads, weight_decay=wd)
            m, ssq = m.double(), ssq.double()
            layout = bucket.key[4]
            if layout is not None:  # a sharded parameter's norm combines its shards (SPEC §2.3: the whole tensor)
                mesh, placements = layout
                for dim, placement in enumerate(placements):
                    if placement.is_shard():
                        total = m.clone()
                        torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.MAX, group=mesh.get_group(dim))
                        ssq = _rescaled(m, ssq, total)
                        torch.distributed.all_reduce(ssq, group=mesh.get_group(dim))
                        m = total
            parts.append((m, ssq))
        if group["norm"] == "global" and parts:
            # One fixed-order reduction over the per-tensor pairs of every bucket (deterministic).
            device = parts[0][0].device
            m_all = torch.cat([m.to(device) for m, _ in parts])
            ssq_all = torch.cat([ssq.to(device) for _, ssq in parts])
            big = m_all.max()
            total = _rescaled(m_all, ssq_all, big).sum()
            parts = [(big.to(m.device).expand(m.numel()), total.to(m.device).expand(m.numel())) for m, _ in parts]
        radius = group["radius"]
        scales = []
        for bucket, (m, ssq) in zip(buckets, parts):
            # δ/(m·√s) as (δ/√s)/m: s >= 1 where m > 0 (the largest element counts 1).
            scale = torch.where(m > 0, radius / torch.sqrt(torch.where(m > 0, ssq, 1)) / torch.where(m > 0, m, 1), 0)
            scales.append(scale.to(_compute_dtype(bucket)).contiguous())
        return scales


def _rescaled(m, ssq, big):
    """s·(m/M)²: the sums of squares of norm pairs (m, s) restated against the common scale M >= m."""
    return ssq * (m / torch.where(big > 0, big, 1)).square()


def _compute_dtype(bucket) -> torch.dtype:
    """The real dtype a bucket's step computes in (fp64 for fp64 / complex128, else fp32)."""
    return torch.float64 if bucket.key[1] in (torch.float64, torch.complex128) else torch.float32
