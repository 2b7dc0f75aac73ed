"""Optimizers (SGD, Adam, AdamW), global gradient-norm clipping and learning-rate schedules.

Each optimizer reproduces ``torch.optim``'s update exactly (same order of operations, same
constants). It holds the model's live parameter arrays by name and updates them IN PLACE, so
every layer keeps its references; its state (momentum, moments) is preallocated per parameter in
the parameter's dtype (float32 or float64) and updated with in-place ufuncs, using one scratch
array per parameter and no per-step allocation.

``state_dict()`` returns ``(arrays, meta)``: the state arrays keyed ``"<buffer>/<param name>"``
(e.g. ``"exp_avg/rnn.weight_ih_l0"``), ready for a safetensors file, and JSON-able metadata
(class name, hyperparameters, lr, step count) for the checkpoint's JSON.

Shapes: every state array has its parameter's shape. Symbols: ``p`` parameter, ``g`` gradient,
``lr`` learning rate, ``wd`` weight decay, ``t`` the step count after increment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from rnnlab.nn.backend import (
    device_of,
    is_device_array,
    resolve_device,
    to_device,
    to_host,
    xp_of,
)
from rnnlab.nn.memory import human_count, require_memory
from rnnlab.validate import check_number, is_array

# ----------------------------------------------------------------------------- validation


def _check_params(params: object) -> dict[str, np.ndarray]:
    if not isinstance(params, Mapping) or not params:
        raise ValueError(
            f"params: expected a non-empty dict of name -> float array, got {params!r:.80}"
        )
    for name, p in params.items():
        if not is_array(p) or p.dtype not in (np.float32, np.float64):
            kind = p.dtype if is_array(p) else type(p).__name__
            raise TypeError(f"params[{name!r}]: expected a float32 or float64 array, got {kind}")
        if isinstance(p, np.ndarray) and not p.flags.writeable:
            raise ValueError(f"params[{name!r}]: expected a writeable array (updated in place)")
    return dict(params)


def _check_keys(what: str, expected: object, got: object) -> None:
    """Raise a ValueError naming the missing and unexpected keys when the key sets differ."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{what}: missing keys {missing}, unexpected keys {unexpected}")


# ----------------------------------------------------------------------------- clipping


def grad_norm(grads: dict[str, np.ndarray],
              rows: Mapping[str, np.ndarray] | None = None) -> float:
    """The global L2 norm ``sqrt(sum_k ||g_k||^2)`` of all gradients, accumulated in float64
    (float32 gradients as float32 dot products over blocks, with no float64 copy).

    ``rows`` (from :meth:`rnnlab.nn.module.Module.grads_and_rows`): gradients that are zero outside
    the given rows, whose norm is taken over those rows only.
    """
    total = 0.0
    on_device = [g for g in grads.values() if is_device_array(g)]
    if on_device:  # one sum on the GPU and one transfer, not one per block
        total += _device_square_sum(on_device)
    for name, g in grads.items():
        if is_device_array(g):
            continue
        if rows and name in rows:
            g = g[_checked_rows(name, rows[name], g)]
        flat = g.ravel()
        if g.dtype == np.float64:
            total += float(np.dot(flat, flat))
        else:
            for s in range(0, flat.size, 1 << 16):
                block = flat[s:s + (1 << 16)]
                with np.errstate(over="ignore"):  # an overflow is redone in float64 below
                    square = float(np.dot(block, block))
                if not math.isfinite(square):  # float32 overflow (or a real inf/nan)
                    wide = block.astype(np.float64)
                    square = float(np.dot(wide, wide))
                total += square
    return math.sqrt(total)


def _device_square_sum(grads: list) -> float:
    """sum_k ||g_k||^2 of CuPy gradients: dot products in their dtype summed in float64 (redone
    in float64 when a float32 one overflows), read back once."""
    xp = xp_of(grads[0])
    squares = [g.ravel().dot(g.ravel()).astype(np.float64) for g in grads]
    total = float(xp.stack(squares).sum())
    if not math.isfinite(total):
        wide = [g.ravel().astype(np.float64) for g in grads]
        total = float(xp.stack([w.dot(w) for w in wide]).sum())
    return total


