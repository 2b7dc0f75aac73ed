"""One recurrent step, forward and backward, with every intermediate number, in lecture notation.

Lecture notation, not PyTorch's: each gate acts on the concatenation z = [h_prev, x] (h_prev first)
through its own (H, H+D) matrix, and a softmax readout of the last hidden state gives a
cross-entropy loss. Shapes: H hidden units, D input features, C classes, N time steps.

    LSTM forward                                 LSTM backward (L = loss)
    z = [h_prev, x]                              dlogits = probs - onehot(target)
    f = sigma(a_f),  a_f = W_f z + b_f           dW_y = dlogits h^T;  db_y = dlogits
    i = sigma(a_i),  a_i = W_i z + b_i           dh = W_y^T dlogits  (earlier: dh_prev of t+1)
    g = tanh(a_g),   a_g = W_g z + b_g  (C~)     do = dh * tanh(c)
    o = sigma(a_o),  a_o = W_o z + b_o           dc = dc_next + dh * o * (1 - tanh(c)^2)
    c = f * c_prev + i * g                       df = dc * c_prev;  di = dc * g;  dg = dc * i
    h = o * tanh(c)                              da_f = df f (1-f);  da_i = di i (1-i)
    logits = W_y h + b_y                         da_g = dg (1 - g^2);  da_o = do o (1-o)
    probs = softmax(logits)                      dW_k = da_k z^T;  db_k = da_k   (k = f, i, g, o)
    loss = -log probs[target]                    dz = sum_k W_k^T da_k = [dh_prev, dx]
                                                 dc_prev = dc * f

    GRU (PyTorch's variant, so the numbers equal torch.nn.GRU's; ``u`` is the update gate, torch's
    z, renamed so it does not clash with the concatenation z):
    r = sigma(W_r z + b_r);  u = sigma(W_u z + b_u);  hn = W_n[:, :H] h_prev + b_nh
    n = tanh(a_n),  a_n = W_n[:, H:] x + b_n + r * hn;  h = (1 - u) * n + u * h_prev

    RNN:  h = tanh(a),  a = W_h z + b_h

The numbers are the library's: the lecture weights are stacked into PyTorch's layout (W_ih, W_hh;
gate order i, f, g, o for LSTM and r, z, n for GRU; see :func:`to_torch_layout`) and run through
:func:`rnnlab.nn.cells.lstm_step` and :func:`rnnlab.nn.cells.lstm_step_backward` (likewise GRU
and RNN).
Only the readout and the named intermediates the cell functions do not return (a_f, do, dc, ...)
are computed here, each by its one-line equation.

Results are JSON-ready dicts (plain lists, nested for matrices). With one step they hold the
inputs and the keys of :data:`RESULT_KEYS`. With N > 1 steps x is (N, D), the loss is taken at the
last step only, and the result (keys :data:`SEQUENCE_KEYS`) holds under ``"steps"`` one dict per
step (keys :data:`STEP_KEYS`): its forward values, the gradient dh (and dc) that reached it from
the step after it, and its share of every weight gradient; next to it, the summed weight
gradients, dx (N, D) and the gradients of the initial state, dh_prev and dc_prev.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlab.nn import cells
from rnnlab.validate import check_positive_int

_IN = {  # the parameters of each cell, in lecture notation
    "lstm": ("W_f", "W_i", "W_g", "W_o", "b_f", "b_i", "b_g", "b_o"),
    "gru": ("W_r", "W_u", "W_n", "b_r", "b_u", "b_n", "b_nh"),
    "rnn": ("W_h", "b_h"),
}
_STATES = {"lstm": ("h_prev", "c_prev"), "gru": ("h_prev",), "rnn": ("h_prev",)}
INPUT_KEYS = {k: (*p, "W_y", "b_y", "x", *_STATES[k], "target") for k, p in _IN.items()}
STEP_KEYS = {
    "lstm": ("t", "x", "h_prev", "c_prev", "z", "a_f", "a_i", "a_g", "a_o", "f", "i", "g", "o",
             "c", "h", "dh", "dc_next", "do", "dc", "df", "di", "dg", "da_f", "da_i", "da_g",
             "da_o", "dW_f", "dW_i", "dW_g", "dW_o", "db_f", "db_i", "db_g", "db_o", "dz", "dx",
             "dh_prev", "dc_prev"),
    "gru": ("t", "x", "h_prev", "z", "a_r", "a_u", "r", "u", "hn", "a_n", "n", "h", "dh", "dn",
            "du", "da_n", "dhn", "dr", "da_r", "da_u", "dW_r", "dW_u", "dW_n", "db_r", "db_u",
            "db_n", "db_nh", "dx", "dh_prev"),
    "rnn": ("t", "x", "h_prev", "z", "a", "h", "dh", "da", "dW_h", "db_h", "dz", "dx", "dh_prev"),
}
READOUT_KEYS = ("logits", "probs", "loss", "dlogits", "dW_y", "db_y")
_FLAT_DROP = ("t", "x", "h_prev", "c_prev", "dc_next")  # inputs already, or always 0 in one step
RESULT_KEYS = {  # explain_*(example) with one step
    k: ("cell", *INPUT_KEYS[k], *(s for s in STEP_KEYS[k] if s not in _FLAT_DROP), *READOUT_KEYS)
    for k in _IN
}
SEQUENCE_KEYS = {  # explain_*(example, steps=N), N > 1
    k: ("cell", *INPUT_KEYS[k], "steps", *READOUT_KEYS, *(f"d{p}" for p in _IN[k]), "dx",
        *(f"d{s}" for s in _STATES[k]))
    for k in _IN
}
_TORCH_ORDER = {"lstm": "ifgo", "gru": "run", "rnn": "h"}  # lecture gate letters, torch's order
_IN_ORDER = {"lstm": "figo", "gru": "run", "rnn": "h"}  # the lecture's order


# ------------------------------------------------------------------------------ examples, checks
def random_example(cell: str = "lstm", seed: int = 0, hidden: int = 2, input: int = 3,
                   classes: int = 3, steps: int = 1) -> dict:
    """A small example with numbers rounded to 2 decimals (easy to follow by hand): weights,
    biases and states ~ U(-0.5, 0.5), x ~ U(-1, 1) of shape (D,) (or (steps, D)), a random
    target class."""
    _check_cell(cell)
    H, D, C = (check_positive_int(n, v) for n, v in
               (("hidden", hidden), ("input", input), ("classes", classes)))
    N = check_positive_int("steps", steps)
    rng = np.random.default_rng(seed)
    shape = {"W_y": (C, H), "b_y": (C,), "x": (D,) if N == 1 else (N, D)}
    ex: dict = {"cell": cell}
    for k in INPUT_KEYS[cell][:-1]:
        want = shape.get(k, (H, H + D) if k.startswith("W_") else (H,))
        scale = 1.0 if k == "x" else 0.5
        ex[k] = np.round(rng.uniform(-scale, scale, size=want), 2).tolist()
    ex["target"] = int(rng.integers(C))
    return ex


def random_lstm_example(seed: int = 0, hidden: int = 2, input: int = 3, classes: int = 3,
                        steps: int = 1) -> dict:
    """:func:`random_example` for the LSTM."""
    return random_example("lstm", seed, hidden, input, classes, steps)


def load_example(path: str | Path, cell: str | None = None) -> dict:
    """Read an example from JSON and validate it (see :func:`validate_example`).

    The cell is ``cell``, else the file's optional ``"cell"`` key, else ``"lstm"``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: expected a JSON object, got invalid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of named arrays, got "
                         f"{type(data).__name__}")
    return validate_example(data, cell)


