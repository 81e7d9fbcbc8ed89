"""What a GGUF file is, read from its header without loading it: architecture, quantization,
trained context length, whether a chat template is embedded.

Written by hand rather than with the ``gguf`` package: ``gguf`` imports numpy and its reader
memory-maps the file and builds a numpy view of every metadata value, the tokenizer's arrays of
100,000+ strings included, which takes seconds on a real model. This reads the fixed header and
the key/value section only (format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md),
keeps the few scalar values it needs and seeks over the rest; the tests check it against the
``gguf`` package's reader on generated files and feed it hostile bytes.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = b"GGUF"
MAX_KV = 1_000_000  # a header claiming more entries than this is not a model file
MAX_STRING = 64 * 1024 * 1024  # the longest string value read or skipped (a chat template is ~10 KB)
MAX_ARRAY = 1 << 32  # the most items an array may claim

# value types: struct format of each fixed-size one
_FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9

# general.file_type -> the quantization's usual name (llama.cpp's LLAMA_FTYPE_MOSTLY_*; the
# tests check this table against gguf.LlamaFileType)
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M",
    30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4",
    40: "Q1_0",
}


class GGUFError(ValueError):
    """The file is not a GGUF model, or its header is damaged."""


@dataclass(frozen=True)
class GGUFInfo:
    version: int
    tensor_count: int
    architecture: str | None
    name: str | None  # general.name
    quantization: str | None  # "Q4_K_M", "F16", ...; None when the file does not say
    context_length: int | None  # the context the model was trained with
    chat_template: bool  # tokenizer.chat_template is embedded

    def as_dict(self) -> dict[str, object]:
        return {
            "architecture": self.architecture,
            "name": self.name,
            "quantization": self.quantization,
            "context_length": self.context_length,
            "chat_template": self.chat_template,
        }


def has_magic(path: Path) -> bool:
    """Whether the file starts like a GGUF file (a cheap check for configuration time)."""
    with open(path, "rb") as f:
        return f.read(4) == MAGIC


def read_header(path: Path) -> GGUFInfo:
    """The header of the GGUF file at ``path``; GGUFError if it is not one. Blocking (file I/O)."""
    try:
        size = path.stat().st_size
        with open(path, "rb", buffering=64 * 1024) as f:
            return _Reader(f, size).header()
    except struct.error:
        raise GGUFError("the GGUF header ends early (a truncated file?)") from None
    except UnicodeDecodeError:
        raise GGUFError("the GGUF header holds a key that is not UTF-8") from None


class _Reader:
    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f = f
        self.size = size
        self.order = "<"

    def _take(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise GGUFError("the GGUF header ends early (a truncated file?)")
        return data

    def _unpack(self, fmt: str) -> object:
        fmt = self.order + fmt
        return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]

    def _uint(self, fmt: str) -> int:
        value = self._unpack(fmt)
        assert isinstance(value, int)
        return value

    def _skip(self, n: int) -> None:
        if n < 0 or self.f.tell() + n > self.size:
            raise GGUFError("the GGUF header ends early (a truncated file?)")
        self.f.seek(n, 1)

    def _string_length(self) -> int:
        n = self._uint("Q")
        if n > MAX_STRING:
            raise GGUFError(f"the GGUF header holds a string of {n} bytes (damaged?)")
        return n

    def _string(self) -> str:
        return self._take(self._string_length()).decode("utf-8")

    def header(self) -> GGUFInfo:
        if self.f.read(4) != MAGIC:
            raise GGUFError("not a GGUF file (it does not start with 'GGUF')")
        raw = self._take(4)
        version = struct.unpack("<I", raw)[0]
        if version > 0xFFFF:  # written on a big-endian machine
            self.order, version = ">", struct.unpack(">I", raw)[0]
        if version not in (2, 3):
            raise GGUFError(f"GGUF version {version} is not supported (2 and 3 are)")
        tensors = self._uint("Q")
        count = self._uint("Q")
        if count > MAX_KV:
            raise GGUFError(f"the GGUF header claims {count} metadata entries (damaged?)")
        values: dict[str, object] = {}
        template = False
        for _ in range(count):
            key = self._string()
            kind = self._uint("I")
            if kind == _STRING and key == "tokenizer.chat_template":
                length = self._string_length()
                template = length > 0
                self._skip(length)
            elif kind == _STRING and _wanted(key):
                values[key] = self._take(self._string_length()).decode("utf-8", "replace")
            elif kind in _FIXED and _wanted(key):
                values[key] = self._unpack(_FIXED[kind])
            else:
                self._skip_value(kind)
        arch = values.get("general.architecture")
        arch = arch if isinstance(arch, str) else None
        ctx = values.get(f"{arch}.context_length") if arch else None
        ftype = values.get("general.file_type")
        name = values.get("general.name")
        return GGUFInfo(
            version=version,
            tensor_count=tensors,
            architecture=arch,
            name=name if isinstance(name, str) else None,
            quantization=FILE_TYPES.get(ftype, f"type {ftype}") if isinstance(ftype, int) else None,
            context_length=ctx if isinstance(ctx, int) and not isinstance(ctx, bool) else None,
            chat_template=template,
        )

    def _skip_value(self, kind: int) -> None:
        if kind in _FIXED:
            self._skip(struct.calcsize(_FIXED[kind]))
        elif kind == _STRING:
            self._skip(self._string_length())
        elif kind == _ARRAY:
            item = self._uint("I")
            n = self._uint("Q")
            if n > MAX_ARRAY:
                raise GGUFError(f"the GGUF header claims an array of {n} items (damaged?)")
            if item in _FIXED:
                self._skip(n * struct.calcsize(_FIXED[item]))
            elif item == _STRING:
                for _ in range(n):  # a vocabulary: one length read and one seek per token
                    self._skip(self._string_length())
            else:  # arrays of arrays are not written by llama.cpp's tools
                raise GGUFError(f"the GGUF header holds an array of value type {item}, which is not supported")
        else:
            raise GGUFError(f"the GGUF header holds an unknown value type {kind} (damaged?)")


def _wanted(key: str) -> bool:
    return key.startswith("general.") or key.endswith(".context_length")
