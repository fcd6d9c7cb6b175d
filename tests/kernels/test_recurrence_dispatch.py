"""The recurrence dispatcher (kernels/recurrence/dispatch.py; issue 12 item 5): the fit rule against the compile
facts of KERNELS.md §2.3, the environment overrides, the measured table, and the safety of the default (Tier C
only on a device class a GPU run verified; a cooperative grid never above the SM count). Pure Python: no kernel
runs here."""
import dataclasses

import pytest
import torch

from tritonrnn.kernels.recurrence import dispatch, measured

KB = 1024
H200 = dispatch.DeviceFacts("nvidia-h200", 132, 227 * KB)
HIDDEN = [1, 15, 16, 17, 32, 63, 64, 65, 100, 128, 129, 256, 300, 512, 1000, 1024, 2048]
BATCH = [1, 3, 16, 17, 64, 128, 200, 256, 512]
HALF = (torch.bfloat16, torch.float16)


@pytest.fixture
def on_h200(monkeypatch):
    """plan_for on an H200's facts, without the environment overrides and with an empty measured table."""
    monkeypatch.setattr(dispatch, "device_facts", lambda device: H200)
    monkeypatch.delenv(dispatch.ENV_TIER, raising=False)
    monkeypatch.delenv(dispatch.ENV_P, raising=False)
    monkeypatch.setattr(measured, "MEASURED", {})
    return monkeypatch


def _plan(H, B, dtype, direction="fwd", precision=None):
    precision = precision or ("tf32" if dtype == torch.float32 else "ieee")
    return dispatch.plan_for(H, B, dtype, torch.device("cuda"), direction, precision)


# ------------------------------------------------------------------------------------------ the fit rule
# Smallest P per H (None: Tier B) at B 16 on 132 SMs with 227 KB. fp32: KERNELS.md §2.3's compile facts, but H 1024
# (P 128 needs HS 8 < MIN_HS); the backward stages dz_{t+1} [BB, 4H] fp32 beside its slice: Tier B at H 512. Half:
# the register rule (slices of at most 2^15 elements; backward H <= 256), from this step body's AOT compile.
SMALLEST_P = {
    (torch.float32, "tf32"): ({32: 1, 64: 1, 128: 2, 256: 8, 512: 32, 1024: None},
                              {32: 1, 64: 1, 128: 2, 256: 8, 512: None, 1024: None}),
    (torch.bfloat16, "ieee"): ({64: 1, 128: 2, 256: 8, 512: 32, 1024: None},
                               {64: 1, 128: 2, 256: 8, 512: None, 1024: None}),
    (torch.float16, "ieee"): ({64: 1, 128: 2, 256: 8, 512: 32, 1024: None},
                              {64: 1, 128: 2, 256: 8, 512: None, 1024: None}),
}


@pytest.mark.parametrize("dtype,precision", list(SMALLEST_P))
@pytest.mark.parametrize("direction", ["fwd", "bwd"])
def test_fit_gives_the_smallest_p_of_the_compile_facts(dtype, precision, direction):
    """Tier A where W_hhᵀ fits (P = 1), else Tier C at the smallest P that fits, else Tier B."""
    for H, P in SMALLEST_P[(dtype, precision)][direction == "bwd"].items():
        plan = dispatch.fit(H, 16, dtype, direction, precision, 132, 227 * KB)
        if P is None:
            assert plan.tier == "B", (H, plan)
        else:
            assert (plan.tier, plan.programs(H)) == ("A" if P == 1 else "C", P), (H, plan)