def validate_example(example: Mapping, cell: str | None = None,
                     steps: int | None = None) -> dict:
    """Check keys, shapes and values; return float64 arrays, an int target and the cell.

    Sizes are read from h_prev (H,), x (D,) or (N, D) and b_y (C,); every other array must then
    have its shape: W_* (H, H+D), b_* and c_prev (H,), W_y (C, H). Missing and unknown keys are
    errors; ``"cell"`` may be present and must agree with ``cell``.
    """
    if not isinstance(example, Mapping):
        raise TypeError(f"example: expected a dict of named arrays, got {type(example).__name__}")
    cell = _check_cell(cell or example.get("cell", "lstm"))
    if example.get("cell", cell) != cell:
        raise ValueError(f"cell: expected {cell!r}, got {example['cell']!r}")
    want = INPUT_KEYS[cell]
    missing = [k for k in want if k not in example]
    unknown = [k for k in example if k not in want and k != "cell"]
    if missing or unknown:
        raise ValueError(f"{cell} example: missing keys {missing}, unknown keys {unknown}; "
                         f"expected exactly {list(want)} (and optionally 'cell')")
    ex = {k: _floats(k, example[k]) for k in want if k != "target"}
    for k, ranks in (("h_prev", (1,)), ("x", (1, 2)), ("b_y", (1,))):
        a = ex[k]
        if a.ndim not in ranks or 0 in a.shape:
            legend = {"h_prev": "(H,)", "x": "(D,) or (N, D)", "b_y": "(C,)"}[k]
            raise ValueError(f"{k}: expected a non-empty array of shape {legend}, "
                             f"got shape {a.shape}")
    H, D, C = ex["h_prev"].shape[0], ex["x"].shape[-1], ex["b_y"].shape[0]
    sizes = f"(H={H} from h_prev, D={D} from x, C={C} from b_y)"
    for k in want:
        shape, legend = ((H, H + D), "(H, H+D)") if k.startswith("W_") else ((H,), "(H,)")
        if k == "W_y":
            shape, legend = (C, H), "(C, H)"
        if k in ("x", "h_prev", "b_y", "target") or ex[k].shape == shape:
            continue
        raise ValueError(f"{k}: expected shape {shape} = {legend} {sizes}, "
                         f"got shape {ex[k].shape}")
    target = example["target"]
    if isinstance(target, bool) or not isinstance(target, int | np.integer) or not (
        0 <= target < C
    ):
        raise ValueError(f"target: expected a class index in [0, {C}), got {target!r}")
    x = ex["x"]
    if steps is not None:
        N = check_positive_int("steps", steps)
        if (x.ndim == 1 and N > 1) or (x.ndim == 2 and x.shape[0] != N):
            raise ValueError(f"x: expected shape ({N}, {D}) = (steps, D), one row per step, "
                             f"got shape {x.shape}")
    return {"cell": cell, **ex, "target": int(target)}


