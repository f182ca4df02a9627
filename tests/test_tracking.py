"""gpt/train/tracking.py: TensorBoard event files written without TensorFlow, read back as TensorBoard reads them."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpt.train.tracking import TensorBoardWriter, read_tensorboard_scalars

ROOT = Path(__file__).resolve().parents[1]


def write_interrupted_and_resumed(run_dir: Path) -> None:
    # the first process logs steps 1..6 but its last checkpoint is step 4; the resumed one starts again at step 5
    first = TensorBoardWriter(run_dir)
    for step in range(1, 7):
        first.add_scalars(step, {"train/loss": 10.0 - step, "train/lr": 1e-3})
    first.close()
    time.sleep(1.1)  # event file names carry a whole-second timestamp; TensorBoard reads the files in name order
    second = TensorBoardWriter(run_dir, purge_step=5)
    for step in range(5, 9):
        second.add_scalars(step, {"train/loss": 100.0 + step, "train/lr": 1e-3})
    second.close()


def test_scalars_read_back_with_the_resumed_run_replacing_the_purged_steps(tmp_path):
    write_interrupted_and_resumed(tmp_path)
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    scalars = read_tensorboard_scalars(tmp_path)
    assert set(scalars) == {"train/loss", "train/lr"}
    assert scalars["train/loss"] == [(1, 9.0), (2, 8.0), (3, 7.0), (4, 6.0), (5, 105.0), (6, 106.0), (7, 107.0),
                                     (8, 108.0)]  # fmt: skip
    assert [v for _, v in scalars["train/lr"]] == pytest.approx([1e-3] * 8)


def test_reading_does_not_import_tensorflow(tmp_path):
    # tensorflow is installed in the dev environment (tests/test_tf_checkpoint.py compares against it), so this
    # checks the switch, not its absence
    write_interrupted_and_resumed(tmp_path)
    code = (
        "import sys; from gpt.train.tracking import read_tensorboard_scalars as r; "
        f"n = len(r({str(tmp_path)!r})['train/loss']); print(n, 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["8", "False"]
