"""Gradient flow through time: why plain RNN gradients vanish or explode and LSTM's do not.

A cell runs T steps over standard-normal inputs from a zero state; the loss looks at the LAST
hidden state only, L = sum(h_T * R) with a fixed random R (B, H). Backpropagating with the cell's
tape gives, at every step t, the gradient of L with respect to the state (h_t, c_t), and we
record its size against the distance T - t between the state and the loss:

    dh_norm[d] = mean over the batch of || dL/dh_t ||_2,   t = T - d   (dc_norm likewise, LSTM)

Here (h_t, c_t) are the independent state variables that step t + 1 reads, so dL/dh_t and
dL/dc_t are exactly the ``dh0, dc0`` a layer returns when run on x[t:] from (h_t, c_t). At d = 0
dL/dh_T = R and dL/dc_T = 0 (c_T reaches L only through h_T, which is held fixed).

Why the curves look as they do. For the tanh RNN, dL/dh_{t-1} = (dL/dh_t * (1 - h_t^2)) W_hh:
one product with W_hh per step, damped by tanh' <= 1. With W_hh's spectral radius rho < 1 the
product shrinks geometrically (vanishing); with rho > 1 it can grow (exploding) until saturation
(tanh' -> 0) holds it back. The LSTM's cell state has an additive path, dL/dc_{t-1} = dL/dc_t * f
+ (terms through the gates), so with forget gates near 1 (a positive forget bias) the gradient is
carried almost unchanged over hundreds of steps.

Numbers: float64 throughout (the vanishing curves reach 1e-30 and far below). Entries that fall
under float64's smallest normal number (2.2e-308) are flushed to zero after every step, because
on some CPUs arithmetic on subnormals takes a slow path. Measured here (x86-64, OpenBLAS
Haswell kernels, one thread): it does not matter on this machine. A step of the RNN backward
costs 5.6 us with subnormal operands against 5.1 us with normal ones at H = 32, and the same
81 us at H = 256. And a curve spends only 15 to 50 of its 1000 steps in the subnormal range
before it underflows to exact zero anyway. A 1000-step backward pass at rho = 0.5 took 93 ms
with the flush and 94 ms without. The flush stays as cheap insurance for CPUs where
subnormals are slow; it costs a few microseconds a step. A flushed curve ends at zero, which
the log-scale plot leaves out and the table prints as 0. A gradient that overflows to inf is
recorded as inf from there on.

``clip`` is an ILLUSTRATION, not training-time clipping: after every backward step the carried
state gradient of each sequence (dL/dh_t, with dL/dc_t for LSTM) is rescaled to norm <= clip.
Training code clips the norm of the accumulated parameter gradient once per update instead; the
per-step version shows the same point in one picture: clipping bounds an exploding gradient but
cannot bring back a vanished one.

Trained weights (:func:`trained_flow`, ``rnnlab gradflow --weights FILE``). The curves above
are for random weights. A file written by ``rnnlab bench longdep --save`` holds a layer trained
on the adding problem or the copy task; its weights (``rnn.weight_ih_l0`` -> ``weight_ih``, ...)
go into the matching float64 cell, which runs over inputs of the task it was trained on (a
batch from :mod:`rnnlab.data.synthetic`, encoded as :mod:`rnnlab.tasks.longdep` encodes them)
for the task's T (``--T`` changes the lag; a copy sequence is T + 2 * length steps). The loss is the
same L = sum(h_T * R) on the LAST hidden state, not the task's own loss, so the curves compare
directly with the random-weight ones. Next to it the same architecture at its initialisation
(re-created from the saved config's seed and --init, exactly as the training run began) runs
on the same x and R: what training did to how far back the gradient reaches.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from dataclasses import asdict, dataclass

import numpy as np

from rnnlab.nn.cells import GRUCell, LSTMCell, RNNCell
from rnnlab.plots import pyplot
from rnnlab.validate import check_positive_int

CELLS = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}
EXPERIMENTS = ("cells", "radius", "forget", "clip")
# the pair of commands both `bench longdep --help` and `gradflow --help` show
TRAINED_FLOW_EXAMPLE = (
    "  rnnlab bench longdep --task adding --T 100 --cell lstm --save lstm100.safetensors\n"
    "  rnnlab gradflow --weights lstm100.safetensors --plot trained.png")
# 1.5 sits at the edge of chaos for an input-driven tanh RNN: its gradient wanders around its
# starting size (growing for some seeds, decaying for others), so 3.0 is added to show explosion
RADII = (0.5, 0.9, 1.0, 1.1, 1.5, 3.0)
FORGET_BIASES = (0.0, 1.0, 3.0)
CLIP_RADII, CLIP_VALUE = (1.5, 3.0), 1.0
TABLE_DISTANCES = (1, 10, 100, 1000)
TINY = np.finfo(np.float64).tiny  # smallest normal float64; below it lie the slow subnormals


@dataclass(frozen=True)
class FlowConfig:
    """One gradient-flow run; see :func:`gradient_flow`."""

    cell: str = "rnn"
    T: int = 1000
    hidden: int = 32
    input_size: int = 8
    batch: int = 16
    seed: int = 0
    recurrent_scale: float | None = None
    forget_bias: float = 0.0
    clip: float | None = None

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell: expected one of {sorted(CELLS)}, got {self.cell!r}")
        for name in ("T", "hidden", "input_size", "batch"):
            check_positive_int(name, getattr(self, name))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise TypeError(f"seed: expected an int, got {self.seed!r}")
        for name in ("recurrent_scale", "clip"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected a positive number or None, got {value!r}")
        if not np.isfinite(self.forget_bias):
            raise ValueError(f"forget_bias: expected a finite number, got {self.forget_bias!r}")
        if self.forget_bias != 0 and self.cell != "lstm":
            raise ValueError(f"forget_bias: expected 0 for cell {self.cell!r} (only the LSTM "
                             f"has a forget gate), got {self.forget_bias!r}")


@dataclass
class Problem:
    """The fixed ingredients of a run: the float64 cell, inputs x (T, B, D) and R (B, H)."""

    cell: RNNCell | LSTMCell | GRUCell
    x: np.ndarray
    R: np.ndarray


def spectral_radius(W: np.ndarray) -> float:
    """Largest |eigenvalue| of a square matrix."""
    return float(np.max(np.abs(np.linalg.eigvals(W))))


def make_problem(cfg: FlowConfig) -> Problem:
    """Build the cell (torch-style init) and the data of a run, deterministically from the seed.

    Weights and data come from separate streams of ``seed``: every cell sees the same x and R,
    and the radius runs rescale the same W_hh.
    """
    weight_seed, data_seed = np.random.SeedSequence(cfg.seed).spawn(2)
    cls = CELLS[cfg.cell]
    cell = cls(cfg.input_size, cfg.hidden, dtype=np.float64,
               seed=np.random.default_rng(weight_seed))
    p, H = cell.parameters(), cfg.hidden
    if cfg.recurrent_scale is not None:
        for k in range(cls.gates):  # each (H, H) gate block of W_hh, rescaled on its own
            block = p["weight_hh"][k * H:(k + 1) * H]
            block *= cfg.recurrent_scale / spectral_radius(block)
    # the effective forget bias is b_ih + b_hh; we shift b_ih's forget block (gates i, f, g, o)
    p["bias_ih"][H:2 * H] += cfg.forget_bias
    rng = np.random.default_rng(data_seed)
    x = rng.standard_normal((cfg.T, cfg.batch, cfg.input_size))
    R = rng.standard_normal((cfg.batch, H))
    return Problem(cell, x, R)


def gradient_flow(cell: str, T: int = 1000, hidden: int = 32, input_size: int = 8,
                  batch: int = 16, seed: int = 0, recurrent_scale: float | None = None,
                  forget_bias: float = 0.0, clip: float | None = None) -> dict:
    """Norm of dL/dh_t (and dL/dc_t for LSTM) against the distance T - t from the loss.

    ``cell``: "rnn" (tanh), "lstm" or "gru". ``recurrent_scale``: rescale each (H, H) gate block
    of W_hh to this spectral radius. ``forget_bias``: added to the LSTM forget-gate bias.
    ``clip``: per-step clipping of the carried gradient (an illustration; see the module doc).

    Returns ``{"distance": (T+1,) ints 0..T, "dh_norm": (T+1,), "dc_norm": (T+1,) (LSTM only),
    "config": dict}``; entry d is the mean over the batch of the per-sequence L2 norm at t = T - d.
    """
    cfg = FlowConfig(cell, T, hidden, input_size, batch, seed, recurrent_scale, forget_bias, clip)
    result = measure(make_problem(cfg), clip)
    result["config"] = asdict(cfg)
    return result


def measure(prob: Problem, clip: float | None = None) -> dict:
    """The curves of one problem: its cell runs over ``prob.x`` (T steps), then L =
    sum(h_T * R) is backpropagated. Returns ``{"distance": 0..T, "dh_norm", "dc_norm" (LSTM)}``,
    entry d at t = T - d, as :func:`gradient_flow` describes."""
    lstm, T = isinstance(prob.cell, LSTMCell), prob.x.shape[0]
    _forward(prob.cell, prob.x, lstm)
    dh_norm, dc_norm = _backward(prob.cell, prob.R, T, lstm, clip)
    result = {"distance": np.arange(T + 1), "dh_norm": dh_norm[::-1].copy()}
    if lstm:
        result["dc_norm"] = dc_norm[::-1].copy()
    return result


def _forward(cell, x, lstm: bool) -> np.ndarray:
    """T steps from the zero state; every step's cache goes on the cell's tape. Returns the
    hidden states h_1 .. h_T, (T, B, H)."""
    h = c = np.zeros((x.shape[1], cell.hidden_size), cell.dtype)
    hs = np.empty((x.shape[0], x.shape[1], cell.hidden_size), cell.dtype)
    for t, x_t in enumerate(x):
        if lstm:
            h, c = cell(x_t, (h, c))
        else:
            h = cell(x_t, h)
        hs[t] = h
    return hs


def _backward(cell, R, T: int, lstm: bool, clip: float | None):
    """Pop the tape from step T down to 1; returns the norms indexed by t (0..T)."""
    dh_norm = np.full(T + 1, np.inf)
    dc_norm = np.full(T + 1, np.inf)
    dh, dc = R.copy(), np.zeros_like(R)  # dL/dh_T = R; c_T reaches L only through h_T
    dh_norm[T], dc_norm[T] = _norm(dh), 0.0
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        for t in range(T, 0, -1):  # step t maps (h_{t-1}, c_{t-1}) to (h_t, c_t)
            if lstm:
                _, (dh, dc) = cell.backward(dh, dc)
            else:
                _, dh = cell.backward(dh)
            if not (np.isfinite(dh).all() and np.isfinite(dc).all()):
                cell.clear_tape()  # overflowed: the rest of the curve stays inf
                break
            for g in (dh, dc):
                g[np.abs(g) < TINY] = 0.0  # flush subnormals (see the module docstring)
            if clip is not None:
                _clip_rows(dh, dc, clip)
            dh_norm[t - 1], dc_norm[t - 1] = _norm(dh), _norm(dc)
            if not (np.isfinite(dh_norm[t - 1]) and np.isfinite(dc_norm[t - 1])):
                cell.clear_tape()  # a norm past float64's range: overflowed all the same
                break
    return dh_norm, dc_norm


def _row_norms(g: np.ndarray) -> np.ndarray:
    """L2 norm of each row, scaled first so that values near 1e300 do not overflow."""
    scale = np.max(np.abs(g), axis=1)
    safe = np.where(scale > 0, scale, 1.0)[:, None]
    return scale * np.sqrt(np.sum((g / safe) ** 2, axis=1))


def _norm(g: np.ndarray) -> float:
    """Mean over the batch of the per-sequence L2 norm (each divided before the sum: a mean
    of norms near 1e308 must not overflow where every norm is finite)."""
    norms = _row_norms(g)
    return float(np.sum(norms / norms.size))


def _clip_rows(dh: np.ndarray, dc: np.ndarray, clip: float) -> None:
    """Rescale, in place, each sequence's carried gradient (dh, dc together) to norm <= clip."""
    norm = _row_norms(np.concatenate([dh, dc], axis=1))[:, None]
    factor = np.minimum(1.0, clip / np.maximum(norm, TINY))
    dh *= factor
    dc *= factor


