"""scripts/pretrain.py, except that saving checkpoint STEP stops halfway: after the weights are written into the
temp directory, a file HANGING appears there and the process sleeps, so a test can SIGKILL it mid-write.

    python tests/pretrain_hang_in_checkpoint.py STEP [pretrain.py's arguments...]

A test-only wrapper: production code has no hook for this; the patch replaces save_model as
gpt/train/checkpoint.py sees it, in this process only.
"""

import runpy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gpt.train.checkpoint as checkpoint  # noqa: E402

hang_at = sys.argv.pop(1)
real_save_model = checkpoint.save_model


def save_model_then_hang(model, path, *args, **kwargs):
    out = real_save_model(model, path, *args, **kwargs)
    if kwargs.get("extra_metadata", {}).get("step") == hang_at:
        (Path(path).parent / "HANGING").touch()
        while True:  # wait here to be killed
            time.sleep(1)
    return out


checkpoint.save_model = save_model_then_hang
sys.argv[0] = str(ROOT / "scripts" / "pretrain.py")
runpy.run_path(sys.argv[0], run_name="__main__")
