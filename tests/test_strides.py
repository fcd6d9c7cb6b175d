"""Strides are inputs too (STYLE.md, issue 14): every public entry point on every backend, with every tensor
argument AND every cotangent flowing back drawn contiguous, transposed, sliced with a step, or expanded
(stride 0), gives the outputs and gradients of the contiguous call.

The layouts keep the values and change only the memory: a transposed tensor is the reversed-axes copy viewed
back; a stepped one lives at the even positions of a buffer twice as large in every axis, whose other elements
are NaN, so a read that ignores the strides lands on NaN; an expanded one repeats one slice along the role's
axis (tests/entry_points.py), so its values (and the contiguous call it is compared with) are drawn constant
along that axis. Each call mixes the three layouts over the arguments and cotangents and is compared with its
contiguous twin (same values, contiguous memory).

Tolerance: both calls compute the same function of the same fp32 values; only the reduction order of a GEMM
may change with the strides (BLAS picks kernels by layout). Each output is at most DEPTH fp32 operations deep
(T steps, each a dot of at most IN + 4H + 1 terms), and values are O(1), so tolerance(fp32, DEPTH) bounds it
(tests/entry_points.DEPTH; tests/test_row_isolation.py uses the same bound).
"""
import pytest
import torch

from tests.entry_points import DEPTH, ENTRIES, EXHAUSTIVE, EXPAND_DIM, entry_params
from tests.tolerance import assert_close


def ROTATIONS(entry):
    return (0, 1, 2) if EXHAUSTIVE else (ENTRIES.index(entry) % 3,)


LAYOUTS = ("transposed", "stepped", "expanded")


def _values(args, layouts, gen):
    """One value per argument; constant along the role's expand axis where its layout is expanded."""
    out = {}
    for a, how in zip(args, layouts):
        v = torch.randn(a.shape, generator=gen) * 0.5
        if a.positive:
            v = v.abs()
        out[a.name] = _constant_where_expanded(v, how, a.role)
    return out


def _constant_where_expanded(v, how, role):
    if how != "expanded":
        return v
    d = EXPAND_DIM[role]
    return v.narrow(d, 0, 1).expand(v.shape).clone()


def layout(v, how, role):
    """v with the same values in the memory layout `how` (v constant along the expand axis for "expanded")."""
    if how == "contiguous":
        return v.clone()
    if how == "transposed":
        perm = tuple(reversed(range(v.dim())))
        return v.permute(perm).contiguous().permute(perm)
    if how == "stepped":
        buf = torch.full([2 * s for s in v.shape], float("nan"), dtype=v.dtype)
        index = tuple(slice(None, None, 2) for _ in v.shape)
        buf[index] = v
        return buf[index]
    assert how == "expanded"
    d = EXPAND_DIM[role]
    return v.narrow(d, 0, 1).expand(v.shape)


def _run(call, params, entry, values, layouts, cotangent_layouts, seed):
    """Outputs and gradients (of every argument and parameter) of one call: arguments in `layouts`, output j's
    cotangent (seeded values, constant along the expand axis where its layout will be expanded) in
    cotangent_layouts[j % len]. The contiguous twin passes the same layouts list as `values_like`."""
    for p in params:
        p.grad = None
    leaves = {a.name: layout(values[a.name], how, a.role).requires_grad_() for a, how in zip(entry.args, layouts)}
    outs = call(**leaves)
    tensors, cotangents = [], []
    for j, (o, role) in enumerate(outs):
        if o.requires_grad:
            how = cotangent_layouts[j % len(cotangent_layouts)]
            g = torch.randn(o.shape, generator=torch.Generator().manual_seed(seed + j))
            g = _constant_where_expanded(g, how[1], role)
            tensors.append(o)
            cotangents.append(layout(g, how[0], role))
    torch.autograd.backward(tensors, cotangents)
    results = {f"output {j}": o.detach() for j, (o, _) in enumerate(outs)}
    results.update({f"d{name}": leaf.grad for name, leaf in leaves.items()})
    results.update({f"dparam {i}": p.grad for i, p in enumerate(params)})
    return results


@pytest.mark.parametrize("entry, backend", entry_params())
def test_any_strides_give_the_contiguous_result(entry, backend):
    """Argument i takes LAYOUTS[(i + k) % 3] and output j's cotangent LAYOUTS[(n + j + k) % 3]: every layout
    meets arguments and cotangents in each call. CI runs one rotation k per entry (its index mod 3, so across
    the table every layout meets every kind of argument); the exhaustive profile runs all three."""
    call, params = entry.build(backend)
    n = len(entry.args)
    for k in ROTATIONS(entry):
        arg_layouts = [LAYOUTS[(i + k) % 3] for i in range(n)]
        cot_layouts = [LAYOUTS[(n + j + k) % 3] for j in range(6)]
        values = _values(entry.args, arg_layouts, torch.Generator().manual_seed(k))
        expected = _run(call, params, entry, values, ["contiguous"] * n, [("contiguous", c) for c in cot_layouts],
                        seed=100 * k)
        got = _run(call, params, entry, values, arg_layouts, [(c, c) for c in cot_layouts], seed=100 * k)
        where = dict(zip([a.name for a in entry.args], arg_layouts))
        where["cotangents"] = cot_layouts[:sum(1 for key in expected if key.startswith("output"))]
        for key, want in expected.items():
            have = got[key]
            if want is None or have is None:
                assert (want is None) == (have is None), f"{key}: a gradient in one of the two calls only ({where})"
                continue
            assert_close(have, want, torch.float32, steps=DEPTH,
                         msg=lambda m, key=key, where=where: f"{key} differs with layouts {where}: {m}")