def _check_cell(cell: object) -> str:
    if cell not in _IN:
        raise ValueError(f"cell: expected one of {list(_IN)}, got {cell!r}")
    return cell


def _floats(key: str, value: object) -> np.ndarray:
    try:
        a = np.asarray(value)
        if a.dtype.kind not in "iuf":
            raise TypeError
        a = a.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected numbers (nested lists of equal length), "
                         f"got {str(value)[:60]}") from None
    if not np.isfinite(a).all():
        raise ValueError(f"{key}: expected finite numbers, got {a.tolist()}")
    return a


def to_torch_layout(example: Mapping, cell: str | None = None) -> dict[str, np.ndarray]:
    """The lecture weights as a ``torch.nn`` cell's ``state_dict``: gate blocks stacked in
    PyTorch's order, W_* split into its h_prev columns (weight_hh) and x columns (weight_ih).
    The gate biases go to bias_ih; bias_hh is 0 except GRU's b_nh (inside the reset product)."""
    ex = validate_example(example, cell)
    H = ex["h_prev"].shape[0]
    ks = _TORCH_ORDER[ex["cell"]]
    b_hh = np.zeros(len(ks) * H)
    if ex["cell"] == "gru":
        b_hh[2 * H:] = ex["b_nh"]
    return {"weight_ih": np.concatenate([ex[f"W_{k}"][:, H:] for k in ks]),  # (G*H, D)
            "weight_hh": np.concatenate([ex[f"W_{k}"][:, :H] for k in ks]),  # (G*H, H)
            "bias_ih": np.concatenate([ex[f"b_{k}"] for k in ks]), "bias_hh": b_hh}


