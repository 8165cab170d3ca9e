"""A NumPy reader for ``.safetensors`` files (no torch, no extra package).

Format (huggingface/safetensors): an unsigned little-endian 64-bit header length ``n``, ``n``
bytes of JSON mapping each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}``
(offsets into the byte buffer that follows the header; an optional ``"__metadata__"`` entry holds
strings), then the buffer. Tensors are stored row-major and little-endian.
"""

from __future__ import annotations

import json
import struct

import numpy as np

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_MAX_HEADER = 100 << 20  # the format caps the header at 100 MB


class SafetensorsError(ValueError):
    """The file is not a well-formed safetensors file."""


def _bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bit patterns → float32 (bfloat16 is the top half of a float32)."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as NumPy arrays (bfloat16 widened to float32).

    Raises:
      SafetensorsError: truncated file, bad header, unknown dtype, or offsets outside the data.
    """
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError("shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", head)
        if length > _MAX_HEADER:
            raise SafetensorsError(f"header length {length} is implausible")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise SafetensorsError(f"header is not JSON ({err})") from err
        buffer = f.read()
    if not isinstance(header, dict):
        raise SafetensorsError("header is not a JSON object")
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError) as err:
            raise SafetensorsError(f"tensor {name!r}: malformed header entry") from err
        if end > len(buffer) or begin > end:
            raise SafetensorsError(
                f"tensor {name!r}: data ends at byte {end} but the file "
                f"holds {len(buffer)} (truncated?)"
            )
        raw = buffer[begin:end]
        if dtype == "BF16":
            array = _bfloat16_to_float32(np.frombuffer(raw, "<u2"))
        elif dtype in _DTYPES:
            array = np.frombuffer(raw, np.dtype(_DTYPES[dtype]).newbyteorder("<"))
        else:
            raise SafetensorsError(f"tensor {name!r}: unsupported dtype {dtype}")
        count = int(np.prod(shape)) if shape else 1
        if array.size != count:
            raise SafetensorsError(f"tensor {name!r}: {array.size} values for shape {shape}")
        tensors[name] = array.reshape(shape).copy()
    return tensors


def write_safetensors(path: str, tensors: dict[str, np.ndarray]) -> None:
    """Write float32/float16/int arrays as a safetensors file (tests and conversions)."""
    codes = {np.dtype(v): k for k, v in _DTYPES.items()}
    header, chunks, offset = {}, [], 0
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        data = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": codes[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the buffer to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))
