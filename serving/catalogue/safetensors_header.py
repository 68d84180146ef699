"""Reads what a safetensors file holds from its JSON header alone, never its tensor bytes.

The format: an 8-byte little-endian header length, then that many bytes of JSON mapping each
tensor name to {dtype, shape, data_offsets}, plus an optional "__metadata__" entry.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

# A header past this is a corrupt or hostile file: real ones are kilobytes to a few megabytes.
MAX_HEADER_BYTES = 100 * 1024**2

# Bytes per element of each safetensors dtype (the format's own names).
DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8,
    "F32": 4, "I32": 4, "U32": 4,
    "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
}

# The config.json / torch spelling of the same dtypes, as operators know them.
DTYPE_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "I8": "int8", "U8": "uint8",
    "I16": "int16", "I32": "int32", "I64": "int64", "BOOL": "bool",
}


class HeaderError(ValueError):
    """The file is not a readable safetensors file; the message says why."""


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str  # the safetensors name, e.g. "BF16"
    shape: tuple[int, ...]
    nbytes: int

    @property
    def elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


def read_header(path: Path) -> list[TensorEntry]:
    """The tensors listed in `path`'s header, in header order."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise HeaderError("shorter than a safetensors header (8 bytes)")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER_BYTES:
            raise HeaderError(f"header length {length} bytes is not plausible")
        raw = f.read(length)
    if len(raw) < length:
        raise HeaderError(f"truncated: header says {length} bytes, file has {len(raw)}")
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise HeaderError(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise HeaderError("header is not a JSON object")
    return [_entry(name, spec) for name, spec in header.items() if name != "__metadata__"]


def _entry(name: str, spec: object) -> TensorEntry:
    try:
        dtype = spec["dtype"]
        shape = tuple(int(d) for d in spec["shape"])
        start, end = spec["data_offsets"]
    except (TypeError, KeyError, ValueError):
        raise HeaderError(f"tensor {name!r} has no dtype, shape and data_offsets") from None
    return TensorEntry(name=name, dtype=str(dtype), shape=shape, nbytes=int(end) - int(start))