# ------------------------------------------------------------------------------ one step, per cell
# forward(ex, L, x, *state) -> (values, cache, new state); L is the torch layout.
# backward(ex, L, step, cache, *dstate) -> (values, dstate_prev). Vectors are (n,), batches (1, n).
def _lstm_forward(ex, L, x, h_prev, c_prev):
    z = np.concatenate([h_prev, x])
    xw = (x @ L["weight_ih"].T + L["bias_ih"])[None]
    (h, c), cache = cells.lstm_step(xw, h_prev[None], c_prev[None], L["weight_hh"], L["bias_hh"])
    _, _, i, f, g, o, _ = cache
    values = {"z": z, **{f"a_{k}": ex[f"W_{k}"] @ z + ex[f"b_{k}"] for k in "figo"},
              "f": f[0], "i": i[0], "g": g[0], "o": o[0], "c": c[0], "h": h[0]}
    return values, cache, (h[0], c[0])


def _lstm_backward(ex, L, s, cache, dh, dc_next):
    da, (dh_prev, dc_prev) = cells.lstm_step_backward(dh[None], dc_next[None], cache,
                                                      L["weight_hh"])
    tanh_c = np.tanh(s["c"])
    v = {"dh": dh, "dc_next": dc_next, "do": dh * tanh_c,
         "dc": dc_next + dh * s["o"] * (1 - tanh_c**2)}
    v.update(df=v["dc"] * s["c_prev"], di=v["dc"] * s["g"], dg=v["dc"] * s["i"])
    v.update(zip(("da_i", "da_f", "da_g", "da_o"), np.split(da[0], 4), strict=True))
    for k in "figo":
        v[f"dW_{k}"] = np.outer(v[f"da_{k}"], s["z"])
        v[f"db_{k}"] = v[f"da_{k}"]
    dx = da[0] @ L["weight_ih"]
    v.update(dz=np.concatenate([dh_prev[0], dx]), dx=dx, dh_prev=dh_prev[0], dc_prev=dc_prev[0])
    return v, (dh_prev[0], dc_prev[0])


def _gru_forward(ex, L, x, h_prev):
    H = h_prev.shape[0]
    z = np.concatenate([h_prev, x])
    xw = (x @ L["weight_ih"].T + L["bias_ih"])[None]
    h, cache = cells.gru_step(xw, h_prev[None], L["weight_hh"], L["bias_hh"])
    _, r, u, n, hn = cache
    values = {"z": z, "a_r": ex["W_r"] @ z + ex["b_r"], "a_u": ex["W_u"] @ z + ex["b_u"],
              "r": r[0], "u": u[0], "hn": hn[0],
              "a_n": ex["W_n"][:, H:] @ x + ex["b_n"] + r[0] * hn[0], "n": n[0], "h": h[0]}
    return values, cache, (h[0],)


def _gru_backward(ex, L, s, cache, dh):
    da_x, da_h, dh_prev = cells.gru_step_backward(dh[None], cache, L["weight_hh"])
    da_r, da_u, da_n = np.split(da_x[0], 3)
    dhn = np.split(da_h[0], 3)[2]
    v = {"dh": dh, "dn": dh * (1 - s["u"]), "du": dh * (s["h_prev"] - s["n"]), "da_n": da_n,
         "dhn": dhn, "dr": da_n * s["hn"], "da_r": da_r, "da_u": da_u,
         "dW_r": np.outer(da_r, s["z"]), "dW_u": np.outer(da_u, s["z"]),
         "dW_n": np.concatenate([np.outer(dhn, s["h_prev"]), np.outer(da_n, s["x"])], axis=1),
         "db_r": da_r, "db_u": da_u, "db_n": da_n, "db_nh": dhn,
         "dx": da_x[0] @ L["weight_ih"], "dh_prev": dh_prev[0]}
    return v, (dh_prev[0],)


def _rnn_forward(ex, L, x, h_prev):
    z = np.concatenate([h_prev, x])
    xw = (x @ L["weight_ih"].T + L["bias_ih"])[None]
    h, cache = cells.rnn_step(xw, h_prev[None], L["weight_hh"], L["bias_hh"])
    return {"z": z, "a": ex["W_h"] @ z + ex["b_h"], "h": h[0]}, cache, (h[0],)