# ------------------------------------------------------------------------------------ sweep
def sweep(experiments=EXPERIMENTS, cells=("rnn", "lstm", "gru"), T: int = 1000,
          hidden: int = 32, input_size: int = 8, batch: int = 16, seed: int = 0) -> list[dict]:
    """The standard comparison sets, as a list of :func:`gradient_flow` results.

    Each result also carries ``experiment`` and ``label``:
      cells   the ``cells`` at their default (torch) initialisation
      radius  plain RNN with W_hh's spectral radius 0.5, 0.9, 1.0, 1.1, 1.5, 3.0
      forget  LSTM with forget-gate bias 0, 1, 3
      clip    plain RNN at radius 1.5 and 3.0, each without and with per-step clipping at 1.0
    """
    unknown = [e for e in experiments if e not in EXPERIMENTS]
    if unknown or not experiments:
        raise ValueError(f"experiments: expected some of {EXPERIMENTS}, got {experiments!r}")
    bad = [c for c in cells if c not in CELLS]
    if bad or not cells:
        raise ValueError(f"cells: expected some of {sorted(CELLS)}, got {cells!r}")
    common = {"T": T, "hidden": hidden, "input_size": input_size, "batch": batch, "seed": seed}
    runs = []  # (experiment, label, kwargs)
    if "cells" in experiments:
        runs += [("cells", c, {"cell": c}) for c in cells]
    if "radius" in experiments:
        runs += [("radius", f"rnn, radius {r:g}", {"cell": "rnn", "recurrent_scale": r})
                 for r in RADII]
    if "forget" in experiments:
        runs += [("forget", f"lstm, forget bias {b:g}", {"cell": "lstm", "forget_bias": b})
                 for b in FORGET_BIASES]
    if "clip" in experiments:
        for r in CLIP_RADII:
            kw = {"cell": "rnn", "recurrent_scale": r}
            clipped = {**kw, "clip": CLIP_VALUE}
            runs += [("clip", f"rnn, radius {r:g}, no clip", kw),
                     ("clip", f"rnn, radius {r:g}, clip {CLIP_VALUE:g}", clipped)]
    return [{"experiment": e, "label": label, **gradient_flow(**kw, **common)}
            for e, label, kw in runs]