def test_tier_a_serves_the_lstm_up_to_h_64():
    """Tier A for the LSTM (4 gates): H <= 64 in every dtype, both directions, with or without a GPU (fp32 H 128
    needs 296 KB; half H 128 spills: 255 registers). The RNN (1 gate) up to H 128."""
    for H in range(1, 300, 7):
        for dtype, limit in ((torch.float32, 64), (torch.bfloat16, 64), (torch.float16, 64)):
            precision = "tf32" if dtype == torch.float32 else "ieee"
            for direction in ("fwd", "bwd"):
                for facts in ((132, 227 * KB), (None, None)):
                    plan = dispatch.fit(H, 64, dtype, direction, precision, *facts)
                    assert (plan.tier == "A") == (H <= limit), (H, dtype, direction, facts, plan)
                    if plan.tier == "A":
                        assert plan.programs(H) == 1 and plan.HS >= H
                    rnn = dispatch.fit(H, 64, dtype, direction, precision, *facts, gates=1)
                    assert (rnn.tier == "A") == (H <= 128), (H, dtype, direction, facts, rnn)


@pytest.mark.parametrize("plan,H,elt,compiled_kb,exact", [
    (dispatch.Plan("C", HS=64), 128, 4, 152, True),  # tf32 H 128 P 2 BB 16
    (dispatch.Plan("C", HS=16, BB=32), 256, 4, 104, True),  # tf32 H 256 P 16 BB 32
    (dispatch.Plan("C", HS=16, BB=64), 256, 4, 144, True),  # tf32 H 256 P 16 BB 64 (wgmma)
    (dispatch.Plan("C", HS=16, BB=32), 512, 4, 200, True),  # tf32 H 512 P 32 BB 32
    (dispatch.Plan("C", HS=8), 1024, 4, 194, True),  # tf32 H 1024 P 128 BB 16
    (dispatch.Plan("C", HS=64), 256, 4, 288, True),  # tf32 H 256 P 4: the "needs 288 KB" of KERNELS.md
    (dispatch.Plan("C", HS=32, BB=32), 256, 4, 168, False),  # tf32 H 256 P 8 BB 32
    (dispatch.Plan("C", HS=32, BB=32), 512, 2, 164, False),  # bf16 H 512 P 16 BB 32
    (dispatch.Plan("A", HS=64), 64, 4, 68, False),  # tf32 Tier A H 64
    (dispatch.Plan("A", HS=128), 128, 2, 136, False),  # bf16 Tier A H 128
])
def test_shared_memory_model_matches_or_bounds_the_compiled_sizes(plan, H, elt, compiled_kb, exact):
    """resident_smem reproduces KERNELS.md §2.3's compiled shared memory or bounds it from above (never below:
    a plan the model admits fits the device)."""
    model = dispatch.resident_smem(plan, H, elt, "fwd")
    assert model == compiled_kb * KB if exact else model >= compiled_kb * KB, (model / KB, compiled_kb)


def test_tf32x3_never_gets_a_resident_tier():
    """Resident tf32x3 tiles spill (KERNELS.md §2.5): always Tier B, with the halved K-chunk."""
    for H in HIDDEN:
        for B in BATCH:
            for direction in ("fwd", "bwd"):
                plan = dispatch.fit(H, B, torch.float32, direction, "tf32x3", 132, 227 * KB)
                assert plan.tier == "B" and plan.KC == min(dispatch._hk(H), 16), (H, B, plan)


@pytest.mark.parametrize("sm_count", [8, 16, 78, 108, 132])
@pytest.mark.parametrize("smem", [99 * KB, 163 * KB, 227 * KB])
def test_every_plan_fits_and_a_cooperative_grid_never_exceeds_the_sms(sm_count, smem):
    for H in HIDDEN:
        for B in BATCH:
            for dtype in (torch.float32, torch.bfloat16):
                for direction in ("fwd", "bwd"):
                    for gates in (1, 4):
                        precision = "tf32" if dtype == torch.float32 else "ieee"
                        plan = dispatch.fit(H, B, dtype, direction, precision, sm_count, smem, gates)
                        assert plan.tier in dispatch.TIERS and plan.HS & (plan.HS - 1) == 0 and plan.HS >= 16
                        elt = dispatch.element_bytes(dtype, precision)
                        if plan.tier != "B":
                            assert dispatch.resident_smem(plan, H, elt, direction, gates) <= smem, (H, B, plan)
                            if dtype != torch.float32:  # the half register rule
                                assert gates * dispatch._hk(H) * plan.HS <= 1 << 15, (H, B, plan)
                                assert direction == "fwd" or H <= 256, (H, B, plan)
                        if plan.tier == "A":
                            assert plan.programs(H) == 1
                        if plan.tier == "C":
                            P, nb = plan.grid(H, B)
                            assert 1 < P and P * nb <= sm_count, (H, B, plan, sm_count)


