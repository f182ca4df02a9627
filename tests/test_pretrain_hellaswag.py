"""HellaSwag during pretraining (scripts/pretrain.py --hellaswag-interval), on tiny models: fetched once through a
mirror on 127.0.0.1, logged at its steps to metrics.jsonl and TensorBoard with values equal to the completion-style
definition computed by hand on the saved checkpoints, not repeated at a resume step; a missing file is one error line
before any step. Compiled == eager is test_eval.py's (hellaswag_counts on a torch.compile'd training model); 2
processes == 1 is in test_pretrain.py's torchrun run."""

import threading

import pytest
import test_pretrain
import torch
from eval_helpers import HELLASWAG, hellaswag_rows
from test_download import FileServer
from test_pretrain import TINY, records

from gpt import load_model
from gpt.eval.data import MIRROR_ENV, SOURCES
from gpt.tokenizer import get_tokenizer
from gpt.train.tracking import read_tensorboard_scalars

pretrain, data_dir = test_pretrain.pretrain, test_pretrain.data_dir  # the same fixtures (pytest finds them here)
N = 20  # --hellaswag-examples: the fixture's first 20 rows
# a 96-token window holds every one of those rows whole (context + ending), so the hand computation needs no cutting
HS = [*TINY, "--model.context-length", "96", "--total-batch-tokens", "384",
      "--hellaswag-interval", "2", "--hellaswag-examples", str(N)]  # fmt: skip


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """$GPT2_EVAL_MIRROR → a server on 127.0.0.1 holding hellaswag_val.jsonl at the full split's 10,042 rows (the
    fixture's 200 real rows, repeated: the download is checked for the full count)."""
    root = tmp_path / "www"
    root.mkdir()
    rows = HELLASWAG.read_text(encoding="utf-8").splitlines()
    text = "\n".join(rows[i % len(rows)] for i in range(SOURCES["hellaswag"].size)) + "\n"
    (root / "hellaswag_val.jsonl").write_text(text, encoding="utf-8")
    with FileServer(root) as srv:
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        monkeypatch.setenv(MIRROR_ENV, srv.url)
        yield srv
        srv.shutdown()


def hand_accuracy(model, rows) -> tuple[float, float]:
    """(acc, acc_norm), completion style, by the definition: for each ending, one plain forward pass over
    ctx + " " + ending (tokenized apart), the ending tokens' log-probabilities summed (acc) or averaged (acc_norm)."""
    enc, hits, hits_norm = get_tokenizer(), 0, 0
    for row in rows:
        ctx, sums, means = enc.encode(row["ctx"]), [], []
        for ending in row["endings"]:
            end = enc.encode(" " + ending)
            tokens = torch.tensor(ctx + end)
            assert len(tokens) - 1 <= model.config.context_length
            with torch.no_grad():
                logits = model(tokens[None, :-1])[0, :, : model.config.vocab_size].double()  # (T, V)
            logp = torch.log_softmax(logits, dim=-1)[-len(end) :].gather(1, tokens[-len(end) :, None]).sum().item()
            sums.append(logp)
            means.append(logp / len(end))
        label = int(row["label"])
        hits += max(range(4), key=sums.__getitem__) == label
        hits_norm += max(range(4), key=means.__getitem__) == label
    return hits / len(rows), hits_norm / len(rows)


def test_hellaswag_is_logged_at_its_steps_and_equals_a_hand_computation(pretrain, data_dir, mirror, tmp_path):
    run_dir, hs_dir = tmp_path / "run", tmp_path / "eval"
    args = [*HS, "--data-dir", str(data_dir), "--hellaswag-data-dir", str(hs_dir), "--out-dir", str(run_dir),
            "--tensorboard", "true", "--max-steps", "5", "--ckpt-interval", "2", "--keep-checkpoints", "5"]  # fmt: skip
    assert pretrain(args) == 0
    assert [entry[0] for entry in mirror.log] == ["hellaswag_val.jsonl"]  # fetched once, into hellaswag_data_dir
    assert len(hellaswag_rows()) < len((hs_dir / "hellaswag_val.jsonl").read_text(encoding="utf-8").splitlines())

    logged = [r for r in records(run_dir) if "eval/hellaswag_acc_norm" in r]
    assert [r["step"] for r in logged] == [0, 2, 4, 5]  # every 2 steps and at the end
    tb = read_tensorboard_scalars(run_dir)
    for key in ("eval/hellaswag_acc_norm", "eval/hellaswag_acc"):
        assert tb[key] == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in logged]
    for r in logged[1:]:  # steps 2, 4, 5: the weights saved at that step, scored by hand
        acc, acc_norm = hand_accuracy(load_model(run_dir / f"step_{r['step']:06d}"), hellaswag_rows()[:N])
        assert (r["eval/hellaswag_acc"], r["eval/hellaswag_acc_norm"]) == (acc, acc_norm), r
    assert any(0 < r["eval/hellaswag_acc_norm"] < 1 for r in logged)  # a count of N that can be wrong either way

    # resumed: HellaSwag is not run again at the resume step (5), only at the new end; the file is not fetched again
    assert pretrain(["--resume", "--out-dir", str(run_dir), "--max-steps", "6"]) == 0
    assert [r["step"] for r in records(run_dir) if "eval/hellaswag_acc_norm" in r] == [0, 2, 4, 5, 6]
    assert len(mirror.log) == 1


def test_missing_hellaswag_data_is_one_error_line_before_training(pretrain, data_dir, mirror, tmp_path, capsys):
    (mirror.root / "hellaswag_val.jsonl").unlink()  # the mirror answers 404
    run_dir = tmp_path / "run"
    args = [*HS, "--data-dir", str(data_dir), "--hellaswag-data-dir", str(tmp_path / "eval"), "--out-dir", str(run_dir)]
    assert pretrain(args) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]  # "downloading URL", then the error
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:] and "Traceback" not in err, lines
    assert "HTTP 404" in lines[-1] and "--hellaswag-data-dir" in lines[-1] and "--hellaswag-interval 0" in lines[-1]
    assert not run_dir.exists()  # nothing started
    assert not list((tmp_path / "eval").glob("hellaswag_val.jsonl*"))  # and no partial file left


def test_endings_longer_than_the_context_are_one_error_line_before_training(pretrain, data_dir, tmp_path, capsys):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "hellaswag_val.jsonl").write_bytes(HELLASWAG.read_bytes())
    run_dir = tmp_path / "run"
    args = [
        *TINY,
        "--data-dir",
        str(data_dir),
        "--hellaswag-data-dir",
        str(tmp_path / "eval"),
        "--out-dir",
        str(run_dir),
        "--hellaswag-interval",
        "2",
        "--hellaswag-examples",
        "18",
    ]  # row 18 has a 41-token ending
    assert pretrain(args) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == ["error: HellaSwag endings run to 41 tokens, more than model.context_length (32); use a longer "
                     "context, or --hellaswag-interval 0"]  # fmt: skip
    assert not run_dir.exists()


def test_unprepared_data_without_a_source_names_the_prepare_command(pretrain, tmp_path, capsys):
    missing = tmp_path / "fineweb-edu"
    assert pretrain([*TINY, "--data-dir", str(missing), "--data-source", "", "--out-dir", str(tmp_path / "r")]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert f"prepare it first: python scripts/prepare_data.py --dataset fineweb-edu --out-dir {missing}" in lines[0]
    assert "--data-source" in lines[0]
