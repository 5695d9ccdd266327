"""Telling the user about a long compile while it runs, so that no minute passes in silence.

XLA compiles an MJX gradient for a minute or more on a small CPU the first time; afterwards the
persistent compilation cache makes it seconds. `announce_compile` wraps such a compile: once it has
run `after_s` seconds (a cold cache), one line on stderr says what is compiling, that this happens
on the first run only, and how long it typically takes; when it ends, a second line gives the time
it took. A warm start that finishes sooner prints nothing.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Iterator

from tqdm.auto import tqdm

ANNOUNCE_AFTER_S = 2.0  # a compile read back from the cache takes about this long at most


def _say(text: str) -> None:
    tqdm.write(text, file=sys.stderr)  # above any progress bar, and out of piped tables


@contextlib.contextmanager
def announce_compile(what: str, typical_s: float, *, after_s: float = ANNOUNCE_AFTER_S,
                     enabled: bool = True) -> Iterator[None]:
    """Run the body; if it takes longer than `after_s` seconds, say that `what` is compiling
    (first run only, typically `typical_s` seconds on a 2-core CPU), and how long it took.

        with announce_compile("the training update of full on ChaosCartPole-v0", typical_s=60):
            jax.block_until_ready(update(params, opt_state, key, 0))
    """
    if not enabled:
        yield
        return
    start = time.perf_counter()
    announced = threading.Event()
    lock = threading.Lock()
    finished = False

    def announce() -> None:
        with lock:
            if finished:
                return
            announced.set()
            _say(f"compiling {what} (first run only: cached afterwards; typically about "
                 f"{typical_s:.0f} s on a 2-core CPU)...")

    timer = threading.Timer(after_s, announce)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            finished = True
        timer.cancel()
        if announced.is_set():
            _say(f"compiled {what} in {time.perf_counter() - start:.0f} s")