def test_the_models_bound_this_step_bodys_aot_compile():
    """The committed AOT report (perf/results/aot-compile-report.json: every plan the dispatcher can pick, as the JIT
    compiles it) against the models: compiled shared memory never above resident_smem, and no resident plan the
    rule admits spills. (That the report covers every plan is tests/kernels/test_compile.py's check.)"""
    import json
    import pathlib
    import re

    path = pathlib.Path(__file__).resolve().parents[2] / "perf" / "results" / "aot-compile-report.json"
    name = re.compile(r"recurrence_(fwd|bwd)_(\w+?)_(fp32|bf16|fp16)_(tf32x3|tf32|ieee)_H(\d+)_([ABC])\d+_HS(\d+)"
                      r"_BB(\d+)_KC(\d+)_w(\d+)")
    gates = {"lstm": 4, "nesterov_lstm": 4, "momentum_lstm": 4, "rnn_tanh": 1, "rnn_relu": 1, "rnn_modrelu": 1}
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    for row in json.loads(path.read_text())["rows"]:
        m = name.match(row["name"])
        if not m or row["arch"] != 90:
            continue
        direction, cell, dt, precision, H, tier, HS, BB, KC, warps = m.groups()
        plan = dispatch.Plan(tier, int(HS), int(BB), int(KC), int(warps))
        elt = dispatch.element_bytes(dtypes[dt], precision)
        model = dispatch.resident_smem(plan, int(H), elt, direction, gates[cell])
        assert row["shared"] <= model, (row["name"], row["shared"], model)
        if tier != "B" and dispatch.resident_fits(plan, int(H), elt, direction, 227 * KB, gates[cell]):
            assert row["spill_stores"] + row["spill_loads"] == 0, row


def test_tier_c_grows_the_grid_only_up_to_the_sm_count():
    """tf32 H 512 at B 64: P 32 × 4 tiles = 128 programs (co-resident on 132 SMs); at B 128, 256 would not be:
    Tier B. The same shape on 78 SMs: Tier B already at B 64."""
    assert dispatch.fit(512, 64, torch.float32, "fwd", "tf32", 132, 227 * KB).tier == "C"
    assert dispatch.fit(512, 128, torch.float32, "fwd", "tf32", 132, 227 * KB).tier == "B"
    assert dispatch.fit(512, 64, torch.float32, "fwd", "tf32", 78, 227 * KB).tier == "B"


def test_no_tier_c_without_an_sm_count():
    for H in HIDDEN:
        for dtype in (torch.float32, torch.bfloat16):
            plan = dispatch.fit(H, 128, dtype, "fwd", "ieee" if dtype != torch.float32 else "tf32", None, None)
            assert plan.tier in ("A", "B")


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="direction"):
        dispatch.resident_smem(dispatch.Plan("A", HS=16), 16, 4, "sideways")
    with pytest.raises(ValueError, match="direction"):
        dispatch.plan_for(16, 1, torch.float32, "cpu", "up", "ieee")
    with pytest.raises(TypeError, match="dtype"):
        dispatch.fit(16, 1, torch.float64, "fwd", "ieee", None, None)
    with pytest.raises(ValueError, match="H and B"):
        dispatch.fit(0, 1, torch.float32, "fwd", "ieee", None, None)


