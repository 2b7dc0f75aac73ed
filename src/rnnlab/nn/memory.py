"""Memory checks before allocation: a configuration too big for this machine is refused with one
line that says what it needs, instead of a MemoryError traceback (or the swap storm before it).

    bytes to build   = P * itemsize * 2                  (weights and their gradients)
    optimizer state  = P * itemsize * S                  S state buffers per parameter (sgd 0,
                                                         with momentum 1, adam(w) 2): checked
                                                         by ``rnnlab.optim.Optimizer`` itself

The check compares with what the operating system reports as available now (``MemAvailable`` on
Linux); activations, caches and the optimizer's small scratch buffers come on top, so passing it
does not promise that training fits: it only refuses what certainly cannot.
"""

from __future__ import annotations

import os

import numpy as np

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


class NotEnoughMemory(MemoryError, ValueError):
    """A configuration whose arrays cannot fit in the memory available.

    A MemoryError, since that is what the allocation would have raised (code that catches
    MemoryError still does); a ValueError, since it is refused at the public boundary before
    anything is allocated, like every other argument this library rejects (and handlers of bad
    arguments, such as the CLI's, report it as one).
    """


def available_bytes() -> int | None:
    """Memory available to a new allocation: ``MemAvailable`` from /proc/meminfo where it exists,
    else the physical memory (pages * page size); None when neither is known (no check then)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # no sysconf (Windows) or no such name
        return None


def human_bytes(nbytes: float) -> str:
    """1536 -> '1.5 KiB' (powers of 1024)."""
    size, unit = float(nbytes), UNITS[0]
    for unit in UNITS:
        if size < 1024 or unit == UNITS[-1]:
            break
        size /= 1024
    return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"


def human_count(n: int) -> str:
    """123456 -> '123,456'; 8 * 10**15 -> '8.0e15'."""
    if n < 10**6:
        return f"{n:,}"
    mantissa, exponent = f"{n:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def require_memory(nbytes: int, what: str) -> None:
    """Raise :class:`NotEnoughMemory` if ``nbytes`` exceed the memory available.

    ``what`` names the owner and the arrays and reads before "need ...", e.g.
    "LSTM(10, 20, num_layers=2): its 2,560 float32 parameters and their gradients".
    """
    available = available_bytes()
    if available is not None and nbytes > available:
        raise NotEnoughMemory(f"{what} need {human_bytes(nbytes)}, more than the "
                              f"{human_bytes(available)} this machine has available")


def require_parameters(owner: str, count: int, dtype: object) -> None:
    """The check a module makes before allocating ``count`` parameters and their gradients."""
    dt = np.dtype(dtype)
    require_memory(2 * count * dt.itemsize,
                   f"{owner}: its {human_count(count)} {dt} parameters and their gradients")
