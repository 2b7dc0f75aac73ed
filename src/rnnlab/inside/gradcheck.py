"""Central-difference gradient check of any recurrent layer configuration, in float64.

The loss is a fixed random projection of everything the layer returns,

    L = sum(out * R) + sum(h_n * R_h)  (+ sum(c_n * R_c) for LSTM),

so dL/dout = R and dL/d(h_n, c_n) = (R_h, R_c), and ONE call of the layer's hand-written
``backward`` gives the analytic gradient of x, h0 (c0) and every parameter. Each entry is then
compared with the central difference (L(theta + eps) - L(theta - eps)) / (2 eps), computed by
perturbing that one entry in place and running the forward pass again. An entry passes when

    |analytic - numeric| <= atol + rtol * |numeric|      (rtol 1e-6, atol 1e-8)

which float64 leaves ample room for: the central difference is exact up to about eps^2 ~ 1e-12
plus rounding of about 1e-16 |L| / eps ~ 1e-10 |L|.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rnnlab.nn.recurrent import GRU, LSTM, RNN
from rnnlab.validate import check_positive_int

KINDS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


@dataclass
class TensorCheck:
    """The comparison for one tensor: ``checked`` entries, their worst errors, pass or fail."""

    name: str
    shape: tuple
    checked: int
    max_grad: float  # largest |analytic| among the checked entries
    max_abs_err: float
    max_rel_err: float  # |a - n| / max(|a|, |n|), 0 where both are 0
    passed: bool


@dataclass
class GradcheckReport:
    config: dict
    tensors: list[TensorCheck] = field(default_factory=list)
    rtol: float = 1e-6
    atol: float = 1e-8

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.tensors)

    @property
    def failed(self) -> list[str]:
        return [t.name for t in self.tensors if not t.passed]


def gradcheck_layer(kind: str = "lstm", input_size: int = 3, hidden_size: int = 4,
                    num_layers: int = 1, bidirectional: bool = False, batch_first: bool = False,
                    lengths=None, T: int = 5, B: int = 3, seed: int = 0, eps: float = 1e-6,
                    rtol: float = 1e-6, atol: float = 1e-8,
                    max_entries: int | None = None) -> GradcheckReport:
    """Check dx, dh0 (dc0) and every parameter gradient of one layer against central differences.

    ``kind`` is "lstm", "gru" or "rnn" (tanh). x is (T, B, D), or (B, T, D) with ``batch_first``;
    ``lengths`` (B integers in [1, T]) pads the sequences. ``max_entries`` checks at most that
    many randomly chosen entries per tensor (default: every entry).
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {list(KINDS)}, got {kind!r}")
    T, B = check_positive_int("T", T), check_positive_int("B", B)
    if max_entries is not None:
        check_positive_int("max_entries", max_entries)
    rng = np.random.default_rng(seed)
    layer = KINDS[kind](input_size, hidden_size, num_layers=num_layers, batch_first=batch_first,
                        bidirectional=bidirectional, dtype=np.float64, seed=rng)
    lstm = kind == "lstm"
    LK, KH = num_layers * layer.num_directions, layer.num_directions * hidden_size
    x = rng.standard_normal((B, T, input_size) if batch_first else (T, B, input_size))
    states = [0.5 * rng.standard_normal((LK, B, hidden_size)) for _ in range(1 + lstm)]
    R = rng.standard_normal(x.shape[:-1] + (KH,))
    R_states = [rng.standard_normal(s.shape) for s in states]

    def pack(pair):
        return tuple(pair) if lstm else pair[0]

    def loss() -> float:  # reads x, states and the parameters as they are right now
        out, final = layer(x, pack(states), lengths=lengths)
        finals = list(final) if lstm else [final]
        return float(np.sum(out * R) + sum(np.sum(s * r) for s, r in
                                           zip(finals, R_states, strict=True)))

    layer.zero_grad()
    layer(x, pack(states), lengths=lengths)
    dx, dstate0 = layer.backward(R, pack(R_states))
    names = ["x", "h0", "c0"][: 2 + lstm]
    analytic = dict(zip(names, [dx, *(dstate0 if lstm else [dstate0])], strict=True))
    analytic.update({k: g.copy() for k, g in layer.grads.items()})
    live = dict(zip(names, [x, *states], strict=True)) | layer.parameters()

    config = {"layer": repr(layer), "kind": kind, "input_size": input_size,
              "hidden_size": hidden_size, "num_layers": num_layers,
              "bidirectional": bidirectional, "batch_first": batch_first,
              "lengths": None if lengths is None else [int(n) for n in lengths], "T": T, "B": B,
              "seed": seed, "eps": eps, "max_entries": max_entries}
    report = GradcheckReport(config, rtol=rtol, atol=atol)
    for name, arr in live.items():
        idx = np.arange(arr.size)
        if max_entries is not None and arr.size > max_entries:
            idx = np.sort(rng.choice(arr.size, max_entries, replace=False))
        num = _central_differences(loss, arr, idx, eps)
        report.tensors.append(_compare(name, arr.shape, analytic[name].reshape(-1)[idx], num,
                                       rtol, atol))
    return report


