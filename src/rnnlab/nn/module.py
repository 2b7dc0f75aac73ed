"""The parameter container every layer shares: parameters, gradients, state dicts, modes.

A module owns its parameters as NumPy arrays in an insertion-ordered dict whose keys and order
match ``torch.nn``'s ``state_dict()``; a model made of modules names its children's parameters
``child.name`` as PyTorch does. ``grads`` has the same keys as ``state_dict()`` and holds the live
gradient arrays, and ``parameters()`` the live parameter arrays, so optimizers update both in
place and every layer keeps its references.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rnnlab.nn.backend import resolve_device, to_device, to_host, xp_of


class Module:
    """Base class: named parameters, their gradients, child modules, train/eval mode."""

    def __init__(self) -> None:
        self._params: dict[str, np.ndarray] = {}
        self._grads: dict[str, np.ndarray] = {}
        self._children: dict[str, Module] = {}
        self._stale: set[str] = set()  # gradients marked zero by zero_grad(lazy=True)
        self.training = True
        self.device = "cpu"

    def rng_states(self) -> dict:
        """The state of the module's generator (JSON-able), for exact resumption. A model's
        layers share one generator (every dropout mask, word dropout), so this is all of them."""
        rng = getattr(self, "_rng", None)
        return {} if rng is None else {"dropout": rng.bit_generator.state}

    def set_rng_states(self, states: dict) -> None:
        if "dropout" in states:
            self._rng.bit_generator.state = states["dropout"]

    def _add_param(self, name: str, value: np.ndarray) -> None:
        self._params[name] = value
        self._grads[name] = np.zeros_like(value)
        self._stale.discard(name)

    def _add_child(self, name: str, module: Module) -> Module:
        self._children[name] = module
        return module

    def _named(self, attr: str) -> dict[str, np.ndarray]:
        named = dict(getattr(self, attr))
        for prefix, child in self._children.items():
            named.update({f"{prefix}.{k}": v for k, v in child._named(attr).items()})
        return named

    def parameters(self) -> dict[str, np.ndarray]:
        """The live parameter arrays, by name (updating them in place changes the model)."""
        return self._named("_params")

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """The live gradient arrays, with the same keys as :meth:`state_dict`."""
        for module in self._modules():
            module._clear_stale()
            module._handed_out()
        return self._named("_grads")

    def grads_and_rows(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """For training loops: ``(grads, rows)``, where ``rows`` maps the gradients known to be
        zero outside some rows (an embedding's, which backward fills only at the ids it saw) to
        those rows, so that :func:`rnnlab.optim.grad_norm` and a plain SGD step can skip the
        rest. The loop may read the arrays but must not write into them; reading ``grads``
        instead forgets the rows (whoever holds the arrays may write)."""
        rows: dict[str, np.ndarray] = {}
        for prefix, module in self._prefixed_modules(""):
            module._clear_stale()
            rows.update({prefix + k: v for k, v in module._grad_rows().items()})
        return self._named("_grads"), rows

    def sparse_grad_names(self) -> tuple[str, ...]:
        """The gradients that :meth:`grads_and_rows` may give with rows (an embedding's)."""
        return tuple(prefix + k for prefix, module in self._prefixed_modules("")
                     for k in module._sparse_grads)

    def _prefixed_modules(self, prefix: str):
        yield prefix, self
        for name, child in self._children.items():
            yield from child._prefixed_modules(f"{prefix}{name}.")

    # -- hooks for layers whose gradients are sparse (Embedding)
    _sparse_grads: tuple[str, ...] = ()  # the gradients _grad_rows may name

    def _clear_stale(self) -> None:
        """Zero the gradients still marked by a lazy zero_grad."""
        for name in self._stale:
            self._grads[name].fill(0)
        self._stale.clear()

    def _handed_out(self) -> None:
        """The gradient arrays were handed to someone who may write into them."""

    def _grad_rows(self) -> dict[str, np.ndarray]:
        """Gradients known to be zero outside some rows: name -> those rows."""
        return {}

    def _modules(self):
        return (module for _, module in self._prefixed_modules(""))

    # -- how layers add their gradients (so that zero_grad(lazy=True) can skip a pass)
    def _grad(self, name: str) -> np.ndarray:
        """The gradient array ``name``, ready to be added to (zeroed now if it is marked)."""
        g, marked = self._claim(name)
        if marked:
            g.fill(0)
        return g

    def _claim(self, name: str) -> tuple[np.ndarray, bool]:
        """(gradient array, whether it is marked zero: then the caller overwrites all of it)."""
        marked = name in self._stale
        self._stale.discard(name)
        return self._grads[name], marked

    def _grad_add(self, name: str, value: np.ndarray) -> None:
        """grads[name] += value (a copy when the gradient is marked zero)."""
        g, marked = self._claim(name)
        if marked:
            xp_of(g).copyto(g, value)
        else:
            g += value

    def _grad_add_matmul(self, name: str, a: np.ndarray, b: np.ndarray,
                         scratch: np.ndarray | None = None) -> None:
        """grads[name] += a @ b: one GEMM straight into the gradient when it is marked zero
        (no temporary, no pass to add it); else into ``scratch`` (or a temporary), then added."""
        g, marked = self._claim(name)
        xp = xp_of(g)
        if marked:
            xp.matmul(a, b, out=g)
        else:
            g += xp.matmul(a, b, out=scratch)

    def _remove_param(self, name: str) -> None:
        """Drop a parameter and its gradient (the layer uses another module's: tying)."""
        del self._params[name], self._grads[name]
        self._stale.discard(name)

    def to(self, device: str) -> Module:
        """Move every parameter and gradient (and each child's) to ``device`` ("cpu" or "cuda");
        returns self. Arrays handed out before (``parameters()``, ``grads``, an optimizer's
        references) keep pointing at the old copies: build the optimizer after the move, or
        give it the new parameters (:meth:`rnnlab.optim.Optimizer.to`). A forward's cache is
        dropped (backward must follow a forward on the same device)."""
        device = resolve_device(device)
        for module in self._modules():
            module._params = {k: to_device(v, device) for k, v in module._params.items()}
            module._grads = {k: to_device(v, device) for k, v in module._grads.items()}
            module._moved(device)
            module.device = device
        return self

    def _moved(self, device: str) -> None:
        """Hook: move (or forget) what else a layer holds to ``device``; by default the caches
        of a forward (``_cache``, ``_x``, ``_ids``) are forgotten."""
        for cache in ("_cache", "_x", "_ids"):
            if hasattr(self, cache):
                setattr(self, cache, None)

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter, by name, in ``torch.nn``'s order: NumPy arrays on the
        host, whatever the device."""
        return {name: to_host(value).copy() for name, value in self.parameters().items()}

    def load_state_dict(self, state: Mapping[str, object], strict: bool = True) -> None:
        """Copy arrays into the parameters, checking names and shapes.

        With ``strict`` (the default) missing and unexpected keys are errors; a wrongly shaped
        array is always an error. Values are cast to the module's dtype. Anything with
        ``__array__`` (a CPU torch tensor, for instance) is accepted. Nothing changes unless
        every array passes.
        """
        if not isinstance(state, Mapping):
            raise TypeError(
                f"load_state_dict: expected a mapping of name -> array, got {type(state).__name__}"
            )
        params = self.parameters()
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if strict and (missing or unexpected):
            raise ValueError(
                f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}; "
                f"expected exactly {list(params)}"
            )
        arrays = {}
        for name, value in state.items():
            if name not in params:
                continue
            array = np.asarray(to_host(value))
            target = params[name]
            if array.shape != target.shape:
                raise ValueError(
                    f"load_state_dict: {name!r} expected shape {target.shape}, got {array.shape}"
                )
            if not np.issubdtype(array.dtype, np.floating):
                raise TypeError(f"load_state_dict: {name!r} expected floats, got {array.dtype}")
            if not np.isfinite(array).all():
                raise ValueError(f"load_state_dict: {name!r} contains NaN or Inf")
            arrays[name] = array
        for name, array in arrays.items():
            target = params[name]
            target[...] = to_device(array.astype(target.dtype, copy=False), self.device)

    def zero_grad(self, lazy: bool = False) -> None:
        """Reset every gradient to zero (gradients accumulate across backward calls).

        ``lazy=True`` (what the trainers use) only marks the gradients: a layer's backward then
        writes its first contribution instead of adding it (its weight-gradient GEMM goes
        straight into the array: no temporary, no pass to add, no pass to zero), and whatever is
        still marked is zeroed when ``grads`` is read. As with torch's
        ``zero_grad(set_to_none=True)``, an array taken from ``grads`` before the call holds
        old values until then: read ``grads`` again after backward.
        """
        for module in self._modules():
            module._stale = set(module._grads)
            if not lazy:
                module._clear_stale()

    def train(self, mode: bool = True) -> Module:
        """Training mode (dropout on); returns self."""
        self.training = bool(mode)
        for child in self._children.values():
            child.train(mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode (dropout off); returns self."""
        return self.train(False)
