"""A progress bar: tqdm when it is installed (the ``train`` extra), a plain line otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress(total, desc) as bar: bar.update(loss=...)``; silent when not enabled."""

    def __init__(self, total: int, desc: str = "", enabled: bool = True, initial: int = 0) -> None:
        self.total, self.desc, self.enabled, self.n = total, desc, enabled, initial
        self._bar = None
        self._last = 0.0
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, desc=desc, initial=initial, dynamic_ncols=True,
                                 leave=True, file=sys.stderr)

    def update(self, **postfix: str) -> None:
        self.n += 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(1)
            return
        now = time.monotonic()
        if now - self._last > 2.0 or self.n == self.total:
            self._last = now
            info = " ".join(f"{k}={v}" for k, v in postfix.items())
            print(f"{self.desc} {self.n}/{self.total} {info}", file=sys.stderr, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