def _rnn_backward(ex, L, s, cache, dh):
    da, dh_prev = cells.rnn_step_backward(dh[None], cache, L["weight_hh"])
    dx = da[0] @ L["weight_ih"]
    v = {"dh": dh, "da": da[0], "dW_h": np.outer(da[0], s["z"]), "db_h": da[0],
         "dz": np.concatenate([dh_prev[0], dx]), "dx": dx, "dh_prev": dh_prev[0]}
    return v, (dh_prev[0],)


@dataclass(frozen=True)
class _Step:
    forward: Callable
    backward: Callable


_CELLS = {"lstm": _Step(_lstm_forward, _lstm_backward), "gru": _Step(_gru_forward, _gru_backward),
          "rnn": _Step(_rnn_forward, _rnn_backward)}


# ------------------------------------------------------------------------------ the unrolled run
def explain(cell: str, example: Mapping, steps: int | None = None) -> dict:
    """Forward and backward through ``steps`` steps (default: 1, or the rows of a 2-D x)."""
    ex = validate_example(example, _check_cell(cell), steps)
    X = ex["x"].reshape(-1, ex["x"].shape[-1])  # (N, D)
    L = to_torch_layout(ex)
    step = _CELLS[cell]
    state = tuple(ex[k] for k in _STATES[cell])
    records = []
    for t, x in enumerate(X):
        s = {"t": t, "x": x, **dict(zip(_STATES[cell], state, strict=True))}
        values, cache, state = step.forward(ex, L, x, *state)
        records.append((s | values, cache))
    readout, dh = _readout(ex, state[0])
    dstate = (dh, *(np.zeros_like(s) for s in state[1:]))
    for s, cache in reversed(records):  # the loss is at the last step: BPTT from there back
        values, dstate = step.backward(ex, L, s, cache, *dstate)
        s.update(values)
    per_step = [{k: s[k] for k in STEP_KEYS[cell]} for s, _ in records]
    inputs = {"cell": cell, **{k: ex[k] for k in INPUT_KEYS[cell]}}
    if len(per_step) == 1:
        flat = inputs | per_step[0] | readout | {"dx": per_step[0]["dx"].reshape(ex["x"].shape)}
        return _plain({k: flat[k] for k in RESULT_KEYS[cell]})
    summed = {f"d{p}": sum(s[f"d{p}"] for s in per_step) for p in _IN[cell]}
    result = inputs | {"steps": per_step} | readout | summed
    result["dx"] = np.stack([s["dx"] for s in per_step])
    result.update({f"d{k}": v for k, v in zip(_STATES[cell], dstate, strict=True)})
    return _plain(result)


def explain_lstm(example: Mapping, steps: int | None = None) -> dict:
    """One LSTM step (or ``steps``), forward and backward; see the module docstring."""
    return explain("lstm", example, steps)


def explain_gru(example: Mapping, steps: int | None = None) -> dict:
    """One GRU step (or ``steps``), forward and backward; ``u`` is the update gate."""
    return explain("gru", example, steps)


def explain_rnn(example: Mapping, steps: int | None = None) -> dict:
    """One tanh RNN step (or ``steps``), forward and backward."""
    return explain("rnn", example, steps)


def _readout(ex, h):
    logits = ex["W_y"] @ h + ex["b_y"]
    e = np.exp(logits - logits.max())
    probs = e / e.sum()  # softmax, shifted so exp cannot overflow
    dlogits = probs - np.eye(len(probs))[ex["target"]]  # d(-log probs[target]) / dlogits
    loss = float(np.log(e.sum()) + logits.max() - logits[ex["target"]])  # -log probs[target]
    values = {"logits": logits, "probs": probs, "loss": loss,
              "dlogits": dlogits, "dW_y": np.outer(dlogits, h), "db_y": dlogits}
    return values, ex["W_y"].T @ dlogits  # and dL/dh


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


