"""Optimizers of SPEC §2: SRSGD (§2.1), classical momentum / NAG with constant, Sutskever and restart
schedules (§2.2) and the Frank-Wolfe RNN optimizer (§2.3), fused per SPEC §2.4.

All three are `torch.optim.Optimizer`s:
- every param group carries its own hyper-parameters AND its counters (`step`, `k`, `F`, `mu`, ...), so
  `state_dict()` / `load_state_dict()` resume the exact trajectory and LR schedulers (or a hand-written
  schedule on any group key, e.g. Frank-Wolfe's `radius`) work without rebuilding the optimizer;
- per-parameter state is fp32 whatever the parameter dtype (fp32 / bf16 / fp16), and all arithmetic is
  fp32; parameters are updated in place, `p.grad` is never written; parameters without a gradient are
  skipped; sparse gradients are rejected;
- backend "triton" runs one multi-tensor launch per (param group, device, dtype) (kernels/multi_tensor.py),
  "foreach" the same math through `torch._foreach_*` ops, "auto" picks Triton on CUDA (and under
  TRITON_INTERPRET=1 on CPU), else foreach (tritonrnn._backend.resolve_backend). Nothing in `step()`
  synchronises the host with the device;
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


def _period(restart, step: int) -> int:
    """The restart period F in force at optimizer step `step` (0-based). A stage (until_step, F) holds
    while step < until_step; after the last stage its F stays."""
    if isinstance(restart, int):
        return restart
    for until, F in restart:
        if step < until:
            return F
    return restart[-1][1]


def _restart_position(group) -> tuple[int, int]:
    """(F, k) of the step about to be taken: k = steps since the last restart, restarting when k
    reaches the period in force (so μ_k = (k mod F)/((k mod F)+3) with k < F, SPEC §2.1)."""
    F = _period(group["restart"], group["step"])
    k = group["k"]
    return F, (k if k < F else 0)


def _advance_restart(group) -> None:
    F, k = _restart_position(group)
    group["F"], group["k"] = F, k + 1


# ----------------------------------------------------------------------------------------------------
# foreach paths: the same math as the kernels in kernels/multi_tensor.py, through torch._foreach_* ops
# ----------------------------------------------------------------------------------------------------
def _fp32(tensors):
    # .float() is the tensor itself for fp32: callers only read these, never write into them.
    return [t.float() for t in tensors]


def _coupled_grad(params32, grads32, weight_decay: float):
    return torch._foreach_add(grads32, params32, alpha=weight_decay) if weight_decay != 0 else grads32


def _srsgd_foreach(params, grads, bufs, *, lr, momentum, weight_decay):
    w = _fp32(params)
    g = _coupled_grad(w, _fp32(grads), weight_decay)
    v = torch._foreach_add(w, g, alpha=-lr)
    new = torch._foreach_add(v, torch._foreach_sub(v, bufs), alpha=momentum)
    torch._foreach_copy_(bufs, v)
    torch._foreach_copy_(params, new)


def _nag_foreach(params, grads, velocities, *, lr, momentum, c_new, c_old, weight_decay):
    w = _fp32(params)
    g = _coupled_grad(w, _fp32(grads), weight_decay)
    v_new = torch._foreach_mul(velocities, momentum)
    torch._foreach_add_(v_new, g, alpha=-lr)
    new = torch._foreach_add(w, v_new, alpha=c_new)
    torch._foreach_add_(new, velocities, alpha=-c_old)
    torch._foreach_copy_(velocities, v_new)
    torch._foreach_copy_(params, new)


def _grad_sumsq_foreach(params, grads, *, weight_decay):
    g = _coupled_grad(_fp32(params), _fp32(grads), weight_decay)
    return torch.stack(torch._foreach_norm(g, 2)).square()


def _fw_foreach(params, grads, anchors, deltas, exp_avgs, exp_avg_sqs, scales, *, k, inner_steps, radius, lr,
                p_inf, outer_adam, beta1, beta2, eps, outer_step, weight_decay):
    w = _fp32(params)
    g = _coupled_grad(w, _fp32(grads), weight_decay)
    if p_inf:
        s = torch._foreach_sign(g)
        torch._foreach_mul_(s, -radius)
    else:
        s = torch._foreach_mul(g, list(torch.neg(scales).unbind()))
    if k == 1:
        torch._foreach_copy_(anchors, w)
        torch._foreach_copy_(deltas, s)
    else:
        torch._foreach_mul_(deltas, 1.0 - 1.0 / k)
        torch._foreach_add_(deltas, s, alpha=1.0 / k)
    if k < inner_steps:
        new = torch._foreach_add(anchors, deltas)
    elif outer_adam:
        gh = torch._foreach_mul(deltas, -1.0 / radius)
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, gh, alpha=1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, gh, gh, value=1.0 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_mul_(denom, 1.0 / math.sqrt(1.0 - beta2 ** outer_step))
        torch._foreach_add_(denom, eps)
        new = torch._foreach_addcdiv(anchors, exp_avgs, denom, value=-lr / (1.0 - beta1 ** outer_step))
    else:
        new = torch._foreach_add(anchors, deltas, alpha=lr)
    torch._foreach_copy_(params, new)


# ----------------------------------------------------------------------------------------------------
# Common machinery
# ----------------------------------------------------------------------------------------------------
def _fp32_like(p: torch.Tensor, *, copy: bool = False) -> torch.Tensor:
    if copy:
        return p.detach().to(dtype=torch.float32, memory_format=torch.contiguous_format, copy=True)
    # zeros_like keeps a DTensor parameter's mesh and placements (FSDP2 shards the state like the parameter).
    return torch.zeros_like(p, dtype=torch.float32, memory_format=torch.contiguous_format)


def _dtensor_layout(p):
    """(mesh, placements) of a DTensor parameter (FSDP2, tensor parallel), else None."""
    if not hasattr(p, "device_mesh") or not hasattr(p, "placements"):
        return None
    return (p.device_mesh, tuple(p.placements))


def _local(t):
    """The local shard of a DTensor (the same storage, so in-place updates reach the parameter); else t.
    SRSGD, NAG and Frank-Wolfe's p=inf step are elementwise, so they run on local shards unchanged."""
    return t.to_local() if _dtensor_layout(t) is not None else t


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
        super().__init__(params, defaults)

    # -- validation --------------------------------------------------------------------------------
    @staticmethod
    def _check_backend(backend):
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        return backend

    def _check_group(self, group) -> None:
        """Validate (and normalise) a group's hyper-parameters in place; subclasses extend it."""
        group["lr"] = check_float(group["lr"], "lr", low=0.0)
        group["weight_decay"] = check_float(group["weight_decay"], "weight_decay", low=0.0)
        group["backend"] = self._check_backend(group["backend"])

    def _init_counters(self, group) -> None:
        group.setdefault("step", 0)

    def add_param_group(self, param_group) -> None:
        super().add_param_group(param_group)  # fills in the defaults
        group = self.param_groups[-1]
        try:
            for p in group["params"]:
                if p.dtype not in FLOAT_DTYPES:
                    raise TypeError(f"params must have dtype in {[str(d) for d in FLOAT_DTYPES]}, got {p.dtype}")
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

    def _launch(self, name, index, bucket, *tensors, **hyper):
        """The multi-tensor kernel `name` on a bucket. Under torch.compile through its custom op (a traced
        step has fake tensors without data_ptr()s; the op builds the plan from the real ones)."""
        kernels = self._kernels()
        if torch.compiler.is_compiling():
            return getattr(kernels, f"{name}_op")(bucket.params, bucket.grads, *tensors, **hyper)
        return getattr(kernels, name)(self._plan(index, bucket), bucket.params, bucket.grads, *tensors, **hyper)

    def _state(self, p, name, *, copy=False):
        state = self.state[p]
        if name not in state:
            state[name] = _fp32_like(p, copy=copy)
        return _local(state[name])

    def load_state_dict(self, state_dict) -> None:
        """torch casts floating state to each parameter's dtype on load; ours stays fp32 (SPEC §2)."""
        saved = state_dict["state"]
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        for index, values in saved.items():
            p = params[index]
            for name, value in values.items():
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    self.state[p][name] = value.to(device=p.device, dtype=torch.float32,
                                                   memory_format=torch.contiguous_format, copy=True)

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
    since the last restart, including the last one) and ``F`` (the period of the last step). Every group
    advances on every step. Per-parameter state: ``v_prev`` (fp32, initialised to w on the first step).
    """

    def __init__(self, params, lr, restart=40, weight_decay=0.0, *, backend="auto"):
        super().__init__(params, dict(lr=lr, restart=restart, weight_decay=weight_decay, backend=backend))

    def _check_group(self, group) -> None:
        super()._check_group(group)
        group["restart"] = _check_restart(group["restart"])

    def _init_counters(self, group) -> None:
        super()._init_counters(group)
        group.setdefault("k", 0)
        group.setdefault("F", _period(group["restart"], group["step"]))

    def _update(self) -> None:
        for index, group in enumerate(self.param_groups):
            F, k = _restart_position(group)
            hyper = dict(lr=group["lr"], momentum=restart_momentum(k, F), weight_decay=group["weight_decay"])
            for bucket in self._buckets(group):
                bufs = [self._state(p, "v_prev", copy=True) for p in bucket.keys]
                if bucket.backend == "triton":
                    self._launch("srsgd_step", index, bucket, bufs, **hyper)
                else:
                    _srsgd_foreach(bucket.params, bucket.grads, bufs, **hyper)
            _advance_restart(group)
            group["step"] += 1


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

    Group counters: ``step``, ``mu`` (μ of the next step), and for the restart schedule ``k`` and ``F``
    as in SRSGD. Per-parameter state: ``velocity`` (fp32 v, zeros at start).
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
        group.setdefault("k", 0)
        group.setdefault("F", _period(group["restart"], 0) if group["schedule"] == "restart" else None)
        group.setdefault("mu", self._scheduled_mu(group))

    @staticmethod
    def _scheduled_mu(group) -> float:
        """μ of the step about to be taken, from the group's counters."""
        if group["schedule"] == "constant":
            return group["momentum"]
        if group["schedule"] == "sutskever":
            return sutskever_momentum(group["step"], group["momentum"])
        F, k = _restart_position(group)
        return restart_momentum(k, F)

    def _update(self) -> None:
        for index, group in enumerate(self.param_groups):
            nesterov = group["nesterov"]
            mu = group["mu"] if nesterov else self._scheduled_mu(group)
            if group["schedule"] == "restart":
                _advance_restart(group)
            group["step"] += 1
            mu_next = self._scheduled_mu(group)
            c_new, c_old = (1.0 + mu_next, mu) if nesterov else (1.0, 0.0)
            hyper = dict(lr=group["lr"], momentum=mu, c_new=c_new, c_old=c_old, weight_decay=group["weight_decay"])
            for bucket in self._buckets(group):
                velocities = [self._state(p, "velocity") for p in bucket.keys]
                if bucket.backend == "triton":
                    self._launch("nag_step", index, bucket, velocities, **hyper)
                else:
                    _nag_foreach(bucket.params, bucket.grads, velocities, **hyper)
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

    Group counters: ``k`` (inner iterations done in the current window, 0..K−1), ``outer_step`` (outer
    updates done: Adam's bias-correction count) and ``step`` (inner iterations in all). Per-parameter
    state (fp32): ``anchor``, ``delta``, and ``exp_avg``, ``exp_avg_sq`` for the Adam outer update.
    A parameter without a gradient is left as it is for that inner iteration.
    """

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
        group["eps"] = check_float(group["eps"], "eps", low=0.0)

    def _init_counters(self, group) -> None:
        super()._init_counters(group)
        group.setdefault("k", 0)
        group.setdefault("outer_step", 0)

    def step(self, closure=None):
        if closure is None:
            with torch.no_grad():
                self._update()
            return None
        calls = max(max(g["inner_steps"] - g["k"], 1) for g in self.param_groups)
        first = None
        for i in range(calls):
            with torch.enable_grad():
                loss = closure()
            if i == 0:
                first = loss
            with torch.no_grad():
                self._update()
        return first

    def _update(self) -> None:
        for index, group in enumerate(self.param_groups):
            K = group["inner_steps"]
            k = min(group["k"] + 1, K)  # a K lowered mid-window ends the window now
            last = k == K
            outer_adam = group["outer"] == "adam"
            p_inf = group["p"] == math.inf
            buckets = self._buckets(group)
            for bucket in buckets:
                for p in bucket.keys:
                    self._state(p, "anchor", copy=True)
                    self._state(p, "delta")
                    if outer_adam:
                        self._state(p, "exp_avg")
                        self._state(p, "exp_avg_sq")
            scales = None if p_inf else self._scales(index, group, buckets)
            beta1, beta2 = group["betas"]
            hyper = dict(k=k, inner_steps=K, radius=group["radius"], lr=group["lr"], p_inf=p_inf,
                         outer_adam=outer_adam, beta1=beta1, beta2=beta2, eps=group["eps"],
                         outer_step=group["outer_step"] + 1, weight_decay=group["weight_decay"])
            for i, bucket in enumerate(buckets):
                names = ("anchor", "delta", "exp_avg", "exp_avg_sq") if outer_adam else ("anchor", "delta")
                states = [[self._state(p, name) for p in bucket.keys] for name in names]
                states += [None] * (4 - len(states))
                scale = None if p_inf else scales[i]
                if bucket.backend == "triton" and torch.compiler.is_compiling():
                    self._launch("fw_step", index, bucket, *(x if x is not None else [] for x in states), scale,
                                 **hyper)
                elif bucket.backend == "triton":
                    if scale is None:  # a placeholder pointer: P_INF never reads it
                        scale = states[0][0]
                    self._launch("fw_step", index, bucket, *states, scale, **hyper)
                else:
                    _fw_foreach(bucket.params, bucket.grads, *states, scale, **hyper)
            group["k"] = 0 if last else k
            group["outer_step"] += int(last)
            group["step"] += 1

    def _scales(self, index, group, buckets):
        """Per bucket, an fp32 device tensor of δ/‖g‖ per parameter (0 where ‖g‖ = 0): per-tensor norms,
        or one norm over the whole group (all buckets) with norm="global". No host synchronisation."""
        wd = group["weight_decay"]
        sumsq = []
        for bucket in buckets:
            if bucket.backend == "triton":
                sumsq.append(self._launch("grad_sumsq", index, bucket, weight_decay=wd))
            else:
                sumsq.append(_grad_sumsq_foreach(bucket.params, bucket.grads, weight_decay=wd))
            layout = bucket.key[4]
            if layout is not None:  # a sharded parameter's norm sums its shards (SPEC §2.3: the whole tensor)
                mesh, placements = layout
                for dim, placement in enumerate(placements):
                    if placement.is_shard():
                        torch.distributed.all_reduce(sumsq[-1], group=mesh.get_group(dim))
        if group["norm"] == "global" and sumsq:
            # One fixed-order sum over the per-tensor values of every bucket (deterministic).
            total = torch.cat([s.to(sumsq[0].device) for s in sumsq]).sum()
            sumsq = [total.to(s.device).expand(s.numel()) for s in sumsq]
        radius = group["radius"]
        return [torch.where(s > 0, radius / torch.sqrt(torch.where(s > 0, s, torch.ones_like(s))),
                            torch.zeros_like(s)).contiguous() for s in sumsq]
