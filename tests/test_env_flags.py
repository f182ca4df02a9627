"""The GPT_* yes/no switches read the environment alike (gpt/utils.py env_flag): 1/true/yes/on and 0/false/no/off,
any case; another value is ignored with one warning line. GPT_ONEDNN_FP32=false used to turn oneDNN *on* (only "0"
meant off there) while GPT_TRAIN_COMPILE=true was silently ignored (only "0"/"1" counted)."""

import pytest
import torch

from gpt import GPT, GPTConfig, matvec, onednn
from gpt.fast_decode import COMPILE_ENV as DECODE_COMPILE_ENV
from gpt.fast_decode import ONEDNN_ENV as DECODE_ONEDNN_ENV
from gpt.fast_decode import EagerDecodeStep, compile_helps, eager_step
from gpt.train.device import COMPILE_ENV as TRAIN_COMPILE_ENV
from gpt.train.device import compile_pays
from gpt.utils import env_flag


@pytest.mark.parametrize(
    "value, want",
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" on ", True),
        ("0", False),
        ("False", False),
        ("no", False),
        ("OFF", False),
        ("", None),
        ("  ", None),
    ],  # fmt: skip
)
def test_yes_and_no_in_the_usual_words(monkeypatch, capsys, value, want):
    monkeypatch.setenv("GPT_TEST_SWITCH", value)
    assert env_flag("GPT_TEST_SWITCH") is want
    monkeypatch.delenv("GPT_TEST_SWITCH")
    assert env_flag("GPT_TEST_SWITCH") is None
    assert capsys.readouterr().err == ""


def test_another_value_is_ignored_with_one_warning_line(monkeypatch, capsys):
    monkeypatch.setenv("GPT_TEST_SWITCH", "maybe")
    assert env_flag("GPT_TEST_SWITCH") is None
    assert env_flag("GPT_TEST_SWITCH") is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: GPT_TEST_SWITCH='maybe' ")
    assert "true" in err[0] and "false" in err[0]


def test_every_switch_takes_the_words(monkeypatch):
    onednn.fp32_pays.cache_clear()
    monkeypatch.setenv(onednn.ONEDNN_ENV, "false")  # it meant "on" before: only "0" was off
    assert not onednn.fp32_pays()
    onednn.fp32_pays.cache_clear()
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        monkeypatch.setenv(onednn.ONEDNN_ENV, "on")
        assert onednn.fp32_pays()
    onednn.fp32_pays.cache_clear()

    monkeypatch.setenv(TRAIN_COMPILE_ENV, "true")  # was ignored: only "0"/"1" counted
    assert compile_pays(torch.device("cpu"))
    monkeypatch.setenv(TRAIN_COMPILE_ENV, "no")
    assert not compile_pays(torch.device("cuda"))

    compile_helps.cache_clear()
    monkeypatch.setenv(DECODE_COMPILE_ENV, "off")
    assert not compile_helps("cuda")
    compile_helps.cache_clear()
    monkeypatch.setenv(DECODE_COMPILE_ENV, "yes")
    assert compile_helps("cpu", batch_size=8)
    compile_helps.cache_clear()

    matvec._library.cache_clear()
    monkeypatch.setenv(matvec.MATVEC_ENV, "False")
    assert not matvec.available()
    monkeypatch.delenv(matvec.MATVEC_ENV)  # the cached answer must not outlive the switch: later tests build it
    matvec._library.cache_clear()

    model = GPT(GPTConfig(vocab_size=97, context_length=32, n_layer=1, n_head=2, n_embd=16)).eval()
    monkeypatch.setenv(DECODE_ONEDNN_ENV, "off")
    step = eager_step(model)
    assert isinstance(step, EagerDecodeStep) and not step.onednn