def clip_coefficient(norm: float, max_norm: float) -> float:
    """The factor that brings a global gradient norm down to ``max_norm``, as
    ``torch.nn.utils.clip_grad_norm_`` computes it: ``min(max_norm / (norm + 1e-6), 1)``; 1 for
    a non-finite norm (the caller decides what to do with that)."""
    max_norm = _max_norm(max_norm)
    if not math.isfinite(norm):
        return 1.0
    return min(max_norm / (norm + 1e-6), 1.0)


def _checked_rows(name: str, rows: object, g: np.ndarray) -> np.ndarray:
    if (not isinstance(rows, np.ndarray) or rows.ndim != 1
            or not np.issubdtype(rows.dtype, np.integer)):
        raise TypeError(f"rows[{name!r}]: expected a 1-D integer array, got "
                        f"{getattr(rows, 'dtype', type(rows).__name__)} {np.shape(rows)}")
    if rows.size and (rows.min() < 0 or rows.max() >= g.shape[0]):
        raise ValueError(f"rows[{name!r}]: expected rows in [0, {g.shape[0]}), got "
                         f"{rows.min()}..{rows.max()}")
    return rows


def _max_norm(value: object) -> float:
    max_norm = check_number("max_norm", value)
    if max_norm <= 0:
        raise ValueError(f"max_norm: expected a positive number, got {value!r}")
    return max_norm


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so that their global L2 norm is at most ``max_norm``.

    Every ``g_k *= coef`` with ``coef = max_norm / (norm + 1e-6)`` when ``coef < 1``: exactly
    ``torch.nn.utils.clip_grad_norm_``. Returns the norm before clipping. A non-finite norm
    leaves the gradients untouched (the caller decides). A training loop saves the separate pass
    over the gradients with :func:`clipped_step`, which scales each block of a gradient just
    before the update uses it.
    """
    _max_norm(max_norm)
    norm = grad_norm(grads)
    coef = clip_coefficient(norm, max_norm)
    if coef < 1.0:
        for g in grads.values():
            g *= coef
    return norm


def clipped_step(optimizer: Optimizer, grads: dict[str, np.ndarray], max_norm: float | None,
                 rows: Mapping[str, np.ndarray] | None = None) -> float:
    """One update with the gradients clipped to the global norm ``max_norm`` (0 or None: not
    clipped), the way the trainers take it: the norm first (returned, for the log), then
    ``optimizer.step`` with the clipping factor applied inside the update. A non-finite norm
    skips the step and is returned as it is: the caller stops training.
    ``rows``: see :meth:`rnnlab.nn.module.Module.grads_and_rows`."""
    norm = grad_norm(grads, rows)
    if math.isfinite(norm):
        coef = clip_coefficient(norm, max_norm) if max_norm else 1.0
        optimizer.step(grads, grad_scale=coef, rows=rows)
    return norm


# ----------------------------------------------------------------------------- optimizers

UPDATE_BLOCK = 1 << 17  # elements of a parameter updated at a time (512 KiB of float32)


class Optimizer:
    """Base class: parameters by name, a mutable ``lr``, a step count and named state buffers.

    Subclasses define ``_check_hyperparameters`` (validate and normalise a dict),
    ``_buffer_names`` (which state buffers a configuration needs) and ``_update`` (one
    parameter's update).
    """

    def __init__(self, params: dict[str, np.ndarray], lr: float, **hyperparameters: object):
        self.params = _check_params(params)
        self.lr = lr
        self.step_count = 0
        hp = self._check_hyperparameters(hyperparameters)
        buffers = len(self._buffer_names(hp))  # state arrays per parameter, each its size
        require_memory(buffers * sum(p.nbytes for p in self.params.values()),
                       f"{type(self).__name__}: its state "
                       f"({human_count(buffers * sum(p.size for p in self.params.values()))} "
                       "values)")
        self._configure(hp)
        self._make_scratch()

    def _make_scratch(self) -> None:
        """Work buffers: on the host one cache-sized block per dtype (its work buffer and its
        scaled gradient); on a GPU, where a block loop would cost launches, whole-parameter
        buffers made on first use."""
        self._scratch = {p.dtype: (np.empty(UPDATE_BLOCK, p.dtype), np.empty(UPDATE_BLOCK, p.dtype))
                         for p in self.params.values() if not is_device_array(p)}
        self._device_work: dict[str, tuple] = {}

    def to(self, device: str, params: Mapping[str, object] | None = None) -> Optimizer:
        """Move the state buffers to ``device`` ("cpu" or "cuda"); returns self. ``params``:
        the model's parameters after its own ``.to(device)`` (the same names and shapes), which
        the optimizer updates from now on."""
        device = resolve_device(device)
        if params is not None:
            new = _check_params(params)
            _check_keys("params", self.params, new)
            for name, p in new.items():
                if p.shape != self.params[name].shape:
                    raise ValueError(f"params[{name!r}]: expected shape "
                                     f"{self.params[name].shape}, got {p.shape}")
            self.params = new
        self._state = {name: {buf: to_device(v, device) for buf, v in bufs.items()}
                       for name, bufs in self._state.items()}
        self._make_scratch()
        return self

    # -- the learning rate is validated on every assignment (schedules set it)
    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = check_number("lr", value)

    # -- hooks
    def _check_hyperparameters(self, hp: dict) -> dict:
        raise NotImplementedError

    def _buffer_names(self, hp: dict) -> tuple[str, ...]:
        raise NotImplementedError

    def _update(self, p: np.ndarray, g: np.ndarray, work: np.ndarray, state: dict) -> None:
        raise NotImplementedError

    def _configure(self, hp: dict, arrays: Mapping[str, np.ndarray] | None = None) -> None:
        """Set the hyperparameters as attributes and (re)build the state buffers."""
        self.hyperparameters = hp
        for key, value in hp.items():
            setattr(self, key, value)
        self._state = {
            name: {
                buf: (xp_of(p).zeros_like(p) if arrays is None
                      else to_device(np.array(to_host(arrays[f"{buf}/{name}"]), dtype=p.dtype,
                                              order="C"), device_of(p)))
                for buf in self._buffer_names(hp)
            }
            for name, p in self.params.items()
        }

    # -- the public API
    _row_updates = False  # whether a gradient zero outside some rows may update those only

    def step(self, grads: dict[str, np.ndarray], grad_scale: float = 1.0,
             rows: Mapping[str, np.ndarray] | None = None) -> None:
        """Apply one update to every parameter, in place, from ``grads`` (same keys and shapes).

        ``grad_scale`` multiplies every gradient before it is used (gradient clipping: see
        :func:`clip_grad_norm`), block by block into a scratch buffer while the block is in
        cache: no pass over memory of its own, and ``grads`` themselves are left as they are.
        ``rows`` (from :meth:`rnnlab.nn.module.Module.grads_and_rows`): gradients that are zero
        outside the given rows. Where that leaves the other rows unchanged (plain SGD), only
        those rows are updated; otherwise (momentum, weight decay, Adam) every row is.
        """
        grad_scale = check_number("grad_scale", grad_scale)
        if not isinstance(grads, Mapping):
            raise TypeError(f"grads: expected a dict of name -> array, got {type(grads).__name__}")
        _check_keys("grads", self.params, grads)
        for name, p in self.params.items():
            g = grads[name]
            if not is_array(g) or g.shape != p.shape:
                got = g.shape if is_array(g) else type(g).__name__
                raise ValueError(
                    f"grads[{name!r}]: expected an array of shape {p.shape}, got {got}"
                )
            if device_of(g) != device_of(p):
                raise ValueError(f"grads[{name!r}]: expected an array on {device_of(p)!r} (its "
                                 f"parameter's device), got one on {device_of(g)!r}")
        sparse = {name: _checked_rows(name, r, grads[name])
                  for name, r in (rows or {}).items() if self._row_updates and name in grads}
        self.step_count += 1
        for name, p in self.params.items():
            g, state = grads[name], self._state[name]
            if is_device_array(p):  # the whole parameter at once: a few launches
                work, scaled = self._device_buffers(name, p)
                if grad_scale != 1.0:
                    g = xp_of(g).multiply(g, g.dtype.type(grad_scale), out=scaled)
                self._update(p, g, work, state)
                continue
            if name in sparse:  # p[r] -= ... for the rows r that can have a gradient
                r = sparse[name]
                p_rows, g_rows = p[r], g[r]
                if grad_scale != 1.0:
                    g_rows *= g.dtype.type(grad_scale)
                self._update(p_rows, g_rows, np.empty_like(p_rows), {})
                p[r] = p_rows
                continue
            if not (p.flags.c_contiguous and g.flags.c_contiguous):
                self._update(p, g * g.dtype.type(grad_scale) if grad_scale != 1.0 else g,
                             np.empty_like(p), state)
                continue
            # The update is elementwise, so it is applied to cache-sized pieces of the flattened
            # arrays in turn: its several passes then read memory once instead of once each.
            flat = {k: v.reshape(-1) for k, v in state.items()}
            pf, gf = p.reshape(-1), g.reshape(-1)
            work, scaled = self._scratch[p.dtype]
            for s in range(0, pf.size, UPDATE_BLOCK):
                e = s + UPDATE_BLOCK
                n = pf[s:e].size
                gb = gf[s:e]
                if grad_scale != 1.0:
                    gb = np.multiply(gb, gb.dtype.type(grad_scale), out=scaled[:n])
                self._update(pf[s:e], gb, work[:n], {k: v[s:e] for k, v in flat.items()})

    def buffers(self) -> dict[str, np.ndarray]:
        """The live state buffers keyed ``"<buffer>/<name>"`` (writing into them changes the
        optimizer: data-parallel training broadcasts them from rank 0)."""
        return {f"{buf}/{name}": value for name, bufs in self._state.items()
                for buf, value in bufs.items()}

    def _device_buffers(self, name: str, p) -> tuple:
        if name not in self._device_work:
            xp = xp_of(p)
            self._device_work[name] = (xp.empty_like(p), xp.empty_like(p))
        return self._device_work[name]

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """``(arrays, meta)``: host copies of the state buffers keyed ``"<buffer>/<name>"``,
        and JSON-able ``{"class", "lr", "step", "hyperparameters"}``."""
        arrays = {
            f"{buf}/{name}": to_host(value).copy()
            for name, bufs in self._state.items()
            for buf, value in bufs.items()
        }
        hp = {k: list(v) if isinstance(v, tuple) else v for k, v in self.hyperparameters.items()}
        meta = {"class": type(self).__name__, "lr": self.lr, "step": self.step_count,
                "hyperparameters": hp}
        return arrays, meta

    def load_state_dict(self, arrays: Mapping[str, np.ndarray], meta: Mapping) -> None:
        """Restore what :meth:`state_dict` returned: buffers, lr, step count, hyperparameters.

        As in ``torch.optim``, the saved hyperparameters replace the constructor's. Everything is
        checked first (class, keys, shapes, finiteness); nothing changes unless all of it passes.
        """
        cls = type(self).__name__
        if not isinstance(meta, Mapping):
            raise TypeError(f"{cls}.load_state_dict: expected meta to be a dict, got "
                            f"{type(meta).__name__}")
        _check_keys(f"{cls}.load_state_dict meta", {"class", "lr", "step", "hyperparameters"},
                    meta)
        if meta["class"] != cls:
            raise ValueError(f"{cls}.load_state_dict: expected state saved by {cls}, "
                             f"got state saved by {meta['class']!r}")
        lr = check_number("lr", meta["lr"])
        step = meta["step"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"{cls}.load_state_dict: expected a step count >= 0, got {step!r}")
        hp = meta["hyperparameters"]
        if not isinstance(hp, Mapping):
            raise TypeError(f"{cls}.load_state_dict: expected hyperparameters to be a dict, got "
                            f"{type(hp).__name__}")
        hp = self._check_hyperparameters(dict(hp))
        expected = {f"{b}/{n}" for n in self.params for b in self._buffer_names(hp)}
        _check_keys(f"{cls}.load_state_dict arrays", expected, arrays)
        for key in expected:
            value, p = to_host(arrays[key]), self.params[key.split("/", 1)[1]]
            if not isinstance(value, np.ndarray) or value.shape != p.shape:
                got = value.shape if isinstance(value, np.ndarray) else type(value).__name__
                raise ValueError(f"{cls}.load_state_dict: {key!r} expected shape {p.shape}, "
                                 f"got {got}")
            if not np.issubdtype(value.dtype, np.floating):
                raise TypeError(f"{cls}.load_state_dict: {key!r} expected floats, got "
                                f"{value.dtype}")
            if not np.isfinite(value).all():
                raise ValueError(f"{cls}.load_state_dict: {key!r} expected finite values, got "
                                 "NaN or Inf")
        self.lr, self.step_count = lr, step
        self._configure(hp, arrays)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, exactly ``torch.optim.SGD``::

        g = g + wd * p                                  (if wd != 0)
        b = g                 on the first step         (if momentum != 0)
        b = momentum * b + (1 - dampening) * g          afterwards
        g = g + momentum * b  if nesterov, else g = b
        p = p - lr * g
    """

    def __init__(self, params: dict[str, np.ndarray], lr: float, momentum: float = 0.0,
                 dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(params, lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                         weight_decay=weight_decay)

    def _check_hyperparameters(self, hp: dict) -> dict:
        _check_keys("SGD hyperparameters", {"momentum", "dampening", "nesterov", "weight_decay"},
                    hp)
        out = {"momentum": check_number("momentum", hp["momentum"]),
               "dampening": check_number("dampening", hp["dampening"], high=1.0),
               "nesterov": hp["nesterov"],
               "weight_decay": check_number("weight_decay", hp["weight_decay"])}
        if not isinstance(out["nesterov"], bool):
            raise TypeError(f"nesterov: expected a bool, got {out['nesterov']!r}")
        if out["nesterov"] and (out["momentum"] <= 0 or out["dampening"] != 0):
            raise ValueError(f"nesterov: expected momentum > 0 and dampening == 0, got momentum "
                             f"{out['momentum']} and dampening {out['dampening']}")
        return out

    def _buffer_names(self, hp: dict) -> tuple[str, ...]:
        return ("momentum",) if hp["momentum"] else ()

    @property
    def _row_updates(self) -> bool:  # p -= lr * g leaves rows with g = 0 as they are
        return not self.momentum and not self.weight_decay

    def _update(self, p: np.ndarray, g: np.ndarray, work: np.ndarray, state: dict) -> None:
        xp = xp_of(p)
        if not self.momentum and not self.weight_decay:
            p -= xp.multiply(g, self.lr, out=work)      # p -= lr * g
            return
        if self.weight_decay:
            xp.multiply(p, self.weight_decay, out=work)
            work += g                                   # work = g + wd * p
        else:
            xp.copyto(work, g)                          # work = g
        if not self.momentum:
            work *= self.lr
            p -= work                                   # p -= lr * g
            return
        buf = state["momentum"]
        if self.step_count == 1:
            xp.copyto(buf, work)                        # b = g
        else:
            buf *= self.momentum
            if self.dampening:                          # never with nesterov: work is free
                work *= 1.0 - self.dampening
            buf += work                                 # b = momentum * b + (1 - d) * g
        if self.nesterov:
            work *= self.lr
            p -= work                                   # p -= lr * g
            xp.multiply(buf, self.lr * self.momentum, out=work)
            p -= work                                   # p -= lr * momentum * b
        else:
            xp.multiply(buf, self.lr, out=work)
            p -= work                                   # p -= lr * b


class Adam(Optimizer):
    """Adam with L2 weight decay added to the gradient, exactly ``torch.optim.Adam``::

        g = g + wd * p                                  (if wd != 0)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
    """

    _decoupled = False

    def __init__(self, params: dict[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def _check_hyperparameters(self, hp: dict) -> dict:
        name = type(self).__name__
        _check_keys(f"{name} hyperparameters", {"betas", "eps", "weight_decay"}, hp)
        betas = hp["betas"]
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise ValueError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
        return {"betas": (check_number("betas[0]", betas[0], high=1.0, high_open=True),
                          check_number("betas[1]", betas[1], high=1.0, high_open=True)),
                "eps": check_number("eps", hp["eps"]),
                "weight_decay": check_number("weight_decay", hp["weight_decay"])}

    def _buffer_names(self, hp: dict) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def _update(self, p: np.ndarray, g: np.ndarray, work: np.ndarray, state: dict) -> None:
        xp = xp_of(p)
        beta1, beta2 = self.betas
        m, v, t = state["exp_avg"], state["exp_avg_sq"], self.step_count
        if self.weight_decay and self._decoupled:
            p *= 1.0 - self.lr * self.weight_decay      # p = p * (1 - lr * wd)
        if self.weight_decay and not self._decoupled:
            xp.multiply(p, self.weight_decay, out=work)
            work += g                                   # work = g + wd * p
        else:
            xp.copyto(work, g)                          # work = g
        m -= work
        m *= beta1
        m += work                                       # m = g + beta1 * (m - g)
        v *= beta2
        xp.square(work, out=work)
        work *= 1.0 - beta2
        v += work                                       # v = beta2 * v + (1 - beta2) * g^2
        step_size = self.lr / (1.0 - beta1**t)
        xp.sqrt(v, out=work)
        work /= (1.0 - beta2**t) ** 0.5
        work += self.eps                                # denom = sqrt(v) / sqrt(bc2) + eps
        xp.divide(m, work, out=work)
        work *= step_size
        p -= work                                       # p -= lr / bc1 * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay, exactly ``torch.optim.AdamW``::

        p = p * (1 - lr * wd)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
    """

    _decoupled = True

    def __init__(self, params: dict[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay)


# ----------------------------------------------------------------------------- schedules


def _check_optimizer(optimizer: object) -> Optimizer:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer: expected an rnnlab.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    return optimizer


def _check_schedule_state(cls: str, state: object, keys: set[str]) -> Mapping:
    if not isinstance(state, Mapping):
        raise TypeError(f"{cls}.load_state_dict: expected a dict, got {type(state).__name__}")
    _check_keys(f"{cls}.load_state_dict", keys, state)
    if state["class"] != cls:
        raise ValueError(f"{cls}.load_state_dict: expected state saved by {cls}, got state "
                         f"saved by {state['class']!r}")
    return state


def _non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
    return int(value)


class StepDecay:
    """Zaremba et al.'s schedule: constant, then multiplied by ``factor`` every epoch::

        lr(e) = base_lr * factor ** max(0, e - start_epoch)        (epochs e = 1, 2, ...)

    ``base_lr`` is the optimizer's lr at construction, which applies epoch 1. Call
    ``set_epoch(e)`` at the start of epoch ``e``, or ``step()`` at the end of each epoch.
    zaremba-small (lr 1, start 4, factor 0.5): epochs 1-4 lr 1, epoch 5 0.5, epoch 6 0.25, ...
    """

    def __init__(self, optimizer: Optimizer, start_epoch: int, factor: float):
        self.optimizer = _check_optimizer(optimizer)
        self.start_epoch = _non_negative_int("start_epoch", start_epoch)
        self.factor = check_number("factor", factor, high=1.0)
        if self.factor == 0:
            raise ValueError(f"factor: expected a number in (0, 1], got {factor!r}")
        self.base_lr = optimizer.lr
        self.set_epoch(1)

    def lr_at(self, epoch: int) -> float:
        """The learning rate for (1-based) ``epoch``."""
        return self.base_lr * self.factor ** max(0, epoch - self.start_epoch)

    def set_epoch(self, epoch: int) -> float:
        """Set the optimizer's lr for (1-based) ``epoch``; returns it."""
        if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 1:
            raise ValueError(f"epoch: expected a positive integer (1-based), got {epoch!r}")
        self.epoch = int(epoch)
        self.optimizer.lr = self.lr_at(self.epoch)
        return self.optimizer.lr

    def step(self) -> float:
        """Advance to the next epoch; returns its lr."""
        return self.set_epoch(self.epoch + 1)

    def state_dict(self) -> dict:
        """JSON-able state."""
        return {"class": "StepDecay", "base_lr": self.base_lr, "start_epoch": self.start_epoch,
                "factor": self.factor, "epoch": self.epoch}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict`'s output and set the optimizer's lr for its epoch."""
        state = _check_schedule_state(
            "StepDecay", state, {"class", "base_lr", "start_epoch", "factor", "epoch"})
        restored = StepDecay.__new__(StepDecay)
        restored.optimizer = self.optimizer
        restored.start_epoch = _non_negative_int("start_epoch", state["start_epoch"])
        restored.factor = check_number("factor", state["factor"], high=1.0)
        restored.base_lr = check_number("base_lr", state["base_lr"])
        restored.set_epoch(state["epoch"])
        self.__dict__.update(restored.__dict__)


class ReduceOnPlateau:
    """Multiply the lr by ``factor`` when a metric (lower is better) stops improving.

    As ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (mode "min", threshold_mode "rel",
    no cooldown)::

        improved = metric < best * (1 - threshold)
        best, bad = (metric, 0) if improved else (best, bad + 1)
        if bad > patience:  lr = max(lr * factor, min_lr);  bad = 0

    A NaN metric never improves.
    """

    def __init__(self, optimizer: Optimizer, factor: float = 0.25, patience: int = 0,
                 threshold: float = 0.0, min_lr: float = 0.0):
        self.optimizer = _check_optimizer(optimizer)
        self.factor = check_number("factor", factor, high=1.0, high_open=True)
        if self.factor == 0:
            raise ValueError(f"factor: expected a number in (0, 1), got {factor!r}")
        self.patience = _non_negative_int("patience", patience)
        self.threshold = check_number("threshold", threshold, high=1.0, high_open=True)
        self.min_lr = check_number("min_lr", min_lr)
        self.best = math.inf
        self.num_bad = 0

    def step(self, metric: float) -> bool:
        """Record one evaluation's ``metric``; returns True when it reduced the lr."""
        if isinstance(metric, bool) or not isinstance(metric, int | float | np.integer
                                                      | np.floating):
            raise TypeError(f"metric: expected a number, got {type(metric).__name__}")
        metric = float(metric)
        if metric < self.best * (1.0 - self.threshold):
            self.best, self.num_bad = metric, 0
            return False
        self.num_bad += 1
        if self.num_bad <= self.patience:
            return False
        self.num_bad = 0
        new_lr = max(self.optimizer.lr * self.factor, self.min_lr)
        if new_lr < self.optimizer.lr:
            self.optimizer.lr = new_lr
            return True
        return False

    def state_dict(self) -> dict:
        """JSON-able state (``best`` is None before the first metric, never Infinity)."""
        return {"class": "ReduceOnPlateau", "factor": self.factor, "patience": self.patience,
                "threshold": self.threshold, "min_lr": self.min_lr,
                "best": self.best if math.isfinite(self.best) else None,
                "num_bad": self.num_bad}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict`'s output (the lr itself lives in the optimizer's state)."""
        state = _check_schedule_state("ReduceOnPlateau", state, {
            "class", "factor", "patience", "threshold", "min_lr", "best", "num_bad"})
        restored = ReduceOnPlateau(self.optimizer, state["factor"], state["patience"],
                                   state["threshold"], state["min_lr"])
        best = state["best"]
        if best is not None:
            best = check_number("best", best, low=-math.inf)
        restored.best = math.inf if best is None else best
        restored.num_bad = _non_negative_int("num_bad", state["num_bad"])
        self.__dict__.update(restored.__dict__)
