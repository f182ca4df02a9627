"""Stopping a run cleanly on SIGINT (Ctrl-C), SIGTERM (a cluster's preemption notice), SIGHUP (the terminal closed)
or a lost stdout (the reader of `pretrain.py | tee log` was killed).

    with stop_on_signal() as stop:
        for step in ...:
            ...                      # the loop checks stop.signal once per step, then checkpoints and leaves

A second signal stops at once, as usual (under torchrun: one more than repeat_grace seconds later); the previous
handlers come back when the block ends.
"""

from __future__ import annotations

import os
import signal
import sys
import time
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
def stop_on_signal(signals: tuple[int, ...] = STOP_SIGNALS, repeat_grace: float = 0.0) -> Iterator[StopRequest]:
    """Within the block, the first of `signals` is recorded in the yielded StopRequest instead of stopping the
    process, so the loop can finish its step and write a checkpoint; a second one stops at once (the default
    handler is back). The previous handlers are restored on leaving the block, however it is left.
    repeat_grace (seconds): signals that follow the first within it are the same request, not a second one. For
    torchrun's workers: Ctrl-C reaches every process of the terminal's group, and torchrun then sends its
    workers the signal it got, a millisecond later — without the grace each worker would take that for the
    user's second Ctrl-C and die without the checkpoint (issue 15, found by a fresh tester).
    SIGHUP is left alone when the process started with it ignored: `nohup` asks for exactly that. (SIGINT and
    SIGTERM are caught even then: a shell starts a background job with SIGINT ignored, and `kill -INT` should still
    stop it with a checkpoint.)"""
    stop = StopRequest()
    first = []  # monotonic time of the first signal

    def request_stop(signum, frame):
        if first and time.monotonic() - first[0] < repeat_grace:
            return  # the same request, forwarded (see repeat_grace)
        if first:  # a second signal after the grace: stop now, as the default handler would have
            for s in signals:
                signal.signal(s, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        first.append(time.monotonic())
        stop.signal = signum
        if repeat_grace <= 0:  # a second signal, of any of these kinds (Ctrl-C after a SIGTERM), stops at once
            for s in signals:
                signal.signal(s, signal.SIG_DFL)

    hangup = getattr(signal, "SIGHUP", None)
    signals = [s for s in signals if not (s == hangup and signal.getsignal(s) == signal.SIG_IGN)]
    old_handlers = {s: signal.signal(s, request_stop) for s in signals}
    try:
        yield stop
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
