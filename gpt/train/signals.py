"""Stopping a run cleanly on SIGINT (Ctrl-C), SIGTERM (a cluster's preemption notice), SIGHUP (the terminal closed)
or a lost stdout (the reader of `pretrain.py | tee log` was killed).

    with stop_on_signal() as stop:
        for step in ...:
            ...                      # the loop checks stop.signal once per step, then checkpoints and leaves

A second signal stops at once, as usual; the previous handlers come back when the block ends.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gpt.utils import to_null_device

SIGPIPE = getattr(signal, "SIGPIPE", 13)  # what StopRequest.output_lost records (Windows has no SIGPIPE)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []))


@dataclass
class StopRequest:
    signal: int | None = None  # the signal number received, or None

    def output_lost(self) -> None:
        """stdout can no longer be written (BrokenPipeError: the pipe's reader exited; EIO: the terminal closed):
        stop as if on SIGPIPE, with a checkpoint, and send the rest of stdout to the null device, so the lines still
        to come (and Python's flush at exit) cannot fail again. Without this, the first log line after `| head` or
        a killed `| tee` would end the run with a traceback and lose every step since the last checkpoint."""
        to_null_device(sys.stdout)
        self.signal = self.signal or SIGPIPE


@contextmanager
def stop_on_signal(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[StopRequest]:
    """Within the block, the first of `signals` is recorded in the yielded StopRequest instead of stopping the
    process, so the loop can finish its step and write a checkpoint; a second one stops at once (the default
    handler is back). The previous handlers are restored on leaving the block, however it is left.
    SIGHUP is left alone when the process started with it ignored: `nohup` asks for exactly that. (SIGINT and
    SIGTERM are caught even then: a shell starts a background job with SIGINT ignored, and `kill -INT` should still
    stop it with a checkpoint.)"""
    stop = StopRequest()

    def request_stop(signum, frame):
        stop.signal = signum
        for s in signals:  # a second signal, of any of these kinds (Ctrl-C after a SIGTERM), stops at once
            signal.signal(s, signal.SIG_DFL)

    hangup = getattr(signal, "SIGHUP", None)
    signals = [s for s in signals if not (s == hangup and signal.getsignal(s) == signal.SIG_IGN)]
    old_handlers = {s: signal.signal(s, request_stop) for s in signals}
    try:
        yield stop
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
