"""Optimizers, clipping and schedules: parity with torch.optim, state round trips, bad inputs."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from rnnlab import optim

SHAPES = {"rnn.weight_ih_l0": (8, 3), "rnn.bias_hh_l0": (8,), "fc.weight": (2, 4, 2)}
STEPS = 5

SGD_CASES = [
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "dampening": 0.3},
    {"momentum": 0.9, "nesterov": True},
    {"weight_decay": 0.05},
    {"momentum": 0.8, "weight_decay": 0.05},
    {"momentum": 0.9, "nesterov": True, "weight_decay": 0.05},
]
ADAM_CASES = [{}, {"weight_decay": 0.1}, {"betas": (0.8, 0.99), "eps": 1e-6}]
ADAMW_CASES = [{}, {"weight_decay": 0.1}, {"betas": (0.5, 0.9), "weight_decay": 0.0}]
CASES = (
    [("SGD", 0.1, kw) for kw in SGD_CASES]
    + [("Adam", 0.01, kw) for kw in ADAM_CASES]
    + [("AdamW", 0.01, kw) for kw in ADAMW_CASES]
)


def _params(rng, dtype=np.float64):
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}


def _grads(rng, dtype=np.float64):
    return [_params(rng, dtype) for _ in range(STEPS)]


def _torch_run(torch, name, lr, kw, params, grads):
    tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = getattr(torch.optim, name)(list(tensors.values()), lr=lr, **kw)
    for g in grads:
        for k, t in tensors.items():
            t.grad = torch.tensor(g[k])
        opt.step()
    return {k: t.detach().numpy() for k, t in tensors.items()}


def _ours_run(name, lr, kw, params, grads):
    params = {k: v.copy() for k, v in params.items()}
    opt = getattr(optim, name)(params, lr=lr, **kw)
    for g in grads:
        opt.step(g)
    return params


# ----------------------------------------------------------------------------- parity


@pytest.mark.parametrize("block", [optim.UPDATE_BLOCK, 5], ids=["one-block", "5-element-blocks"])
@pytest.mark.parametrize("name, lr, kw", CASES, ids=[f"{n}-{kw}" for n, _, kw in CASES])
def test_matches_torch_float64(torch, rng, monkeypatch, name, lr, kw, block):
    """Also with the update applied to 5-element pieces (the blocking used on large arrays,
    with a ragged last piece: 16 = 5 + 5 + 5 + 1)."""
    monkeypatch.setattr(optim, "UPDATE_BLOCK", block)
    params, grads = _params(rng), _grads(rng)
    ours = _ours_run(name, lr, kw, params, grads)
    ref = _torch_run(torch, name, lr, kw, params, grads)
    for k in params:
        np.testing.assert_allclose(ours[k], ref[k], rtol=1e-12, atol=1e-12, err_msg=k)
        assert not np.allclose(ours[k], params[k])  # it moved


@pytest.mark.parametrize("name, lr, kw", [CASES[3], CASES[-2]], ids=["SGD-nesterov", "AdamW"])
def test_float32_params_keep_float32_state(torch, rng, name, lr, kw):
    params, grads = _params(rng, np.float32), _grads(rng, np.float32)
    ours = _ours_run(name, lr, kw, params, grads)
    ref = _torch_run(torch, name, lr, kw, params, grads)
    for k in params:
        assert ours[k].dtype == np.float32
        np.testing.assert_allclose(ours[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)
    opt = getattr(optim, name)({k: v.copy() for k, v in params.items()}, lr=lr, **kw)
    opt.step(grads[0])
    arrays, _ = opt.state_dict()
    assert arrays and all(a.dtype == np.float32 for a in arrays.values())


def test_updates_in_place_and_keeps_references(rng):
    params = _params(rng)
    ids = {k: id(v) for k, v in params.items()}
    before = {k: v.copy() for k, v in params.items()}
    opt = optim.Adam(params, lr=0.1)
    opt.step(_grads(rng)[0])
    for k, v in opt.params.items():
        assert id(v) == ids[k] and v is params[k]
        assert not np.array_equal(v, before[k])


def test_grads_are_not_modified(rng):
    params, grads = _params(rng), _grads(rng)[0]
    saved = {k: v.copy() for k, v in grads.items()}
    for cls, kw in [(optim.SGD, {"momentum": 0.9, "weight_decay": 0.1, "dampening": 0.5}),
                    (optim.Adam, {"weight_decay": 0.1}), (optim.AdamW, {})]:
        opt = cls(params, lr=0.1, **kw)
        opt.step(grads)
        opt.step(grads)
    for k in grads:
        np.testing.assert_array_equal(grads[k], saved[k])


# ----------------------------------------------------------------------------- state


@pytest.mark.parametrize("name, lr, kw", [CASES[1], CASES[3], CASES[8], CASES[-2]],
                         ids=["SGD-momentum", "SGD-nesterov", "Adam-wd", "AdamW-wd"])
def test_state_dict_round_trip_continues_identically(rng, name, lr, kw):
    params, grads = _params(rng), _grads(rng)
    straight = {k: v.copy() for k, v in params.items()}
    opt = getattr(optim, name)(straight, lr=lr, **kw)
    for g in grads:
        opt.step(g)

    first = {k: v.copy() for k, v in params.items()}
    opt1 = getattr(optim, name)(first, lr=lr, **kw)
    for g in grads[:3]:
        opt1.step(g)
    arrays, meta = opt1.state_dict()
    meta = json.loads(json.dumps(meta))  # the meta must survive JSON
    resumed = {k: v.copy() for k, v in first.items()}
    opt2 = getattr(optim, name)(resumed, lr=123.0)  # hyperparameters come from the state
    opt2.load_state_dict(arrays, meta)
    assert opt2.lr == lr and opt2.step_count == 3
    for g in grads[3:]:
        opt2.step(g)
    for k in params:
        np.testing.assert_array_equal(resumed[k], straight[k])


def test_state_dict_keys_and_meta(rng):
    opt = optim.Adam(_params(rng), lr=0.01, weight_decay=0.1)
    arrays, meta = opt.state_dict()
    assert set(arrays) == {f"{b}/{k}" for b in ("exp_avg", "exp_avg_sq") for k in SHAPES}
    assert meta == {"class": "Adam", "lr": 0.01, "step": 0,
                    "hyperparameters": {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1}}
    assert optim.SGD(_params(rng), lr=0.1).state_dict()[0] == {}
    arrays, _ = optim.SGD(_params(rng), lr=0.1, momentum=0.9).state_dict()
    assert set(arrays) == {f"momentum/{k}" for k in SHAPES}


def test_load_state_dict_rejects_bad_state(rng):
    opt = optim.Adam(_params(rng), lr=0.01)
    opt.step(_grads(rng)[0])
    arrays, meta = opt.state_dict()
    other = optim.Adam(_params(rng), lr=0.01)
    untouched = {k: v.copy() for k, v in other.state_dict()[0].items()}

    with pytest.raises(ValueError, match="expected state saved by Adam, got .*AdamW"):
        other.load_state_dict(arrays, {**meta, "class": "AdamW"})
    with pytest.raises(ValueError, match=r"missing keys \['exp_avg/fc.weight'\]"):
        other.load_state_dict({k: v for k, v in arrays.items() if k != "exp_avg/fc.weight"}, meta)
    with pytest.raises(ValueError, match=r"unexpected keys \['momentum/fc.weight'\]"):
        other.load_state_dict({**arrays, "momentum/fc.weight": arrays["exp_avg/fc.weight"]}, meta)
    bad = {**arrays, "exp_avg/fc.weight": np.zeros((3, 3))}
    with pytest.raises(ValueError, match=re.escape("expected shape (2, 4, 2), got (3, 3)")):
        other.load_state_dict(bad, meta)
    nan = {**arrays, "exp_avg/fc.weight": np.full((2, 4, 2), np.nan)}
    with pytest.raises(ValueError, match="NaN"):
        other.load_state_dict(nan, meta)
    with pytest.raises(ValueError, match=r"lr: expected a finite number >= 0, got -1"):
        other.load_state_dict(arrays, {**meta, "lr": -1})
    with pytest.raises(ValueError, match="step count"):
        other.load_state_dict(arrays, {**meta, "step": -2})
    with pytest.raises(ValueError, match=r"missing keys \['hyperparameters'\]"):
        other.load_state_dict(arrays, {k: v for k, v in meta.items() if k != "hyperparameters"})
    # nothing changed on any failure
    assert other.step_count == 0
    for k, v in other.state_dict()[0].items():
        np.testing.assert_array_equal(v, untouched[k])


# ----------------------------------------------------------------------------- clipping


@pytest.mark.parametrize("max_norm", [0.5, 1e6], ids=["clipped", "unclipped"])
def test_clip_grad_norm_matches_torch(torch, rng, max_norm):
    grads = _params(rng)
    tensors = [torch.zeros(v.shape, dtype=torch.float64, requires_grad=True)
               for v in grads.values()]
    for t, g in zip(tensors, grads.values(), strict=True):
        t.grad = torch.tensor(g.copy())
    ref = float(torch.nn.utils.clip_grad_norm_(tensors, max_norm))
    norm = optim.clip_grad_norm(grads, max_norm)
    assert norm == pytest.approx(ref, rel=1e-13)
    for t, g in zip(tensors, grads.values(), strict=True):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-13, atol=0)
    total = math.sqrt(sum(float(np.sum(g**2)) for g in grads.values()))
    assert total == pytest.approx(min(norm, max_norm), rel=1e-5)


def test_clip_grad_norm_float32_norm_in_float64(rng):
    grads = {"a": np.full(1000, 1e20, np.float32)}  # the sum of squares overflows float32
    norm = optim.clip_grad_norm(grads, 1.0)
    assert norm == pytest.approx(1e20 * math.sqrt(1000), rel=1e-6)
    assert grads["a"].dtype == np.float32
    assert float(np.linalg.norm(grads["a"].astype(np.float64))) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_clip_grad_norm_nonfinite_leaves_grads_untouched(rng, bad):
    grads = _params(rng)
    grads["fc.weight"][0, 1, 1] = bad
    saved = {k: v.copy() for k, v in grads.items()}
    norm = optim.clip_grad_norm(grads, 0.1)
    assert not math.isfinite(norm)
    for k in grads:
        np.testing.assert_array_equal(grads[k], saved[k])


def test_clip_grad_norm_rejects_bad_max_norm(rng):
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="max_norm: expected"):
            optim.clip_grad_norm(_params(rng), bad)


@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("name,lr,kw", CASES, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(CASES)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_step_with_grad_scale_equals_torch_clip_then_step(torch, rng, name, lr, kw, dtype,
                                                          layout, monkeypatch):
    """The fused path (grad_norm, then step(grads, grad_scale=clip_coefficient)) gives torch's
    clip_grad_norm_ + step, and leaves the gradients as they were. Blocks of 5 elements make
    the per-block scaling cross block edges; layout "F" (Fortran-ordered parameters and
    gradients) takes the whole-array path for the non-contiguous ones."""
    monkeypatch.setattr(optim, "UPDATE_BLOCK", 5)
    params, grads = _params(rng, dtype), _grads(rng, dtype)
    tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    topt = getattr(torch.optim, name)(list(tensors.values()), lr=lr, **kw)
    ours = {k: np.array(v, order=layout) for k, v in params.items()}
    grads = [{k: np.array(v, order=layout) for k, v in g.items()} for g in grads]
    opt = getattr(optim, name)(ours, lr=lr, **kw)
    max_norm = 0.7 * min(optim.grad_norm(g) for g in grads)  # every step clips
    for g in grads:
        for k, t in tensors.items():
            t.grad = torch.tensor(g[k].copy())
        ref_norm = float(torch.nn.utils.clip_grad_norm_(list(tensors.values()), max_norm))
        topt.step()
        mine = {k: v.copy(order="K") for k, v in g.items()}
        norm = optim.grad_norm(mine)
        assert norm == pytest.approx(ref_norm, rel=1e-6 if dtype == np.float32 else 1e-13)
        opt.step(mine, grad_scale=optim.clip_coefficient(norm, max_norm))
        for k in mine:
            np.testing.assert_array_equal(mine[k], g[k], err_msg=f"gradient {k} changed")
    if layout == "F":
        assert not ours["fc.weight"].flags.c_contiguous
    tol = dict(rtol=2e-6, atol=5e-7) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)
    for k, t in tensors.items():
        np.testing.assert_allclose(ours[k], t.detach().numpy(), **tol, err_msg=k)


def test_clip_coefficient():
    assert optim.clip_coefficient(10.0, 5.0) == pytest.approx(5.0 / (10.0 + 1e-6), rel=1e-15)
    assert optim.clip_coefficient(1.0, 5.0) == 1.0
    assert optim.clip_coefficient(math.nan, 5.0) == 1.0
    assert optim.clip_coefficient(math.inf, 5.0) == 1.0
    with pytest.raises(ValueError, match="max_norm: expected a positive number"):
        optim.clip_coefficient(1.0, 0.0)


def test_step_rejects_bad_grad_scale(rng):
    params = _params(rng)
    opt = optim.SGD(params, lr=0.1)
    for bad in (-1.0, math.nan, math.inf, "1"):
        with pytest.raises(ValueError, match="grad_scale: expected"):
            opt.step(_params(rng), grad_scale=bad)
    assert opt.step_count == 0


# ----------------------------------------------------------------------------- schedules


def test_step_decay_zaremba_small(rng):
    opt = optim.SGD(_params(rng), lr=1.0)
    schedule = optim.StepDecay(opt, start_epoch=4, factor=0.5)
    expected = [1.0, 1.0, 1.0, 1.0, 0.5, 0.25, 0.125, 0.0625]
    got = []
    for epoch in range(1, 9):
        schedule.set_epoch(epoch)
        got.append(opt.lr)
    assert got == expected
    # step() at the end of each epoch gives the same sequence
    opt2 = optim.SGD(_params(rng), lr=1.0)
    schedule2 = optim.StepDecay(opt2, 4, 0.5)
    assert [opt2.lr] + [schedule2.step() for _ in range(7)] == expected


def test_step_decay_state_round_trip(rng):
    opt = optim.SGD(_params(rng), lr=1.0)
    schedule = optim.StepDecay(opt, 4, 0.5)
    schedule.set_epoch(6)
    state = json.loads(json.dumps(schedule.state_dict()))
    opt2 = optim.SGD(_params(rng), lr=1.0)
    schedule2 = optim.StepDecay(opt2, 1, 0.9)
    schedule2.load_state_dict(state)
    assert opt2.lr == 0.25 and schedule2.epoch == 6
    assert schedule2.step() == 0.125
    with pytest.raises(ValueError, match="expected state saved by StepDecay"):
        schedule2.load_state_dict({**state, "class": "ReduceOnPlateau"})


def test_reduce_on_plateau_behaviour(rng):
    opt = optim.SGD(_params(rng), lr=1.0)
    schedule = optim.ReduceOnPlateau(opt, factor=0.25, patience=1, min_lr=0.05)
    steps = [(5.0, False, 1.0), (4.0, False, 1.0), (4.0, False, 1.0), (4.5, True, 0.25),
             (3.0, False, 0.25), (3.0, False, 0.25), (3.0, True, 0.0625),
             (math.nan, False, 0.0625), (3.0, True, 0.05), (9.0, False, 0.05), (9.0, False, 0.05)]
    for metric, reduced, lr in steps:
        assert schedule.step(metric) is reduced, metric
        assert opt.lr == lr


def test_reduce_on_plateau_threshold(rng):
    opt = optim.SGD(_params(rng), lr=1.0)
    schedule = optim.ReduceOnPlateau(opt, factor=0.5, threshold=0.01)
    assert not schedule.step(100.0)
    assert schedule.step(99.5)  # better, but by less than 1%
    assert not schedule.step(98.0)
    assert opt.lr == 0.5


def test_reduce_on_plateau_matches_torch(torch, rng):
    metrics = [float(x) for x in np.round(10 - np.cumsum(rng.uniform(-0.5, 1.0, 40)), 1)]
    opt = optim.SGD(_params(rng), lr=1.0)
    schedule = optim.ReduceOnPlateau(opt, factor=0.5, patience=2, threshold=0.01, min_lr=0.01)
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(t_opt, factor=0.5, patience=2,
                                                     threshold=0.01, min_lr=0.01)
    for m in metrics:
        schedule.step(m)
        ref.step(m)
        assert opt.lr == pytest.approx(t_opt.param_groups[0]["lr"], rel=1e-15)


def test_reduce_on_plateau_state_round_trip(rng):
    opt = optim.SGD(_params(rng), lr=1.0)
    schedule = optim.ReduceOnPlateau(opt, patience=2)
    assert schedule.state_dict()["best"] is None  # strict JSON: no Infinity
    schedule.step(3.0)
    schedule.step(3.5)
    state = json.loads(json.dumps(schedule.state_dict(), allow_nan=False))
    schedule2 = optim.ReduceOnPlateau(opt)
    schedule2.load_state_dict(state)
    assert (schedule2.best, schedule2.num_bad, schedule2.patience) == (3.0, 1, 2)
    assert not schedule2.step(4.0)
    assert schedule2.step(4.0)


# ----------------------------------------------------------------------------- bad inputs


def test_step_rejects_mismatched_keys(rng):
    opt = optim.SGD(_params(rng), lr=0.1)
    grads = _grads(rng)[0]
    grads["extra"] = grads.pop("fc.weight")
    with pytest.raises(ValueError, match=r"missing keys \['fc.weight'\], unexpected keys "
                                         r"\['extra'\]"):
        opt.step(grads)
    assert opt.step_count == 0


def test_step_rejects_wrong_shape(rng):
    opt = optim.Adam(_params(rng))
    grads = _grads(rng)[0]
    grads["fc.weight"] = np.zeros((4, 4))
    with pytest.raises(ValueError, match=re.escape("expected an array of shape (2, 4, 2), got "
                                                   "(4, 4)")):
        opt.step(grads)


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam, optim.AdamW])
def test_rejects_negative_or_nonfinite_lr(rng, cls):
    for bad in (-0.1, math.nan, math.inf, "0.1"):
        with pytest.raises(ValueError, match="lr: expected a finite number >= 0"):
            cls(_params(rng), lr=bad)
    opt = cls(_params(rng), lr=0.1)
    with pytest.raises(ValueError, match="lr: expected"):
        opt.lr = -1.0
    assert opt.lr == 0.1


def test_rejects_bad_hyperparameters_and_params(rng):
    with pytest.raises(ValueError, match="nesterov: expected momentum > 0"):
        optim.SGD(_params(rng), lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="momentum: expected a finite number >= 0"):
        optim.SGD(_params(rng), lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match=r"betas\[1\]: expected a finite number in \[0, 1\)"):
        optim.Adam(_params(rng), betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="betas: expected a pair"):
        optim.AdamW(_params(rng), betas=(0.9,))
    with pytest.raises(TypeError, match="expected a float32 or float64 array, got int64"):
        optim.SGD({"w": np.zeros(3, np.int64)}, lr=0.1)
    with pytest.raises(ValueError, match="expected a non-empty dict"):
        optim.SGD({}, lr=0.1)
    with pytest.raises(TypeError, match="expected an rnnlab.optim.Optimizer"):
        optim.StepDecay(object(), 4, 0.5)
    with pytest.raises(ValueError, match=r"factor: expected a number in \(0, 1\)"):
        optim.ReduceOnPlateau(optim.SGD(_params(rng), lr=0.1), factor=0.0)
    with pytest.raises(ValueError, match="epoch: expected a positive integer"):
        optim.StepDecay(optim.SGD(_params(rng), lr=0.1), 4, 0.5).set_epoch(0)
