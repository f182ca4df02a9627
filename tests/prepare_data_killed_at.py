"""scripts/prepare_data.py, except that the process sends itself a real signal at a chosen point of the preparation:

    python tests/prepare_data_killed_at.py batch:N [prepare_data.py's arguments...]       SIGKILL after the N-th batch
    python tests/prepare_data_killed_at.py publish:N [...]                                SIGKILL after checkpoint N
    python tests/prepare_data_killed_at.py batch:N:SIGINT [...]                           a Ctrl-C there instead

batch:N: after the N-th batch's tokens are written, before the checkpoint that would record them (the progress
update sits exactly there). publish:N: after the N-th checkpoint (prep_state.json) is written, before the shards it
lists are renamed to their final names. A test-only wrapper: production code has no hook for this; the patches
replace Progress.update and prepare.write_json_atomic in this process only (the tokenizer workers are untouched).
"""

import os
import runpy
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gpt.data.pipeline as pipeline  # noqa: E402
import gpt.data.prepare as prepare  # noqa: E402
from gpt.data.shards import STATE_NAME  # noqa: E402

event, count, *sig = sys.argv.pop(1).split(":")
signum = getattr(signal, sig[0]) if sig else signal.SIGKILL
if signum == signal.SIGINT:
    # as in a terminal: a job started in the background by a shell (`cmd &`, e.g. pytest run that way) inherits
    # SIGINT ignored, and Python then installs no KeyboardInterrupt handler, so the Ctrl-C would be lost
    signal.signal(signal.SIGINT, signal.default_int_handler)
seen = 0


def count_and_kill(what: str) -> None:
    global seen
    if what == event:
        seen += 1
        if seen == int(count):
            os.kill(os.getpid(), signum)


real_update, real_write_json = pipeline.Progress.update, prepare.write_json_atomic


def update_then_maybe_kill(self, n, shards):
    real_update(self, n, shards)
    count_and_kill("batch")


def write_json_then_maybe_kill(path, obj):
    real_write_json(path, obj)
    if Path(path).name == STATE_NAME:
        count_and_kill("publish")


pipeline.Progress.update = update_then_maybe_kill
prepare.write_json_atomic = write_json_then_maybe_kill
sys.argv[0] = str(ROOT / "scripts" / "prepare_data.py")
runpy.run_path(sys.argv[0], run_name="__main__")
