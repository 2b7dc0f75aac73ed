"""The parameter container every layer shares: parameters, gradients, state dicts, modes.

A module owns its parameters as NumPy arrays in an insertion-ordered dict whose keys and order
match ``torch.nn``'s ``state_dict()``. ``grads`` has the same keys. Optimizers update the arrays of
``parameters()`` in place, so layers keep their references.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class Module:
    """Base class: named parameters, their gradients, train/eval mode."""

    def __init__(self) -> None:
        self._params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.training = True

    def _add_param(self, name: str, value: np.ndarray) -> None:
        self._params[name] = value
        self.grads[name] = np.zeros_like(value)

    def parameters(self) -> dict[str, np.ndarray]:
        """The live parameter arrays, by name (updating them in place changes the model)."""
        return self._params

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter, by name, in ``torch.nn``'s order."""
        return {name: value.copy() for name, value in self._params.items()}

    def load_state_dict(self, state: Mapping[str, object], strict: bool = True) -> None:
        """Copy arrays into the parameters, checking names and shapes.

        With ``strict`` (the default) missing and unexpected keys are errors; a wrongly shaped
        array is always an error. Values are cast to the module's dtype. Anything with
        ``__array__`` (a CPU torch tensor, for instance) is accepted.
        """
        if not isinstance(state, Mapping):
            raise TypeError(
                f"load_state_dict: expected a mapping of name -> array, got {type(state).__name__}"
            )
        missing = [k for k in self._params if k not in state]
        unexpected = [k for k in state if k not in self._params]
        if strict and (missing or unexpected):
            raise ValueError(
                f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}; "
                f"expected exactly {list(self._params)}"
            )
        arrays = {}
        for name, value in state.items():
            if name not in self._params:
                continue
            array = np.asarray(value)
            target = self._params[name]
            if array.shape != target.shape:
                raise ValueError(
                    f"load_state_dict: {name!r} expected shape {target.shape}, got {array.shape}"
                )
            if not np.issubdtype(array.dtype, np.floating):
                raise TypeError(f"load_state_dict: {name!r} expected floats, got {array.dtype}")
            if not np.isfinite(array).all():
                raise ValueError(f"load_state_dict: {name!r} contains NaN or Inf")
            arrays[name] = array
        for name, array in arrays.items():  # all checked first: a failed load changes nothing
            self._params[name][...] = array

    def zero_grad(self) -> None:
        """Reset every gradient to zero (gradients accumulate across backward calls)."""
        for g in self.grads.values():
            g.fill(0)

    def train(self, mode: bool = True) -> Module:
        self.training = bool(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)
