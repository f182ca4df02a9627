"""The default decoding path a notebook or script takes: load_model lays the weights out for decoding (and the
model still trains like a plain one), generate equals HF's greedy tokens, and compile=True is chosen only where it
pays (gpt/fast_decode.py compile_helps)."""

import pytest
import test_fast_decode
import torch
from test_fast_decode import V, column_major, sharp_model

from gpt import generate, matvec
from gpt.fast_decode import CompiledDecoder
from gpt.train import configure_optimizer
from gpt.weights import convert_hf, load_model, save_model, save_state_dict

kernel, no_kernel = test_fast_decode.kernel, test_fast_decode.no_kernel  # the same fixtures (pytest finds them here)


# ---- the default path: load_model lays the weights out for decoding ----------------------------------------------
def test_load_model_then_generate_is_fast_and_equals_hf_greedy(hf_dir, hf_reference, tmp_path, kernel):
    converted = convert_hf(hf_dir)
    model = load_model(save_state_dict(converted.config, converted.state_dict, tmp_path / "m.safetensors"))
    w = model.transformer.h[0].attn.c_attn.weight
    assert column_major(w) == (not kernel)  # laid out at load for oneDNN; the kernel reads the file's layout
    assert model.lm_head.weight is model.transformer.wte.weight
    idx = torch.tensor([[464, 3290, 286, 1204, 318]])
    ours = generate(model, idx, 24, temperature=0)
    with torch.inference_mode():
        hf = hf_reference.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=24, min_new_tokens=24,
                                   do_sample=False, pad_token_id=0)  # fmt: skip
    assert torch.equal(ours, hf)
    plain = load_model(tmp_path / "m.safetensors", layout="plain")
    assert plain.transformer.h[0].attn.c_attn.weight.is_contiguous()
    assert torch.equal(generate(plain, idx, 24, temperature=0), ours)


def test_a_bf16_file_loaded_as_fp32_gets_the_decode_layout(tmp_path, kernel):
    m = sharp_model().to(torch.bfloat16)
    path = save_model(m, tmp_path / "bf16.safetensors")
    loaded = load_model(path, dtype="float32")
    w = loaded.transformer.h[1].mlp.c_proj.weight
    assert w.dtype == torch.float32 and column_major(w) == (not kernel)
    for name, t in m.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t.float()), name
    assert loaded.transformer.h[0].ln_1.bias.dtype == torch.float32


def train_two_steps(model, opt, x):
    model.train()
    for _ in range(2):
        model(x, x).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.state_dict()


@pytest.mark.parametrize("how", ["user's fused AdamW", "configure_optimizer"])
def test_a_loaded_model_trains_like_a_plain_one(tmp_path, how, no_kernel):  # the column-major layout
    # fused AdamW on a CPU assumes its state has the parameter's layout: built after load_model it does, and
    # configure_optimizer puts the plain layout back first. Either way: the same weights as a plain model's.
    path = save_model(sharp_model(), tmp_path / "m.safetensors")
    x = torch.randint(0, V, (2, 16))
    states = []
    for layout in ("plain", "decode"):
        m = load_model(path, layout=layout)
        if how == "configure_optimizer":
            opt = configure_optimizer(m, lr=1e-3, weight_decay=0.1, device_type="cpu")
            assert all(p.is_contiguous() for p in m.parameters())
        else:
            opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True)
        states.append(train_two_steps(m, opt, x))
    for name, a in states[0].items():
        torch.testing.assert_close(states[1][name], a, rtol=1e-5, atol=1e-6, msg=name)


# ---- compile=True is never slower than eager: compiled only where it pays ------------------------------------------
def test_compile_choice_is_deterministic_and_follows_cpu_features(monkeypatch):
    from gpt import fast_decode

    monkeypatch.delenv(fast_decode.COMPILE_ENV, raising=False)
    fast_decode.compile_helps.cache_clear()
    first = fast_decode.compile_helps("cpu")
    fast_decode.compile_helps.cache_clear()
    assert fast_decode.compile_helps("cpu") == first  # chosen the same way twice, no timing involved
    # batch 1: eager runs each block in one call of gpt/matvec.c where it builds (matvec.blocks), else compiled pays
    # (fp32: unless the CPU has AMX)
    assert first == fast_decode.compile_helps("cpu", 1, torch.bfloat16) == (not matvec.available())
    monkeypatch.setenv(matvec.MATVEC_ENV, "0")  # as on a machine without a C compiler
    matvec._library.cache_clear()
    fast_decode.compile_helps.cache_clear()
    assert fast_decode.compile_helps("cpu", 1, torch.bfloat16)
    assert fast_decode.compile_helps("cpu") == (not {"amx_bf16", "amx_tile"} & fast_decode.cpu_flags())
    monkeypatch.delenv(matvec.MATVEC_ENV)
    matvec._library.cache_clear()
    fast_decode.compile_helps.cache_clear()
    assert not fast_decode.compile_helps("cpu", 8, torch.bfloat16)  # batched rows go to MKL / oneDNN either way
    assert fast_decode.compile_helps("cuda") and fast_decode.compile_helps("cuda", 8)
    for forced in ("0", "1"):
        monkeypatch.setenv(fast_decode.COMPILE_ENV, forced)
        fast_decode.compile_helps.cache_clear()
        assert fast_decode.compile_helps("cpu") == (forced == "1")
    fast_decode.compile_helps.cache_clear()


def test_a_decoder_that_does_not_compile_decodes_eagerly():
    m = sharp_model()
    decoder = CompiledDecoder(compile=False)  # what an AMX CPU gets by default
    idx = torch.randint(0, V, (1, 6))
    assert torch.equal(generate(m, idx, 12, temperature=0, decoder=decoder), generate(m, idx, 12, temperature=0))
    assert not decoder._steps  # nothing was compiled
