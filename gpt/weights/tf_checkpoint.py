"""Read a TensorFlow checkpoint (OpenAI's GPT-2 release) with NumPy alone — no TensorFlow import.

A checkpoint `model.ckpt` is a "tensor bundle" of two files:
  model.ckpt.index                   a LevelDB-style sorted table: tensor name → BundleEntryProto
                                     (dtype, shape, shard, offset, size, crc32c of the bytes)
  model.ckpt.data-00000-of-00001     the raw little-endian tensor bytes, back to back

    tensors = load_checkpoint("weights/openai/124M")      # {"model/wte": ndarray (50257, 768), ...}

Every block of the index and every tensor is checked against its CRC-32C, so a corrupted download fails here
with a message naming the file, instead of turning into a model that writes nonsense.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57  # last 8 bytes of every LevelDB/TF table
FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the magic
TF_DTYPES = {  # tensorflow/core/framework/types.proto → NumPy (little-endian)
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    17: np.uint16,
    19: np.float16,
    22: np.uint32,
    23: np.uint64,
}


class CheckpointError(ValueError):
    """The checkpoint files are missing, truncated, corrupted or use a feature this reader does not handle."""


class TensorEntry(NamedTuple):
    dtype: np.dtype
    shape: tuple[int, ...]
    shard_id: int
    offset: int  # byte offset in the data file of shard `shard_id`
    size: int  # bytes
    crc32c: int | None  # masked CRC-32C of the bytes, as TensorFlow stores it


# ---- CRC-32C (Castagnoli), the checksum LevelDB and TensorFlow use ------------------------------------------------
def _byte_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):  # reflected polynomial 0x82F63B78, one bit at a time
        t = np.where(t & 1, (t >> 1) ^ np.uint32(0x82F63B78), t >> 1).astype(np.uint32)
    return t


_T8 = _byte_table()  # register update for one byte
_T8_LIST = _T8.tolist()
_T16 = np.arange(1 << 16, dtype=np.uint32)
for _ in range(2):  # register update for two bytes at once: fewer NumPy steps below
    _T16 = _T8[_T16 & 0xFF] ^ (_T16 >> 8)


def _crc_bytes(data: bytes, reg: int) -> int:
    for b in data:
        reg = _T8_LIST[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _zeros_shift_tables(n: int) -> list[list[int]]:
    """CRC registers are linear in their input: tables giving, per byte of a register value, where n zero bytes
    move it. Used to append the CRC of one chunk after another's."""
    x = (np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None]).ravel()
    for _ in range(n):
        x = _T8[x & 0xFF] ^ (x >> 8)
    return x.reshape(4, 256).tolist()