# ------------------------------------------------------------------------------ printing
_FORWARD = {
    "lstm": [("z = [h_prev, x]", "z"), ("a_f = W_f z + b_f", "a_f"),
             ("f = sigma(W_f z + b_f)", "f"), ("a_i = W_i z + b_i", "a_i"),
             ("i = sigma(W_i z + b_i)", "i"), ("a_g = W_g z + b_g", "a_g"),
             ("g = C~ = tanh(W_g z + b_g)", "g"), ("a_o = W_o z + b_o", "a_o"),
             ("o = sigma(W_o z + b_o)", "o"), ("c = f * c_prev + i * g", "c"),
             ("h = o * tanh(c)", "h")],
    "gru": [("z = [h_prev, x]", "z"), ("a_r = W_r z + b_r", "a_r"),
            ("r = sigma(W_r z + b_r)", "r"), ("a_u = W_u z + b_u", "a_u"),
            ("u = sigma(W_u z + b_u)   (update gate)", "u"),
            ("hn = W_n[:, :H] h_prev + b_nh", "hn"), ("a_n = W_n[:, H:] x + b_n + r * hn", "a_n"),
            ("n = tanh(a_n)", "n"), ("h = (1 - u) * n + u * h_prev", "h")],
    "rnn": [("z = [h_prev, x]", "z"), ("a = W_h z + b_h", "a"), ("h = tanh(a)", "h")],
}
_READOUT = [("logits = W_y h + b_y", "logits"), ("probs = softmax(logits)", "probs"),
            ("loss = -log probs[target]", "loss"),
            ("dL/dlogits = probs - onehot(target)", "dlogits"),
            ("dL/dW_y = dlogits h^T", "dW_y"), ("dL/db_y = dlogits", "db_y")]
_BACKWARD = {
    "lstm": [("dL/dc_next = dL/dc_prev of step t+1 (0 at the last step)", "dc_next"),
             ("dL/do = dh * tanh(c)", "do"), ("dL/dc = dc_next + dh * o * (1 - tanh(c)^2)", "dc"),
             ("dL/df = dc * c_prev", "df"), ("dL/di = dc * g", "di"), ("dL/dg = dc * i", "dg"),
             ("dL/da_f = df * f * (1 - f)", "da_f"), ("dL/da_i = di * i * (1 - i)", "da_i"),
             ("dL/da_g = dg * (1 - g^2)", "da_g"), ("dL/da_o = do * o * (1 - o)", "da_o"),
             *((f"dL/dW_{k} = da_{k} z^T", f"dW_{k}") for k in "figo"),
             *((f"dL/db_{k} = da_{k}", f"db_{k}") for k in "figo"),
             ("dL/dz = W_f^T da_f + W_i^T da_i + W_g^T da_g + W_o^T da_o", "dz"),
             ("dL/dh_prev = dz[:H]", "dh_prev"), ("dL/dx = dz[H:]", "dx"),
             ("dL/dc_prev = dc * f", "dc_prev")],
    "gru": [("dL/dn = dh * (1 - u)", "dn"), ("dL/du = dh * (h_prev - n)", "du"),
            ("dL/da_n = dn * (1 - n^2)", "da_n"), ("dL/dhn = da_n * r", "dhn"),
            ("dL/dr = da_n * hn", "dr"), ("dL/da_r = dr * r * (1 - r)", "da_r"),
            ("dL/da_u = du * u * (1 - u)", "da_u"), ("dL/dW_r = da_r z^T", "dW_r"),
            ("dL/dW_u = da_u z^T", "dW_u"), ("dL/dW_n = [dhn h_prev^T, da_n x^T]", "dW_n"),
            ("dL/db_r = da_r", "db_r"), ("dL/db_u = da_u", "db_u"), ("dL/db_n = da_n", "db_n"),
            ("dL/db_nh = dhn", "db_nh"),
            ("dL/dx = W_r[:, H:]^T da_r + W_u[:, H:]^T da_u + W_n[:, H:]^T da_n", "dx"),
            ("dL/dh_prev = dh * u + W_r[:, :H]^T da_r + W_u[:, :H]^T da_u + W_n[:, :H]^T dhn",
             "dh_prev")],
    "rnn": [("dL/da = dh * (1 - h^2)", "da"), ("dL/dW_h = da z^T", "dW_h"),
            ("dL/db_h = da", "db_h"), ("dL/dz = W_h^T da", "dz"),
            ("dL/dh_prev = dz[:H]", "dh_prev"), ("dL/dx = dz[H:]", "dx")],
}