def _central_differences(loss, arr: np.ndarray, idx: np.ndarray, eps: float) -> np.ndarray:
    num = np.empty(len(idx))
    for j, i in enumerate(idx):
        orig = arr.flat[i]
        arr.flat[i] = orig + eps
        up = loss()
        arr.flat[i] = orig - eps
        down = loss()
        arr.flat[i] = orig
        num[j] = (up - down) / (2 * eps)
    return num


def _compare(name, shape, a, n, rtol, atol) -> TensorCheck:
    err = np.abs(a - n)
    scale = np.maximum(np.abs(a), np.abs(n))
    rel = np.divide(err, scale, out=np.zeros_like(err), where=scale > 0)
    return TensorCheck(name=name, shape=tuple(shape), checked=len(a),
                       max_grad=float(np.abs(a).max(initial=0.0)),
                       max_abs_err=float(err.max(initial=0.0)),
                       max_rel_err=float(rel.max(initial=0.0)),
                       passed=bool(np.all(err <= atol + rtol * np.abs(n))))


def format_report(report: GradcheckReport) -> str:
    """The report as a table, one row per tensor, with a PASS/FAIL summary line."""
    c = report.config
    state = " + sum(c_n * R_c)" if c["kind"] == "lstm" else ""
    lines = [f"gradcheck {c['layer']}",
             f"T={c['T']} B={c['B']} lengths={c['lengths']} seed={c['seed']}; "
             f"L = sum(out * R) + sum(h_n * R_h){state}; central differences, eps={c['eps']:g}",
             ""]
    w = max(len("tensor"), *(len(t.name) for t in report.tensors))
    head = (f"{'tensor':<{w}}  {'shape':<14} {'checked':>7}  {'max |grad|':>11}  "
            f"{'max abs err':>11}  {'max rel err':>11}  result")
    lines += [head, "-" * len(head)]
    for t in report.tensors:
        lines.append(f"{t.name:<{w}}  {str(t.shape):<14} {t.checked:>7}  {t.max_grad:>11.3e}  "
                     f"{t.max_abs_err:>11.3e}  {t.max_rel_err:>11.3e}  "
                     f"{'ok' if t.passed else 'FAIL'}")
    rule = f"|analytic - numeric| <= {report.atol:g} + {report.rtol:g} |numeric|"
    n = len(report.tensors)
    lines.append("")
    if report.passed:
        lines.append(f"PASS: all {n} tensors agree ({rule})")
    else:
        lines.append(f"FAIL: {len(report.failed)} of {n} tensors disagree ({rule}): "
                     + ", ".join(report.failed))
    return "\n".join(lines)


# ------------------------------------------------------------------------------ command line
