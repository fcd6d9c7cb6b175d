"""Row isolation (issue 14, "rows leak into each other"), the check shared by tests/test_row_isolation.py (every
entry point of tests/entry_points.py on every backend) and tests/nn/test_native_rows.py (the torch backend's
native paths): a NaN or inf at one element of one batch row of what a call reads (input, hx, carried state) or
of a cotangent flowing back never changes another row's outputs or gradients.

A call is `run(**leaves) -> [(output, batch axis or None)]`; `row_dims` gives each leaf's batch axis (None for a
weight, which every row reads: its gradient mixes the rows by definition and is not compared). The poisoned
call is compared with the clean one on every row but BAD: finite, and equal within the tolerance of `steps`
fp32 operations (the same computation on the same values; only a reduction order may differ).
"""
import torch

from tests.tolerance import assert_close

POISONS = (float("nan"), float("inf"))
BAD = 1  # the poisoned row (B >= 2 everywhere)


def _poison(t, dim, value, gen):
    """A copy of t with `value` at one random element of row BAD along `dim`."""
    t = t.detach().clone()
    index = [int(torch.randint(n, (1,), generator=gen)) for n in t.shape]
    index[dim] = BAD
    t[tuple(index)] = value
    return t


def _others(t, dim):
    keep = torch.tensor([b for b in range(t.shape[dim]) if b != BAD], device=t.device)
    return t.index_select(dim, keep)


def outputs_and_grads(run, leaves, row_dims, cotangent_poison=None, gen=None):
    """[(tensor, batch axis, label)] for every output and every batched leaf's gradient, under seeded
    cotangents (one element of row BAD of each set to `cotangent_poison` when given)."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in leaves.items()}
    outs = run(**leaves)
    tensors, cotangents = [], []
    for j, (o, dim) in enumerate(outs):
        if o.requires_grad:
            w = torch.randn(o.shape, generator=torch.Generator().manual_seed(2 + j), dtype=o.dtype).to(o.device)
            if cotangent_poison is not None and dim is not None and o.numel():
                w = _poison(w, dim, cotangent_poison, gen)
            tensors.append(o)
            cotangents.append(w)
    rowed = [k for k, d in row_dims.items() if d is not None]
    grads = torch.autograd.grad(tensors, [leaves[k] for k in rowed], cotangents, allow_unused=True)
    return ([(o.detach(), dim, f"output {j}") for j, (o, dim) in enumerate(outs)]
            + [(g, row_dims[k], f"d{k}") for k, g in zip(rowed, grads)])


def assert_rows_isolated(run, clean, row_dims, *, dtype, steps, one_at_a_time=True, seed=1):
    """Poison row BAD and compare the other rows with the clean call. one_at_a_time: each batched leaf alone,
    then the cotangents alone, for each value in POISONS; otherwise all of them at once (one call per value:
    a leak from any of them still shows, as NaN and inf propagate), for the slow interpreter."""
    want = outputs_and_grads(run, clean, row_dims)
    gen = torch.Generator().manual_seed(seed)
    rowed = [k for k, d in row_dims.items() if d is not None]
    for value in POISONS:
        groups = [([k], None) for k in rowed] + [([], value)] if one_at_a_time else [(rowed, value)]
        for names, cotangent in groups:
            leaves = {k: _poison(v, row_dims[k], value, gen) if k in names else v for k, v in clean.items()}
            got = outputs_and_grads(run, leaves, row_dims, cotangent, gen)
            where = f"{value} in row {BAD} of {names or ''}{' and of the cotangents' if cotangent else ''}"
            for (g, dim, label), (w, _, _) in zip(got, want):
                if w is None or g is None:
                    assert (w is None) == (g is None), f"{label}: a gradient in one call only ({where})"
                    continue
                if dim is None:
                    continue  # a weight's gradient sums over the rows
                g, w = _others(g, dim), _others(w, dim)
                assert torch.isfinite(g).all(), f"{where} reached another row of {label}"
                assert_close(g, w, dtype, steps, msg=f"{where}: {label} of another row changed")