# ------------------------------------------------------------------------------------ trained
def cell_from_layer(cell: str, layer, dtype: object = np.float64):
    """The step cell ("rnn", "lstm" or "gru") holding a one-layer RNN/LSTM/GRU's weights:
    ``weight_ih_l0`` -> ``weight_ih`` and so on (cast to ``dtype``)."""
    if cell not in CELLS:
        raise ValueError(f"cell: expected one of {sorted(CELLS)}, got {cell!r}")
    out = CELLS[cell](layer.input_size, layer.hidden_size, dtype=dtype)
    out.load_state_dict({k.removesuffix("_l0"): v for k, v in layer.parameters().items()})
    return out


def trained_flow(weights: str | os.PathLike, T: int | None = None, batch: int = 16,
                 seed: int = 0) -> list[dict]:
    """Gradient flow through a cell trained by ``rnnlab bench longdep --save`` and through the
    same architecture at its initialisation (see the module docstring).

    ``weights``: the saved file. ``T``: the task's lag for the inputs (default: the lag it was
    trained on). ``batch`` sequences of the task and R (B, H) come from ``seed``; both models
    see the same x and R. The loss is L = sum(h_T * R), as for the random-weight runs.

    Returns two :func:`gradient_flow`-style results, trained then init, each with
    ``experiment`` "weights", a ``label`` such as "lstm trained (adding T=100)" / "lstm init
    (chrono)", and ``config`` (cell, T = steps run, hidden, input_size, batch, seed, weights,
    trained, and the run's ``longdep`` config and ``result`` summary).
    """
    from rnnlab.tasks.longdep import build_model, load_model, make_batch

    check_positive_int("batch", batch)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed: expected an int, got {seed!r}")
    trained, cfg, summary = load_model(weights)
    lag = cfg.T if T is None else T
    data_cfg = dataclasses.replace(cfg, T=lag)  # checks the lag (adding needs T >= 2)
    rng = np.random.default_rng(seed)
    x, _ = make_batch(data_cfg, batch, rng)
    x = trained.inputs(x).astype(np.float64)  # adding as is; copy one-hot (T', B, S+2)
    R = rng.standard_normal((batch, cfg.hidden))
    runs = [(f"{cfg.cell} trained ({cfg.task} T={cfg.T})", trained, True),
            (f"{cfg.cell} init" + (f" ({cfg.init})" if cfg.cell != "rnn" else ""),
             build_model(cfg), False)]  # a plain RNN ignores --init
    results = []
    for label, model, is_trained in runs:
        result = measure(Problem(cell_from_layer(cfg.cell, model.rnn), x, R))
        result["config"] = {"cell": cfg.cell, "T": x.shape[0], "hidden": cfg.hidden,
                            "input_size": x.shape[2], "batch": batch, "seed": seed,
                            "weights": str(weights), "trained": is_trained, "task": cfg.task,
                            "lag": lag, "longdep": asdict(cfg), "result": summary}
        results.append({"experiment": "weights", "label": label, **result})
    return results