# ------------------------------------------------------------------------------------------ plan_for
def test_auto_uses_tier_c_only_where_a_gpu_run_verified_it(on_h200):
    """Safety of the default (issue 12): no verified run for the class, Tier A / B; a verified one, Tier C."""
    assert _plan(256, 128, torch.float32).tier == "B"
    assert _plan(64, 128, torch.float32).tier == "A"
    on_h200.setattr(measured, "MEASURED", {"nvidia-h200": {"coop_verified": True, "plans": {}}})
    plan = _plan(256, 128, torch.float32)
    assert (plan.tier, plan.programs(256)) == ("C", 8)
    on_h200.setattr(measured, "MEASURED", {"nvidia-h100-80gb-hbm3": {"coop_verified": True, "plans": {}}})
    assert _plan(256, 128, torch.float32).tier == "B"  # another class's verification does not carry over


def _entry(**fields):
    return dict(dataclasses.asdict(dispatch.Plan(**{k: v for k, v in fields.items() if k != "precision"})),
                precision=fields.get("precision", "tf32"))


def test_the_measured_table_overrides_the_fit_rule_where_it_still_applies(on_h200):
    key = (256, 128, "float32", "fwd")
    table = {"nvidia-h200": {"coop_verified": False, "plans": {key: _entry(tier="B", HS=64, KC=16)}}}
    on_h200.setattr(measured, "MEASURED", table)
    assert _plan(256, 128, torch.float32) == dispatch.Plan("B", HS=64, KC=16)
    assert _plan(256, 128, torch.float32, "bwd").HS == 32  # another key: the fit rule
    assert _plan(256, 64, torch.float32).HS == 32
    # measured under TF32: an fp32-exact (tf32x3) call keeps the fit rule
    assert _plan(256, 128, torch.float32, precision="tf32x3") == dispatch.tier_b(256, "tf32x3")
    # a measured Tier C is used only on a verified class and with a co-resident grid
    table["nvidia-h200"]["plans"][key] = _entry(tier="C", HS=16, num_warps=8)
    assert _plan(256, 128, torch.float32).tier == "B"
    table["nvidia-h200"]["coop_verified"] = True
    assert _plan(256, 128, torch.float32) == dispatch.Plan("C", HS=16, num_warps=8)
    # on 78 SMs its 16 × 8 programs would not be co-resident: the fit rule's P 8 (64 programs) instead
    on_h200.setattr(dispatch, "device_facts", lambda device: dataclasses.replace(H200, sm_count=78))
    assert _plan(256, 128, torch.float32) == dispatch.tier_c(32)


def test_cudnn_faster_is_read_from_the_table(on_h200):
    key = (256, 128, "float32", "fwd")
    on_h200.setattr(measured, "MEASURED", {"nvidia-h200": {"coop_verified": False, "plans": {
        key: dict(_entry(tier="B", HS=32), cudnn_faster=True)}}})
    assert dispatch.cudnn_faster(256, 128, torch.float32, "cuda", "fwd")
    assert not dispatch.cudnn_faster(256, 128, torch.float32, "cuda", "bwd")
    assert not dispatch.cudnn_faster(256, 128, torch.bfloat16, "cuda", "fwd")


def test_the_environment_forces_a_tier_at_every_call(on_h200):
    on_h200.setenv(dispatch.ENV_TIER, "b")
    on_h200.setenv(dispatch.ENV_P, "4")
    plan = _plan(256, 128, torch.float32)
    assert (plan.tier, plan.programs(256)) == ("B", 4)
    on_h200.setenv(dispatch.ENV_TIER, "C")  # read again at this call, not cached
    on_h200.setenv(dispatch.ENV_P, "16")  # (P 4 would need 288 KB: refused below)
    plan = _plan(256, 128, torch.float32)
    assert (plan.tier, plan.programs(256)) == ("C", 16)
    on_h200.delenv(dispatch.ENV_P)
    plan = _plan(256, 128, torch.float32)  # Tier C without P: the fit rule's (unverified or not)
    assert (plan.tier, plan.programs(256)) == ("C", 8)
    on_h200.setenv(dispatch.ENV_TIER, "A")
    assert _plan(64, 128, torch.float32) == dispatch.tier_a(64)
    on_h200.delenv(dispatch.ENV_TIER)
    assert _plan(256, 128, torch.float32).tier == "B"


