"""Stopping a run cleanly on SIGINT (Ctrl-C) or SIGTERM (a cluster's preemption notice).

    with stop_on_signal() as stop:
        for step in ...:
            ...                      # the loop checks stop.signal once per step, then checkpoints and leaves

A second signal stops at once, as usual; the previous handlers come back when the block ends.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class StopRequest:
    signal: int | None = None  # the signal number received, or None


@contextmanager
def stop_on_signal(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[StopRequest]:
    """Within the block, the first of `signals` is recorded in the yielded StopRequest instead of stopping the
    process, so the loop can finish its step and write a checkpoint; a second one stops at once (the default
    handler is back). The previous handlers are restored on leaving the block, however it is left."""
    stop = StopRequest()

    def request_stop(signum, frame):
        stop.signal = signum
        signal.signal(signum, signal.SIG_DFL)  # a second Ctrl-C stops at once

    old_handlers = {s: signal.signal(s, request_stop) for s in signals}
    try:
        yield stop
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
