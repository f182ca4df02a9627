"""The TensorFlow-free checkpoint reader (gpt/weights/tf_checkpoint.py) against TensorFlow itself."""

import shutil

import numpy as np
import pytest

from gpt.weights import tf_checkpoint
from gpt.weights.tf_checkpoint import CheckpointError, checkpoint_prefix, crc32c, list_variables, load_checkpoint


def test_reader_returns_exactly_what_tensorflow_returns(openai_dir, tf_reference):
    ours = load_checkpoint(openai_dir)
    assert sorted(ours) == sorted(tf_reference) and len(ours) == 4 + 12 * 2  # wte, wpe, ln_f g/b; 12 per block
    for name, expected in tf_reference.items():
        got = ours[name]
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        assert np.array_equal(got, expected), name
    assert ours["model/h1/attn/c_attn/w"].shape == (1, 48, 144)  # OpenAI's (1, in, out) conv layout, kept as is


def test_list_variables_sorted_names_and_shapes(openai_dir, tf_reference):
    listed = list_variables(openai_dir)
    assert [name for name, _ in listed] == sorted(tf_reference)  # the index is a table sorted by name
    assert dict(listed) == {name: a.shape for name, a in tf_reference.items()}


def test_prefix_accepts_directory_prefix_and_index_path(openai_dir):
    prefix = openai_dir / "model.ckpt"
    assert checkpoint_prefix(openai_dir) == prefix
    assert checkpoint_prefix(prefix) == prefix
    assert checkpoint_prefix(openai_dir / "model.ckpt.index") == prefix


@pytest.mark.parametrize(
    "data, expected",
    [  # the CRC-32C check value, and the iSCSI test vectors of RFC 3720 appendix B.4
        (b"123456789", 0xE3069283),
        (bytes(32), 0x8A9136AA),
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
def test_crc32c_published_values(data, expected):
    assert crc32c(data) == expected


@pytest.mark.parametrize("n", [64 * 2 - 1, 10_000, 1_000_003])
def test_crc32c_lanes_equal_the_byte_loop(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    plain = tf_checkpoint._crc_bytes(data, 0xFFFFFFFF) ^ 0xFFFFFFFF  # the textbook one-byte-at-a-time loop
    assert crc32c(data, lanes=64) == plain  # the NumPy lane path (≥ 64 lanes) with a tail
    assert crc32c(data) == plain


@pytest.fixture
def damaged_copy(openai_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(openai_dir, copy)
    return copy


def flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_bit_in_data_fails_the_crc_and_names_the_tensor(damaged_copy):
    data = damaged_copy / "model.ckpt.data-00000-of-00001"
    _, entries = tf_checkpoint.read_index(damaged_copy / "model.ckpt")
    wpe = entries["model/wpe"]
    flip_byte(data, wpe.offset + wpe.size // 2)
    with pytest.raises(CheckpointError, match=r"corrupted.*model/wpe.*download it again"):
        load_checkpoint(damaged_copy)
    assert load_checkpoint(damaged_copy, verify=False)["model/wpe"].shape == (96, 48)  # only the check catches it


def test_truncated_data_file_is_reported(damaged_copy):
    data = damaged_copy / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(damaged_copy)


def test_flipped_bit_in_index_fails_its_block_crc(damaged_copy):
    flip_byte(damaged_copy / "model.ckpt.index", 20)  # inside the first data block
    with pytest.raises(CheckpointError, match="CRC-32C"):
        load_checkpoint(damaged_copy)


def test_html_saved_as_index_is_not_a_checkpoint(damaged_copy):
    (damaged_copy / "model.ckpt.index").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>" * 3)
    with pytest.raises(CheckpointError, match="not a TensorFlow checkpoint index"):
        load_checkpoint(damaged_copy)