def format_explain(result: dict) -> str:
    """A labelled, step-by-step printout of an ``explain_*`` result (6 significant digits)."""
    cell, steps = result["cell"], result.get("steps")
    N = len(steps) if steps else 1
    H, C = len(result["h_prev"]), len(result["b_y"])
    D = len(result["x"][-1]) if N > 1 else np.shape(result["x"])[-1]
    lines = [f"{cell.upper()}, {N} time step{'s' * (N > 1)}, lecture notation: H={H} hidden, "
             f"D={D} inputs, C={C} classes, target class {result['target']}",
             f"gates act on z = [h_prev, x]: {', '.join(f'W_{k}' for k in _IN_ORDER[cell])} "
             f"{'is' if cell == 'rnn' else 'are'} (H, H+D) = ({H}, {H + D}); sigma is the "
             "logistic sigmoid", "", "Inputs"]
    lines += _lines([(k, k) for k in INPUT_KEYS[cell]], result)
    out = _READOUT[:2] + [(f"loss = -log probs[target] = -log probs[{result['target']}]", "loss")]
    if N == 1:
        lines += ["", "Forward"] + _lines(_FORWARD[cell], result)
        lines += _lines(out, result) + ["", "Backward"] + _lines(_READOUT[3:], result)
        lines += _lines([("dL/dh = W_y^T dlogits", "dh")], result)
        back = [(lab.replace("dc_next + ", ""), k) for lab, k in _BACKWARD[cell]]
        return "\n".join(lines + _lines(back, result))
    for s in steps:
        lines += ["", f"Forward, step t={s['t']}"]
        lines += _lines([(k, k) for k in _STATES[cell] + ("x",)] + _FORWARD[cell], s)
    lines += ["", f"Readout of h at the last step t={N - 1}"] + _lines(out, result)
    lines += ["", "Backward through time, last step first"] + _lines(_READOUT[3:], result)
    for s in reversed(steps):
        carried = ("W_y^T dlogits" if s["t"] == N - 1
                   else f"dL/dh_prev of step t={s['t'] + 1}, carried back through time")
        lines += ["", f"Backward, step t={s['t']}"]
        lines += _lines([(f"dL/dh = {carried}", "dh")] + _BACKWARD[cell], s)
    lines += ["", "Summed over the steps: weight gradients, dx (one row per step), initial state"]
    grads = [(f"dL/d{p} = sum over t", f"d{p}") for p in _IN[cell]]
    grads += [("dL/dx", "dx")] + [(f"dL/d{k} (the initial state)", f"d{k}")
                                  for k in _STATES[cell]]
    return "\n".join(lines + _lines(grads, result))


def _lines(items, values: dict) -> list[str]:
    lines = []
    for label, key in items:
        if key not in values:
            continue
        v = values[key]
        if np.ndim(v) == 2:
            lines.append(f"  {label} =")
            cols = [[f"{x:.6g}" for x in row] for row in v]
            w = max(len(c) for row in cols for c in row)
            lines += ["      [" + "  ".join(c.rjust(w) for c in row) + "]" for row in cols]
        elif np.ndim(v) == 1:
            lines.append(f"  {label} = [" + ", ".join(f"{x:.6g}" for x in v) + "]")
        else:
            lines.append(f"  {label} = {v:.6g}" if isinstance(v, float) else f"  {label} = {v}")
    return lines


def to_json(result: dict) -> str:
    """JSON text of a result: one key per line, each array on one line."""
    def dump(v, indent):
        if isinstance(v, dict):
            pad = " " * (indent + 2)
            body = ",\n".join(f"{pad}{json.dumps(k)}: {dump(x, indent + 2)}" for k, x in v.items())
            return "{\n" + body + "\n" + " " * indent + "}"
        if isinstance(v, list) and v and isinstance(v[0], dict):
            pad = " " * (indent + 2)
            body = ",\n".join(pad + dump(x, indent + 2) for x in v)
            return "[\n" + body + "\n" + " " * indent + "]"
        return json.dumps(v)
    return dump(result, 0)


# ------------------------------------------------------------------------------ command line
