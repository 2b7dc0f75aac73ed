"""``rnnlab explain``: the numbers of one step in lecture notation are right.

Three independent oracles: the library's own cells (LSTMCell with the lecture weights stacked
into torch's layout, plus a readout written out here), central differences of a plain NumPy
reference written straight from the lecture equations, and torch autograd (on the lecture formulas
for the LSTM, on torch.nn.GRUCell / RNNCell for the others).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

import rnnlab
from rnnlab.cli.explain import add_explain_parser
from rnnlab.inside.explain import (
    INPUT_KEYS,
    RESULT_KEYS,
    SEQUENCE_KEYS,
    STEP_KEYS,
    explain,
    explain_gru,
    explain_lstm,
    explain_rnn,
    format_explain,
    load_example,
    random_example,
    random_lstm_example,
    to_json,
    to_torch_layout,
)

EPS, RTOL, ATOL = 1e-6, 1e-6, 1e-8
H, D, C = 2, 3, 3

# the keys the lecture printout promises, at least
LSTM_DOCUMENTED = {
    "z", "f", "i", "g", "o", "c", "h", "logits", "probs", "loss", "dlogits", "dW_y", "db_y", "dh",
    "do", "dc", "df", "di", "dg", "dW_f", "dW_i", "dW_g", "dW_o", "db_f", "db_i", "db_g", "db_o",
    "dx", "dh_prev", "dc_prev", "a_f", "a_i", "a_g", "a_o",
}


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def _arrays(ex):
    skip = ("cell", "target")
    return {k: np.asarray(v, dtype=np.float64) for k, v in ex.items() if k not in skip}


# ------------------------------------------------------------------ plain NumPy references
def _step_ref(cell, p, x, h, c):
    z = np.concatenate([h, x])
    if cell == "lstm":
        f, i = _sig(p["W_f"] @ z + p["b_f"]), _sig(p["W_i"] @ z + p["b_i"])
        g, o = np.tanh(p["W_g"] @ z + p["b_g"]), _sig(p["W_o"] @ z + p["b_o"])
        c = f * c + i * g
        return o * np.tanh(c), c
    if cell == "gru":
        n_h = len(h)
        r, u = _sig(p["W_r"] @ z + p["b_r"]), _sig(p["W_u"] @ z + p["b_u"])
        n = np.tanh(p["W_n"][:, n_h:] @ x + p["b_n"] + r * (p["W_n"][:, :n_h] @ h + p["b_nh"]))
        return (1 - u) * n + u * h, c
    return np.tanh(p["W_h"] @ z + p["b_h"]), c


def _loss_ref(cell, p, target):
    h, c = p["h_prev"], p.get("c_prev")
    for x in np.atleast_2d(p["x"]):
        h, c = _step_ref(cell, p, x, h, c)
    logits = p["W_y"] @ h + p["b_y"]
    m = logits.max()
    return float(m + np.log(np.exp(logits - m).sum()) - logits[target])


def _check_central_differences(cell, ex, result):
    p = _arrays(ex)
    for key, value in p.items():
        num = np.empty(value.size)
        for j in range(value.size):
            orig = value.flat[j]
            value.flat[j] = orig + EPS
            up = _loss_ref(cell, p, ex["target"])
            value.flat[j] = orig - EPS
            down = _loss_ref(cell, p, ex["target"])
            value.flat[j] = orig
            num[j] = (up - down) / (2 * EPS)
        got = np.asarray(result["d" + key]).reshape(-1)
        np.testing.assert_allclose(got, num, rtol=RTOL, atol=ATOL, err_msg=key)
    assert result["loss"] == pytest.approx(_loss_ref(cell, p, ex["target"]), rel=1e-12)


# ------------------------------------------------------------------ keys, shapes, JSON
def _lstm_shapes(n_steps=1):
    x = (D,) if n_steps == 1 else (n_steps, D)
    s = {**{k: (H, H + D) for k in ("W_f", "W_i", "W_g", "W_o")}, "W_y": (C, H), "b_y": (C,),
         "x": x, "z": (H + D,), "logits": (C,), "probs": (C,), "dlogits": (C,), "dW_y": (C, H),
         "db_y": (C,), "loss": (), "target": (), "dx": x, "dz": (H + D,)}
    for k in "figo":
        s[f"dW_{k}"] = (H, H + D)
    return s


def test_lstm_keys_and_shapes_are_documented():
    r = explain_lstm(random_lstm_example())
    assert list(r) == list(RESULT_KEYS["lstm"])
    assert LSTM_DOCUMENTED <= set(r) and set(INPUT_KEYS["lstm"]) <= set(r)
    assert r["cell"] == "lstm" and isinstance(r["target"], int) and isinstance(r["loss"], float)
    shapes = _lstm_shapes()
    for k, v in r.items():
        if k != "cell":
            assert np.shape(v) == shapes.get(k, (H,)), k
            assert not isinstance(v, np.ndarray), f"{k} should be a plain list"
    assert json.loads(to_json(r)) == r
    assert json.loads(json.dumps(r)) == r


def test_sequence_keys_and_shapes():
    r = explain_lstm(random_lstm_example(seed=1, steps=3), steps=3)
    assert list(r) == list(SEQUENCE_KEYS["lstm"])
    assert np.shape(r["x"]) == np.shape(r["dx"]) == (3, D)
    assert [list(s) for s in r["steps"]] == [list(STEP_KEYS["lstm"])] * 3
    assert [s["t"] for s in r["steps"]] == [0, 1, 2]
    assert json.loads(to_json(r)) == r


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_gru_rnn_keys(cell):
    r = explain(cell, random_example(cell, seed=2))
    assert list(r) == list(RESULT_KEYS[cell])
    want = {"gru": {"r", "u", "n", "h", "dr", "du", "dn", "dW_r", "dW_u", "dW_n", "db_nh"},
            "rnn": {"a", "h", "da", "dW_h", "db_h"}}[cell]
    assert want | {"dx", "dh_prev", "loss", "dW_y"} <= set(r)
    assert "zgate" not in r and np.shape(r["z"]) == (H + D,)  # z is the concatenation


# ------------------------------------------------------------------ (a) the library's own backward
def test_lstm_equals_library_cell_plus_readout():
    ex = random_lstm_example(seed=5, hidden=3, input=2, classes=4)
    r = explain_lstm(ex)
    p, n_h = _arrays(ex), 3
    layout = {"weight_ih": np.concatenate([p[f"W_{k}"][:, n_h:] for k in "ifgo"]),
              "weight_hh": np.concatenate([p[f"W_{k}"][:, :n_h] for k in "ifgo"]),
              "bias_ih": np.concatenate([p[f"b_{k}"] for k in "ifgo"]),
              "bias_hh": np.zeros(4 * n_h)}
    for k, v in to_torch_layout(ex).items():
        np.testing.assert_array_equal(v, layout[k])
    cell = rnnlab.LSTMCell(2, n_h, dtype=np.float64)
    cell.load_state_dict(layout)
    h, c = cell(p["x"][None], (p["h_prev"][None], p["c_prev"][None]))
    logits = p["W_y"] @ h[0] + p["b_y"]
    probs = np.exp(logits) / np.exp(logits).sum()
    dlogits = probs - np.eye(4)[ex["target"]]
    dx, (dh_prev, dc_prev) = cell.backward((p["W_y"].T @ dlogits)[None], None)
    close = dict(rtol=1e-12, atol=1e-15)
    for key, want in (("h", h[0]), ("c", c[0]), ("probs", probs), ("dlogits", dlogits),
                      ("dW_y", np.outer(dlogits, h[0])), ("dx", dx[0]), ("dh_prev", dh_prev[0]),
                      ("dc_prev", dc_prev[0])):
        np.testing.assert_allclose(r[key], want, **close, err_msg=key)
    g = cell.grads
    for b, k in enumerate("ifgo"):
        rows = slice(b * n_h, (b + 1) * n_h)
        dW = np.asarray(r[f"dW_{k}"])
        np.testing.assert_allclose(dW[:, n_h:], g["weight_ih"][rows], **close)
        np.testing.assert_allclose(dW[:, :n_h], g["weight_hh"][rows], **close)
        np.testing.assert_allclose(r[f"db_{k}"], g["bias_ih"][rows], **close)
        np.testing.assert_allclose(r[f"db_{k}"], g["bias_hh"][rows], **close)


# ------------------------------------------------------------------ (b) central differences
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("n_steps", [1, 3])
def test_central_differences_of_every_input(cell, n_steps):
    ex = random_example(cell, seed=7 + n_steps, steps=n_steps)
    r = explain(cell, ex, n_steps)
    _check_central_differences(cell, ex, r)


def test_steps_carry_the_gradient_back_through_time():
    ex = random_lstm_example(seed=4, steps=3)
    r = explain_lstm(ex, steps=3)
    s = r["steps"]
    for t in (1, 2):
        assert s[t]["h_prev"] == s[t - 1]["h"] and s[t]["c_prev"] == s[t - 1]["c"]
        assert s[t]["dh_prev"] == s[t - 1]["dh"]  # exactly what reaches step t-1, nothing else
        assert s[t]["dc_prev"] == s[t - 1]["dc_next"]
    W_y = np.asarray(ex["W_y"])
    np.testing.assert_allclose(s[2]["dh"], W_y.T @ np.asarray(r["dlogits"]), rtol=1e-14)
    assert s[2]["dc_next"] == [0.0, 0.0]
    assert r["dh_prev"] == s[0]["dh_prev"] and r["dc_prev"] == s[0]["dc_prev"]
    assert r["dx"] == [st["dx"] for st in s]
    for k in ("dW_f", "db_o"):
        np.testing.assert_allclose(r[k], sum(np.asarray(st[k]) for st in s), rtol=1e-14)
    assert np.any(np.asarray(s[0]["dW_f"]) != 0)  # the first step does get a share


def test_steps_inferred_from_x_rows():
    ex = random_lstm_example(seed=4, steps=3)
    assert explain_lstm(ex) == explain_lstm(ex, steps=3)


# ------------------------------------------------------------------ torch parity
def test_lstm_step_matches_torch_autograd(torch):
    ex = random_lstm_example(seed=11, hidden=3, input=2, classes=4)
    r = explain_lstm(ex)
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
         for k, v in _arrays(ex).items()}
    z = torch.cat([t["h_prev"], t["x"]])
    a = {k: t[f"W_{k}"] @ z + t[f"b_{k}"] for k in "figo"}
    f, i, o = torch.sigmoid(a["f"]), torch.sigmoid(a["i"]), torch.sigmoid(a["o"])
    g = torch.tanh(a["g"])
    c = f * t["c_prev"] + i * g
    h = o * torch.tanh(c)
    logits = t["W_y"] @ h + t["b_y"]
    named = {"z": z, **{f"a_{k}": v for k, v in a.items()}, "f": f, "i": i, "g": g, "o": o,
             "c": c, "h": h, "logits": logits}
    for v in named.values():
        v.retain_grad()
    loss = torch.nn.functional.cross_entropy(logits[None], torch.tensor([ex["target"]]))
    loss.backward()
    assert r["loss"] == pytest.approx(loss.item(), rel=1e-12)
    np.testing.assert_allclose(r["probs"], torch.softmax(logits, 0).detach().numpy(), rtol=1e-12)
    for k, v in named.items():
        np.testing.assert_allclose(r[k], v.detach().numpy(), rtol=1e-12, atol=1e-15, err_msg=k)
        np.testing.assert_allclose(r["d" + k], v.grad.numpy(), rtol=1e-10, atol=1e-15,
                                   err_msg="d" + k)
    for k, v in t.items():
        np.testing.assert_allclose(r["d" + k], v.grad.numpy(), rtol=1e-10, atol=1e-15,
                                   err_msg="d" + k)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_gru_rnn_step_matches_torch_cell(torch, cell):
    ex = random_example(cell, seed=12, hidden=3, input=2, classes=4)
    r = explain(cell, ex)
    p = _arrays(ex)
    mod = (torch.nn.GRUCell if cell == "gru" else torch.nn.RNNCell)(2, 3, dtype=torch.float64)
    with torch.no_grad():
        for k, v in to_torch_layout(ex).items():
            getattr(mod, k).copy_(torch.from_numpy(v))
    x = torch.tensor(p["x"][None], requires_grad=True)
    h_prev = torch.tensor(p["h_prev"][None], requires_grad=True)
    h = mod(x, h_prev)
    logits = h[0] @ torch.from_numpy(p["W_y"]).T + torch.from_numpy(p["b_y"])
    loss = torch.nn.functional.cross_entropy(logits[None], torch.tensor([ex["target"]]))
    loss.backward()
    np.testing.assert_allclose(r["h"], h[0].detach().numpy(), rtol=1e-12)
    assert r["loss"] == pytest.approx(loss.item(), rel=1e-12)
    np.testing.assert_allclose(r["dx"], x.grad[0].numpy(), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(r["dh_prev"], h_prev.grad[0].numpy(), rtol=1e-10, atol=1e-15)
    gates = "ru" if cell == "gru" else "h"
    W = np.concatenate([np.asarray(r[f"dW_{k}"]) for k in gates + ("n" if cell == "gru" else "")])
    np.testing.assert_allclose(W[:, 3:], mod.weight_ih.grad.numpy(), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(W[:, :3], mod.weight_hh.grad.numpy(), rtol=1e-10, atol=1e-15)
    b_names = ["db_r", "db_u", "db_nh"] if cell == "gru" else ["db_h"]
    b_hh = np.concatenate([r[k] for k in b_names])
    np.testing.assert_allclose(b_hh, mod.bias_hh.grad.numpy(), rtol=1e-10, atol=1e-15)


# ------------------------------------------------------------------ loading and bad examples
HAND_WRITTEN = """{
  "cell": "lstm",
  "W_f": [[0, 0]], "W_i": [[0, 0]], "W_g": [[0, 0]], "W_o": [[0, 0]],
  "b_f": [0], "b_i": [0], "b_g": [0], "b_o": [0],
  "W_y": [[1.0], [-1.0]], "b_y": [0, 0],
  "x": [1.0], "h_prev": [0.0], "c_prev": [0.8], "target": 0
}"""


def test_load_hand_written_example(tmp_path):
    path = tmp_path / "step.json"
    path.write_text(HAND_WRITTEN)
    r = explain_lstm(load_example(path))
    # all gates sigma(0) = 1/2, g = tanh(0) = 0: c = c_prev / 2, h = tanh(c) / 2
    assert r["f"] == r["i"] == r["o"] == [0.5] and r["g"] == [0.0]
    assert r["c"] == pytest.approx([0.4])
    h = 0.5 * np.tanh(0.4)
    assert r["h"] == pytest.approx([h])
    assert r["loss"] == pytest.approx(np.log1p(np.exp(-2 * h)))
    assert r["di"] == pytest.approx([0.0])  # g = 0: the input gate cannot matter
    _check_central_differences("lstm", json.loads(HAND_WRITTEN), r)


def _bad(**changes):
    ex = json.loads(HAND_WRITTEN)
    for k, v in changes.items():
        if v is None:
            del ex[k]
        else:
            ex[k] = v
    return ex


@pytest.mark.parametrize("changes, match", [
    (dict(b_o=None), r"missing keys \['b_o'\]"),
    (dict(W_z=[[0, 0]]), r"unknown keys \['W_z'\]"),
    (dict(W_f=[[0, 0, 0]]), r"W_f: expected shape \(1, 2\) = \(H, H\+D\).*got shape \(1, 3\)"),
    (dict(W_y=[[1.0, 2.0]]), r"W_y: expected shape \(2, 1\) = \(C, H\).*got shape \(1, 2\)"),
    (dict(c_prev=[0.1, 0.2]), r"c_prev: expected shape \(1,\) = \(H,\).*got shape \(2,\)"),
    (dict(h_prev=[[0.0]]), r"h_prev: expected a non-empty array of shape \(H,\)"),
    (dict(W_g=[[0, "a"]]), r"W_g: expected numbers"),
    (dict(W_g=[[0, 1], [2]]), r"W_g: expected numbers"),
    (dict(b_f=[float("nan")]), r"b_f: expected finite numbers"),
    (dict(target=2), r"target: expected a class index in \[0, 2\), got 2"),
    (dict(target=True), r"target: expected a class index"),
    (dict(target=0.5), r"target: expected a class index"),
    (dict(cell="gru"), r"missing keys"),
    (dict(cell="lstmm"), r"cell: expected one of"),
])
def test_bad_examples_raise_clear_errors(tmp_path, changes, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_bad(**changes)))
    with pytest.raises(ValueError, match=match):
        load_example(path)


def test_bad_files_and_steps(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_example(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        load_example(path)
    path.write_text(HAND_WRITTEN)
    with pytest.raises(ValueError, match=r"cell: expected 'gru', got 'lstm'"):
        load_example(path, cell="gru")
    with pytest.raises(ValueError, match=r"x: expected shape \(3, 1\) = \(steps, D\)"):
        explain_lstm(load_example(path), steps=3)
    with pytest.raises(ValueError, match=r"x: expected shape \(2, 3\)"):
        explain_lstm(random_lstm_example(steps=3), steps=2)


# ------------------------------------------------------------------ printout and CLI
def test_format_explain_is_labelled_step_by_step():
    r = explain_lstm(random_lstm_example())
    text = format_explain(r)
    for label in ("z = [h_prev, x] = [", "f = sigma(W_f z + b_f) = [", "g = C~ = tanh(",
                  "c = f * c_prev + i * g = [", "h = o * tanh(c) = [", "loss = -log probs[",
                  "dL/dlogits = probs - onehot(target) = [", "dL/dh = W_y^T dlogits = [",
                  "dL/dc_prev = dc * f = [", "dL/dx = dz[H:] = ["):
        assert label in text, label
    assert f"{r['f'][0]:.6g}" in text and f"{r['loss']:.6g}" in text
    lines = text.splitlines()
    k = lines.index("  dL/dW_f = da_f z^T =")
    assert all(line.lstrip().startswith("[") for line in lines[k + 1:k + 1 + H])
    assert len(lines[k + 1].strip(" []").split()) == H + D  # one matrix row per line, H+D columns
    seq = format_explain(explain_lstm(random_lstm_example(steps=3)))
    assert "dL/dh = dL/dh_prev of step t=2, carried back through time" in seq
    assert "Backward, step t=0" in seq and "(the initial state)" in seq
    for cell in ("gru", "rnn"):
        assert "dL/dh_prev" in format_explain(explain(cell, random_example(cell)))


def _cli(argv, capsys):
    parser = argparse.ArgumentParser(prog="rnnlab")
    add_explain_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status = args.func(args)
    return status, capsys.readouterr().out


def test_cli_json_defaults(capsys):
    status, out = _cli(["explain", "--lstm", "--json"], capsys)
    assert status == 0
    r = json.loads(out)
    assert r == explain_lstm(random_lstm_example(seed=0, hidden=2, input=3, classes=3))
    assert np.shape(r["W_f"]) == (2, 5) and np.shape(r["W_y"]) == (3, 2)


def test_cli_options(tmp_path, capsys):
    status, out = _cli(["explain", "--gru", "--hidden", "3", "--steps", "2", "--seed", "4"],
                       capsys)
    assert status == 0 and "GRU, 2 time steps" in out and "Backward, step t=0" in out
    path = tmp_path / "step.json"
    path.write_text(HAND_WRITTEN)
    status, out = _cli(["explain", "--input", str(path), "--json"], capsys)
    assert json.loads(out)["c"] == pytest.approx([0.4])
    with pytest.raises(ValueError, match="--hidden describe a random example"):
        _cli(["explain", "--input", str(path), "--hidden", "3"], capsys)
    with pytest.raises(SystemExit):
        _cli(["explain", "--gru", "--rnn"], capsys)
    with pytest.raises(SystemExit):
        _cli(["explain", "--steps", "0"], capsys)
    assert explain_rnn(random_example("rnn"))["cell"] == "rnn"
    assert explain_gru(random_example("gru"))["cell"] == "gru"