def crc32c(data: bytes | bytearray | memoryview | np.ndarray, lanes: int = 1 << 16) -> int:
    """CRC-32C of `data`. A CRC is sequential, so pure Python manages ~1 MB/s; instead the data is cut into `lanes`
    equal chunks whose CRCs NumPy computes side by side (two bytes per step), then chained with the linearity of
    CRCs: crc(A + B) = shift_|B|(crc(A)) ^ crc(B). About 250 MB/s."""
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    L = 2 * -(-buf.size // (2 * lanes))  # chunk length, even
    K = buf.size // L if L else 0  # number of chunks
    if K < 64:  # small: the plain loop is faster than setting up lanes
        return _crc_bytes(buf.tobytes(), 0xFFFFFFFF) ^ 0xFFFFFFFF
    words = buf[: K * L].reshape(K, L).view("<u2")  # (K, L/2)
    reg = np.zeros(K, dtype=np.uint32)
    reg[0] = 0xFFFFFFFF  # the initial register belongs to the first chunk only; the others start from 0
    for j in range(0, L // 2, 64):
        for col in np.ascontiguousarray(words[:, j : j + 64].T):  # 64 steps on contiguous (K,) columns
            reg = _T16[(reg ^ col) & 0xFFFF] ^ (reg >> 16)
    S0, S1, S2, S3 = _zeros_shift_tables(L)
    r = 0
    for v in reg.tolist():
        r = S0[r & 0xFF] ^ S1[(r >> 8) & 0xFF] ^ S2[(r >> 16) & 0xFF] ^ S3[r >> 24] ^ v
    return _crc_bytes(buf[K * L :].tobytes(), r) ^ 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    """LevelDB stores CRCs rotated and offset ("masked"), so a CRC of data that holds CRCs stays well-behaved."""
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ---- protobuf and LevelDB table decoding -------------------------------------------------------------------------
def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Little-endian base-128 varint at buf[pos:] → (value, position after it)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint")
        b = buf[pos]
        result |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return result, pos
        shift += 7


def parse_protobuf(buf: bytes) -> dict[int, list]:
    """Protobuf wire format → {field number: [values]}; varints as ints, length-delimited fields as bytes."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            n, pos = read_varint(buf, pos)
            value, pos = bytes(buf[pos : pos + n]), pos + n
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def read_block(table: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """One table block → its (key, value) entries. Keys are prefix-compressed against the previous key; the block
    ends with a restart array we do not need, then a trailer: compression type (1 byte) and masked CRC (4 bytes)."""
    if offset + size + 5 > len(table):
        raise CheckpointError("index block runs past the end of the file (truncated .index)")
    block = table[offset : offset + size]
    compression, masked = table[offset + size], struct.unpack_from("<I", table, offset + size + 1)[0]
    if crc32c(table[offset : offset + size + 1]) != unmask_crc(masked):  # the CRC covers the type byte too
        raise CheckpointError(f"index block at byte {offset} fails its CRC-32C check (corrupted .index)")
    if compression != 0:
        raise CheckpointError(f"compressed index block (type {compression}); TensorFlow writes them uncompressed")
    num_restarts = struct.unpack_from("<I", block, size - 4)[0]
    end = size - 4 - 4 * num_restarts  # entries stop where the restart array starts
    entries, key, pos = [], b"", 0
    while pos < end:
        shared, pos = read_varint(block, pos)
        unshared, pos = read_varint(block, pos)
        value_len, pos = read_varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + value_len]))
        pos += value_len
    return entries


def read_table(path: str | Path) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of a LevelDB-format table file, in key order."""
    table = Path(path).read_bytes()
    if len(table) < FOOTER_SIZE or struct.unpack_from("<Q", table, len(table) - 8)[0] != TABLE_MAGIC:
        raise CheckpointError(f"{path} is not a TensorFlow checkpoint index (no table magic at its end)")
    footer = table[-FOOTER_SIZE:]
    _meta_offset, pos = read_varint(footer, 0)  # the metaindex block (filters) is empty in TF checkpoints
    _meta_size, pos = read_varint(footer, pos)
    index_offset, pos = read_varint(footer, pos)
    index_size, pos = read_varint(footer, pos)
    entries = []
    for _, handle in read_block(table, index_offset, index_size):  # the index block points at the data blocks
        offset, p = read_varint(handle, 0)
        size, _ = read_varint(handle, p)
        entries += read_block(table, offset, size)
    return entries


def parse_entry(name: str, proto: bytes) -> TensorEntry:
    """A BundleEntryProto: 1 dtype, 2 shape, 3 shard_id, 4 offset, 5 size, 6 crc32c, 7 slices."""
    f = parse_protobuf(proto)
    if 7 in f:
        raise CheckpointError(f"{name} is a partitioned (sliced) variable, which this reader does not handle")
    dtype_enum = f.get(1, [0])[0]
    if dtype_enum not in TF_DTYPES:
        raise CheckpointError(f"{name} has TensorFlow dtype enum {dtype_enum}, which this reader does not handle")
    dims = parse_protobuf(f[2][0]).get(2, []) if 2 in f else []  # TensorShapeProto: 2 = repeated Dim
    shape = tuple(parse_protobuf(d).get(1, [0])[0] for d in dims)  # Dim: 1 = size
    return TensorEntry(
        dtype=np.dtype(TF_DTYPES[dtype_enum]).newbyteorder("<"),
        shape=shape,
        shard_id=f.get(3, [0])[0],
        offset=f.get(4, [0])[0],
        size=f.get(5, [0])[0],
        crc32c=f[6][0] if 6 in f else None,
    )


# ---- the checkpoint ----------------------------------------------------------------------------------------------
def checkpoint_prefix(path: str | Path) -> Path:
    """'dir/model.ckpt', 'dir/model.ckpt.index' or a directory holding one checkpoint → the prefix 'dir/model.ckpt'."""
    path = Path(path)
    if path.is_dir():
        pointer = path / "checkpoint"  # text proto: model_checkpoint_path: "model.ckpt"
        if pointer.is_file():
            for line in pointer.read_text(encoding="utf-8").splitlines():
                if line.startswith("model_checkpoint_path:"):
                    return path / line.split(":", 1)[1].strip().strip('"')
        indexes = sorted(path.glob("*.index"))
        if len(indexes) != 1:
            raise CheckpointError(f"{path} holds {len(indexes)} *.index files; pass the checkpoint prefix instead")
        return indexes[0].with_suffix("")
    return path.with_suffix("") if path.suffix == ".index" else path


def read_index(prefix: str | Path) -> tuple[int, dict[str, TensorEntry]]:
    """The .index file → (number of data shards, {tensor name: TensorEntry}) in the file's (sorted) order."""
    index = Path(f"{prefix}.index")
    if not index.is_file():
        raise CheckpointError(f"no checkpoint index at {index}")
    num_shards, entries = 1, {}
    for key, value in read_table(index):
        if key == b"":  # the header: BundleHeaderProto (1 num_shards, 2 endianness, 3 version)
            header = parse_protobuf(value)
            num_shards = header.get(1, [1])[0]
            if header.get(2, [0])[0] != 0:
                raise CheckpointError(f"{index} was written big-endian; this reader handles little-endian only")
            continue
        name = key.decode()
        entries[name] = parse_entry(name, value)
    return num_shards, entries


def list_variables(path: str | Path) -> list[tuple[str, tuple[int, ...]]]:
    """Like tf.train.list_variables: [(name, shape)] sorted by name. Reads only the index."""
    return [(name, e.shape) for name, e in read_index(checkpoint_prefix(path))[1].items()]


def load_checkpoint(path: str | Path, verify: bool = True) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint → {name: ndarray}, equal to what tf.train.load_variable returns.
    path: the prefix (dir/model.ckpt) or the directory. verify: check each tensor's CRC-32C (≈ 4 s per GB)."""
    prefix = checkpoint_prefix(path)
    num_shards, entries = read_index(prefix)
    shards = [Path(f"{prefix}.data-{i:05d}-of-{num_shards:05d}") for i in range(num_shards)]
    tensors = {}
    files = {}
    try:
        for name, e in entries.items():
            data_path = shards[e.shard_id]
            if e.shard_id not in files:
                if not data_path.is_file():
                    raise CheckpointError(f"missing checkpoint data file {data_path}")
                files[e.shard_id] = open(data_path, "rb")
            f = files[e.shard_id]
            expected = int(np.prod(e.shape, dtype=np.int64)) * e.dtype.itemsize
            if e.size != expected:
                raise CheckpointError(f"{name}: index says {e.size} bytes, but shape {e.shape} needs {expected}")
            f.seek(e.offset)
            raw = bytearray(e.size)  # one buffer per tensor, read straight into, then viewed as an array
            if f.readinto(raw) != e.size:
                raise CheckpointError(
                    f"{data_path} is truncated: {name} needs bytes {e.offset}..{e.offset + e.size} "
                    f"but the file has {data_path.stat().st_size}; download it again"
                )
            if verify and e.crc32c is not None and crc32c(raw) != unmask_crc(e.crc32c):
                raise CheckpointError(
                    f"{data_path} is corrupted: tensor {name} fails its CRC-32C check; download it again"
                )
            tensors[name] = np.frombuffer(raw, dtype=e.dtype).reshape(e.shape)
    finally:
        for f in files.values():
            f.close()
    return tensors
