"""How values cross the worker boundary: length-framed messages in a closed, data-only format.

The datasite never unpickles anything a worker sends. A message is JSON plus raw buffers
for numpy arrays and bytes; decoding builds only dicts, lists, tuples, sets, strings,
numbers, None, bytes and numeric arrays, within size and depth limits. Anything else a
job returns (a DataFrame, an object) crosses as a ``Withheld`` marker naming its type,
never its content, and the release policy blocks it.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass

import numpy as np

__all__ = ["dumps", "loads", "send", "recv", "Withheld", "WireError", "MAX_MESSAGE"]

MAX_MESSAGE = 64 * 2**20  # a reply, a state document or a request: 64 MiB at most (the datasite decodes it)
MAX_DEPTH = 48
DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64"}
_KIND = re.compile(r"[^A-Za-z0-9_.]")


class WireError(ValueError):
    """A message is malformed, too large or too deep."""


@dataclass(frozen=True)
class Withheld:
    """Something a job returned that cannot cross the boundary; only its type name did."""

    kind: str

    def __repr__(self) -> str:
        return f"<withheld {self.kind}>"


def _encode(value, blobs: list, depth: int):
    if depth > MAX_DEPTH:
        raise WireError(f"the value nests deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic) and not isinstance(value, np.ndarray):
        value = value.item()
        if isinstance(value, (complex, bytes)):
            return {"$": "withheld", "kind": "numpy scalar"}
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$": "float", "v": repr(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        blobs.append(bytes(value))
        return {"$": "bytes", "blob": len(blobs) - 1}
    if isinstance(value, np.ndarray):
        if value.dtype.name not in DTYPES:
            return {"$": "withheld", "kind": f"ndarray[{_KIND.sub('', value.dtype.name)[:20]}]"}
        blobs.append(np.ascontiguousarray(value).tobytes())
        return {"$": "nd", "dtype": value.dtype.name, "shape": list(value.shape), "blob": len(blobs) - 1}
    if isinstance(value, dict):
        return {"$": "dict", "items": [[_encode(k, blobs, depth + 1), _encode(v, blobs, depth + 1)]
                                       for k, v in value.items()]}
    if isinstance(value, list):
        return [_encode(v, blobs, depth + 1) for v in value]
    if isinstance(value, (tuple, set, frozenset)):
        tag = "tuple" if isinstance(value, tuple) else "set"
        return {"$": tag, "items": [_encode(v, blobs, depth + 1) for v in value]}
    return {"$": "withheld", "kind": _KIND.sub("", type(value).__name__)[:40] or "object"}


def dumps(value) -> bytes:
    """Encode ``value``; types outside the format become ``Withheld`` markers."""
    blobs: list[bytes] = []
    head = json.dumps(_encode(value, blobs, 0), separators=(",", ":"), allow_nan=False).encode()
    parts = [struct.pack(">II", len(head), len(blobs)), head]
    for blob in blobs:
        parts.append(struct.pack(">Q", len(blob)))
        parts.append(blob)
    data = b"".join(parts)
    if len(data) > MAX_MESSAGE:
        raise WireError(f"the message is {len(data)} bytes, over the {MAX_MESSAGE} limit")
    return data


def _decode(node, blobs: list[bytes], depth: int):
    if depth > MAX_DEPTH:
        raise WireError("the message nests too deep")
    if node is None or isinstance(node, (bool, str, int)):
        return node
    if isinstance(node, float):
        return node
    if isinstance(node, list):
        return [_decode(v, blobs, depth + 1) for v in node]
    if not isinstance(node, dict):
        raise WireError("unexpected JSON value")
    tag = node.get("$")
    if tag == "dict":
        out = {}
        for pair in node.get("items", []):
            if not isinstance(pair, list) or len(pair) != 2:
                raise WireError("a dict item is not a pair")
            key = _decode(pair[0], blobs, depth + 1)
            if isinstance(key, (list, dict, set, np.ndarray, bytes)):
                raise WireError("a dict key is not hashable")
            out[key] = _decode(pair[1], blobs, depth + 1)
        return out
    if tag in ("tuple", "set"):
        items = [_decode(v, blobs, depth + 1) for v in node.get("items", [])]
        if tag == "tuple":
            return tuple(items)
        try:
            return set(items)
        except TypeError:
            raise WireError("a set item is not hashable") from None
    if tag == "float":
        if node.get("v") not in ("nan", "inf", "-inf"):
            raise WireError("bad special float")
        return float(node["v"])
    if tag == "bytes":
        return _blob(node, blobs)
    if tag == "nd":
        dtype, shape = node.get("dtype"), node.get("shape")
        if dtype not in DTYPES or not isinstance(shape, list) or len(shape) > 8 \
                or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise WireError("bad array header")
        raw = _blob(node, blobs)
        if len(raw) != int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize:
            raise WireError("array size does not match its shape")
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    if tag == "withheld":
        return Withheld(_KIND.sub("", str(node.get("kind", "object")))[:40] or "object")
    raise WireError("unknown tag")


def _blob(node, blobs):
    index = node.get("blob")
    if not isinstance(index, int) or not 0 <= index < len(blobs):
        raise WireError("bad buffer reference")
    return blobs[index]


def loads(data: bytes):
    """Decode a message made by :func:`dumps`; raises :class:`WireError` on anything else."""
    try:
        if len(data) > MAX_MESSAGE:
            raise WireError("message too large")
        head_len, count = struct.unpack_from(">II", data, 0)
        pos = 8 + head_len
        head = json.loads(data[8:pos].decode())
        blobs = []
        for _ in range(count):
            (size,) = struct.unpack_from(">Q", data, pos)
            pos += 8
            if pos + size > len(data):
                raise WireError("a buffer runs past the end")
            blobs.append(data[pos:pos + size])
            pos += size
        if pos != len(data):
            raise WireError("trailing bytes")
        return _decode(head, blobs, 0)
    except WireError:
        raise
    except (struct.error, UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError, TypeError):
        raise WireError("the message is not in the wire format") from None


def send(sock, data: bytes) -> None:
    sock.sendall(struct.pack(">Q", len(data)) + data)


def recv(sock, limit: int = MAX_MESSAGE) -> bytes | None:
    """One framed message, or None when the peer closed the connection."""
    head = _read(sock, 8)
    if head is None:
        return None
    (size,) = struct.unpack(">Q", head)
    if size > limit:
        raise WireError(f"a {size}-byte message is over the {limit} limit")
    body = _read(sock, size)
    if body is None:
        raise WireError("the connection closed mid-message")
    return body


def _read(sock, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            if got == 0:
                return None
            raise WireError("the connection closed mid-message")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
