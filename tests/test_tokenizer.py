import shutil
import socket
from pathlib import Path

import pytest

from gpt import get_tokenizer
from gpt.tokenizer import EOT_ID, TokenizerFileError, _load, _package_bpe_dir, stream_decode

CORPUS = Path(__file__).resolve().parents[1] / "data" / "shakespeare"


def test_known_ids():
    enc = get_tokenizer()
    assert enc.encode("Hello, world!") == [15496, 11, 995, 0]
    assert enc.n_vocab == 50257
    assert enc.encode("<|endoftext|>", allowed_special={"<|endoftext|>"}) == [EOT_ID]
    assert enc.eot_token == EOT_ID


def test_round_trip_whole_default_corpus():
    enc = get_tokenizer()
    files = sorted(CORPUS.glob("*.txt"))
    assert len(files) == 42
    total = 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        ids = enc.encode_ordinary(text)
        total += len(ids)
        assert enc.decode(ids) == text, path.name
    # SOURCE.md's published count: the works tokenized one by one (prepare_data adds an <|endoftext|> before each)
    assert total == 1_561_893


def test_builds_with_network_unreachable(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (blocked by test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))  # no cached copy to lean on
    _load.cache_clear()
    assert get_tokenizer().encode("Hello, world!") == [15496, 11, 995, 0]


def test_builds_from_a_model_directory(tmp_path):
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(_package_bpe_dir() / name, tmp_path / name)
    assert get_tokenizer(tmp_path).encode(" moves forward") == get_tokenizer().encode(" moves forward")


@pytest.mark.parametrize("name", ["encoder.json", "vocab.bpe"])
def test_corrupted_bpe_file_is_rejected(tmp_path, name):
    for n in ("encoder.json", "vocab.bpe"):
        shutil.copy(_package_bpe_dir() / n, tmp_path / n)
    data = bytearray((tmp_path / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / name).write_bytes(bytes(data))
    with pytest.raises(TokenizerFileError, match=f"{name} is corrupted"):
        get_tokenizer(tmp_path)


def test_missing_bpe_file_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerFileError, match="missing tokenizer file"):
        get_tokenizer(tmp_path)


def test_stream_decode_keeps_multibyte_characters_whole():
    enc = get_tokenizer()
    text = "naïve café 😀 日本語"
    ids = enc.encode(text)
    pieces = list(stream_decode(enc, ids))
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert len(pieces) < len(ids)  # some tokens were partial characters, held back until complete