@pytest.mark.parametrize("env,match", [({"TRITONRNN_RECURRENCE_TIER": "D"}, "TRITONRNN_RECURRENCE_TIER"),
                                       ({"TRITONRNN_RECURRENCE_TIER": "B", "TRITONRNN_RECURRENCE_P": "3"},
                                        "TRITONRNN_RECURRENCE_P"),
                                       ({"TRITONRNN_RECURRENCE_TIER": "B", "TRITONRNN_RECURRENCE_P": "two"},
                                        "TRITONRNN_RECURRENCE_P"),
                                       ({"TRITONRNN_RECURRENCE_TIER": "A", "TRITONRNN_RECURRENCE_P": "2"},
                                        "TRITONRNN_RECURRENCE_P")])
def test_a_bad_override_is_refused_by_name(on_h200, env, match):
    for key, value in env.items():
        on_h200.setenv(key, value)
    with pytest.raises(ValueError, match=match):
        _plan(256, 128, torch.float32)


def test_a_forced_tier_that_cannot_fit_the_device_is_refused(on_h200):
    """Tier A at fp32 H 256 needs ~1 MB; Tier C at fp32 H 1024 has no co-resident P (a ValueError a benchmark
    records as "not applicable"); off a GPU Tier C runs at P = 1."""
    on_h200.setenv(dispatch.ENV_TIER, "A")
    with pytest.raises(ValueError, match="shared memory"):
        _plan(256, 128, torch.float32)
    on_h200.setenv(dispatch.ENV_TIER, "C")
    on_h200.setenv(dispatch.ENV_P, "4")
    with pytest.raises(ValueError, match="294912 bytes"):  # KERNELS.md: tf32 H 256 P 4 needs 288 KB
        _plan(256, 128, torch.float32)
    on_h200.delenv(dispatch.ENV_P)
    on_h200.setenv(dispatch.ENV_TIER, "C")
    with pytest.raises(ValueError, match="co-resident"):
        _plan(1024, 256, torch.float32)
    on_h200.setattr(dispatch, "device_facts", lambda device: dispatch.DeviceFacts("cpu-interpreter", None, None))
    plan = _plan(1024, 256, torch.float32, precision="ieee")
    assert (plan.tier, plan.programs(1024)) == ("C", 1)


def test_device_facts_off_a_gpu():
    assert dispatch.device_facts(torch.device("cpu")) == dispatch.DeviceFacts("cpu-interpreter", None, None)


def test_device_facts_read_the_driver(monkeypatch):
    """On CUDA: the class from the device name, the SM count and the opt-in shared memory from triton's driver
    (what the GPU run reads; checked here with the driver's answer for an H200)."""
    import types

    import triton

    utils = types.SimpleNamespace(get_device_properties=lambda index: {
        "max_shared_mem": 232448, "multiprocessor_count": 132, "max_num_regs": 65536, "warpSize": 32})
    monkeypatch.setattr(triton.runtime.driver, "_active", types.SimpleNamespace(utils=utils))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "NVIDIA H200")
    assert dispatch._cuda_facts.__wrapped__(0) == H200


def test_the_shipped_table_is_well_formed():
    fields = {f.name for f in dataclasses.fields(dispatch.Plan)}
    for device_class, table in measured.MEASURED.items():
        assert isinstance(table["coop_verified"], bool)
        for (H, B, dtype, direction), entry in table["plans"].items():
            assert direction in dispatch.DIRECTIONS and dtype in ("float32", "bfloat16", "float16")
            plan = dispatch.Plan(**{k: v for k, v in entry.items() if k in fields})
            assert plan.tier in dispatch.TIERS and (plan.tier != "C" or table["coop_verified"])


@pytest.mark.gpu
def test_device_facts_on_the_gpu():
    facts = dispatch.device_facts(torch.device("cuda"))
    assert facts.sm_count > 0 and facts.smem_per_block >= 48 * KB
    assert facts.device_class == dispatch.slug(torch.cuda.get_device_name())