# ------------------------------------------------------------------------------------ output
def _curves(result: dict):
    """(name, values) for each recorded norm of one result: dL/dh, and dL/dc for LSTM."""
    yield "dL/dh", result["dh_norm"]
    if "dc_norm" in result:
        yield "dL/dc", result["dc_norm"]


def format_table(results: list[dict], distances=TABLE_DISTANCES) -> str:
    """Norm at a few distances for each curve; '-' where the distance exceeds T."""
    width = max([30, *(len(r["label"]) for r in results)])
    head = f"{'experiment':<10} {'run':<{width}} {'grad':<6}" + "".join(
        f" {'d=' + str(d):>9}" for d in distances)
    lines = [head, "-" * len(head)]
    for r in results:
        for name, values in _curves(r):
            cells = "".join(f" {values[d]:9.2e}" if d < len(values) else f" {'-':>9}"
                            for d in distances)
            lines.append(f"{r['experiment']:<10} {r['label']:<{width}} {name:<6}{cells}")
    return "\n".join(lines)


def write_csv(results: list[dict], path) -> None:
    """One row per (run, distance): experiment, label, distance, dh_norm, dc_norm ('' if none)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["experiment", "label", "distance", "dh_norm", "dc_norm"])
        for r in results:
            dc = r.get("dc_norm")
            for i, d in enumerate(r["distance"]):
                w.writerow([r.get("experiment", ""), r.get("label", r["config"]["cell"]), int(d),
                            repr(float(r["dh_norm"][i])),
                            "" if dc is None else repr(float(dc[i]))])


TITLES = {
    "cells": "Cells at default (PyTorch) initialisation",
    "radius": "Plain RNN: spectral radius of W_hh",
    "forget": "LSTM: forget-gate bias",
    "clip": f"Plain RNN: per-step clipping of the carried gradient at {CLIP_VALUE:g}",
    "weights": "Trained on a long-lag task vs. the same model at initialisation",
}


def plot(results: list[dict], path) -> None:
    """Log-scale norms against the distance T - t, one panel per experiment set, saved as PNG.

    Solid lines are ||dL/dh_t||, dashed lines the LSTM's ||dL/dc_t||. A curve that underflowed
    to zero stops there, and its legend entry says where.
    """
    plt = pyplot()
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r.get("experiment", "runs"), []).append(r)
    n = len(groups)
    ncols = 1 if n == 1 else 2
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.8 * ncols, 4.8 * nrows), squeeze=False)
    for ax, (name, group) in zip(axes.flat, groups.items(), strict=False):
        for k, r in enumerate(group):
            for curve, values in _curves(r):
                _plot_curve(ax, r, curve, values, f"C{k}")
        ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
        ax.set_yscale("log")
        _decade_ticks(ax)
        ax.set_title(TITLES.get(name, name))
        ax.set_xlabel("distance T - t (steps between h_t and the loss on h_T)")
        ax.set_ylabel("gradient norm (batch mean)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="best", framealpha=0.9)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    cfg = results[0]["config"]
    fig.suptitle("How far back the gradient of L = sum(h_T * R) reaches\n"
                 f"H={cfg['hidden']}, batch {cfg['batch']}, T={cfg['T']}, seed {cfg['seed']}, "
                 "float64; dotted line: norm 1", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_curve(ax, result: dict, curve: str, values: np.ndarray, color: str) -> None:
    d = result["distance"]
    y = np.where((values > 0) & np.isfinite(values), values, np.nan)
    label = f"{result.get('label', result['config']['cell'])}: {curve}"
    gone = np.flatnonzero((values[1:] == 0) | ~np.isfinite(values[1:]))
    if gone.size:
        label += f" ({'0' if values[gone[0] + 1] == 0 else 'inf'} from d={d[gone[0] + 1]})"
    dashed = curve == "dL/dc"
    ax.plot(d, y, color=color, lw=2.2 if dashed else 1.5, ls="--" if dashed else "-",
            alpha=0.75 if dashed else 1.0, label=label)


def _decade_ticks(ax) -> None:
    """Major ticks every 1, 2, 5, 10, 20, 50 or 100 decades: at most about 8 labels."""
    from matplotlib.ticker import LogFormatterMathtext, LogLocator, NullLocator

    lo, hi = ax.get_ylim()
    span = np.log10(hi) - np.log10(lo)
    step = next((s for s in (1, 2, 5, 10, 20, 50, 100) if span / s <= 8), 200)
    ax.yaxis.set_major_locator(LogLocator(base=10.0**step))
    ax.yaxis.set_major_formatter(LogFormatterMathtext(base=10.0))
    ax.yaxis.set_minor_locator(NullLocator())
