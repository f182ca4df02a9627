"""scripts/pretrain.py when things go wrong, on tiny models: SIGKILL in the middle of writing a checkpoint leaves the
previous one (and the resumed run's logs have no duplicate steps); SIGINT / SIGHUP finish the step and checkpoint;
under nohup a hangup changes nothing; a closed stdout stops the run with a checkpoint; a NaN loss stops it keeping
the last good checkpoint."""

import os
import signal
import subprocess
import sys
import time

import pytest
import test_pretrain
from test_pretrain import ROOT, SCRIPT, TINY, records, series

from gpt import GPT, load_model
from gpt.train.checkpoint import latest_checkpoint, load_checkpoint_state

pretrain, data_dir = test_pretrain.pretrain, test_pretrain.data_dir  # the same fixtures (pytest finds them here)


# ---- crash safety ----------------------------------------------------------------------------------------------------
def wait_for(predicate, proc, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"process exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.1)


def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one(pretrain, data_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY, "--data-dir", str(data_dir), "--out-dir", str(run_dir), "--max-steps", "6", "--ckpt-interval", "2",
            "--eval-interval", "100", "--total-batch-tokens", "128", "--tensorboard", "true"]  # fmt: skip
    hang = ROOT / "tests" / "pretrain_hang_in_checkpoint.py"  # pretrain.py that pauses inside step_000004's write
    proc = subprocess.Popen([sys.executable, str(hang), "4", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for(lambda: (run_dir / "step_000004.tmp" / "HANGING").exists(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert (run_dir / "step_000004.tmp" / "model.safetensors").is_file()  # really killed halfway
    assert not (run_dir / "step_000004").exists()
    assert latest_checkpoint(run_dir).name == "step_000002"
    assert load_checkpoint_state(run_dir)["step"] == 2
    load_model(run_dir)  # loadable
    assert pretrain(["--resume", "--out-dir", str(run_dir)]) == 0  # and the run goes on from it
    assert latest_checkpoint(run_dir).name == "step_000006"
    assert not list(run_dir.glob("*.tmp"))
    # steps 3 and 4, logged by the killed process after its last checkpoint, were replaced, not duplicated
    assert [r["step"] for r in records(run_dir) if "train/loss" in r] == [1, 2, 3, 4, 5, 6]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert {e.step: e.value for e in acc.Scalars("train/loss")} == pytest.approx(series(run_dir, "train/loss"))


# ---- stopping cleanly: a signal, a closed terminal, a log nobody reads, a NaN ----------------------------------------
@pytest.fixture
def endless_run(data_dir):
    """Start a tiny run that would go on for 100,000 steps, checkpointing only when stopped; killed after the test
    whatever happened (a failed test must not leave it training beside the rest of the suite)."""
    procs = []
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | {"WANDB_SILENT": "true"}  # a pipe buffers

    def start(run_dir, *extra, **popen) -> subprocess.Popen:
        args = [*TINY, "--data-dir", str(data_dir), "--out-dir", str(run_dir), "--max-steps", "100000",
                "--ckpt-interval", "100000", "--eval-interval", "100000", "--total-batch-tokens", "128",
                *extra]  # fmt: skip
        popen = {"stderr": subprocess.PIPE, **popen}
        procs.append(subprocess.Popen([sys.executable, str(SCRIPT), *args], stdout=subprocess.PIPE, text=True,
                                      env=env, **popen))  # fmt: skip
        return procs[-1]

    yield start
    for proc in procs:
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP], ids=["SIGINT", "SIGHUP (the terminal closed)"])
def test_a_signal_finishes_the_step_and_writes_a_checkpoint(endless_run, tmp_path, signum):
    run_dir = tmp_path / "run"
    default = lambda: signal.signal(signum, signal.SIG_DFL)  # noqa: E731 (as in a terminal, even if pytest runs under nohup)
    proc = endless_run(run_dir, preexec_fn=default)
    metrics = run_dir / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and len(series(run_dir, "train/loss")) >= 3, proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    steps = sorted(series(run_dir, "train/loss"))
    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None and ckpt.name == f"step_{steps[-1]:06d}"  # the checkpoint holds the last finished step
    assert load_checkpoint_state(ckpt)["step"] == steps[-1]
    assert "--resume" in out


def test_under_nohup_a_hangup_does_not_stop_the_run(endless_run, tmp_path):
    run_dir = tmp_path / "run"
    proc = endless_run(run_dir, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))  # nohup
    wait_for(lambda: (run_dir / "metrics.jsonl").exists() and len(series(run_dir, "train/loss")) >= 2, proc)
    proc.send_signal(signal.SIGHUP)
    n = len(series(run_dir, "train/loss"))
    wait_for(lambda: len(series(run_dir, "train/loss")) >= n + 5, proc)  # still training, no checkpoint yet
    assert latest_checkpoint(run_dir) is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and latest_checkpoint(run_dir) is not None, err[-3000:]


@pytest.mark.parametrize("stderr_too", [False, True], ids=["| tee", "2>&1 | tee"])
def test_a_closed_stdout_stops_the_run_with_a_checkpoint(endless_run, tmp_path, stderr_too):
    """`pretrain.py | tee log`, and tee is killed (or `| head`): the first log line after that fails with
    BrokenPipeError. The run stops at the next step with a checkpoint, and says so on stderr; it used to end with a
    traceback, losing every step since the last checkpoint. With stderr in the same pipe, the warning cannot arrive,
    and must not turn the clean stop into exit 120 (Python's exit-time flush of a dead stderr)."""
    run_dir = tmp_path / "run"
    extra = dict(stderr=subprocess.STDOUT) if stderr_too else {}
    proc = endless_run(run_dir, "--eval-interval", "4", "--eval-iters", "1", "--sample-tokens", "0", **extra)
    while not proc.stdout.readline().startswith("step 0: val loss"):  # (a write before the loop may fail: 141)
        pass
    proc.stdout.close()  # the reader exits; the validation line at step 4 is the next write
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and (stderr_too or "Traceback" not in err), err
    ckpt = latest_checkpoint(run_dir)
    steps = sorted(series(run_dir, "train/loss"))
    assert ckpt is not None and ckpt.name == f"step_{steps[-1]:06d}" and 5 <= steps[-1] <= 12
    if not stderr_too:
        assert f"stdout was closed, so the run stopped at step {steps[-1]} with a checkpoint" in err
        assert f"--resume --out-dir {run_dir}" in err


def test_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(pretrain, data_dir, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    forward, train_calls = GPT.forward, []

    def forward_nan_at_update_4(self, *args, **kwargs):  # one micro-step per update here (128 tokens a step)
        out = forward(self, *args, **kwargs)
        if self.training:
            train_calls.append(1)
            if len(train_calls) == 4:  # the 4th update's loss becomes NaN
                out = out._replace(loss=out.loss * float("nan"))
        return out

    monkeypatch.setattr(GPT, "forward", forward_nan_at_update_4)
    args = [*TINY, "--data-dir", str(data_dir), "--out-dir", str(run_dir), "--max-steps", "8", "--ckpt-interval", "2",
            "--eval-interval", "100", "--total-batch-tokens", "128"]  # fmt: skip
    assert pretrain(args) == 1
    err = capsys.readouterr().err
    assert "the loss is nan" in err and "step_000002" in err
    assert sorted(series(run_dir, "train/loss")) == [1, 2, 3]  # the NaN step was never applied nor logged
    assert latest_checkpoint(run_dir).name == "step_000002"
    assert [p.name for p in run_dir.glob("step_*")] == ["step_000002"]
