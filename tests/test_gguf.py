"""The hand-written GGUF header reader against the gguf package's own reader and writer, and
against hostile bytes."""
from __future__ import annotations

import struct
from pathlib import Path

import gguf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.local.gguf import FILE_TYPES, GGUFError, GGUFInfo, has_magic, read_header


def write(path: Path, kv: dict[str, object], arch: str = "llama", big_endian: bool = False) -> Path:
    """A GGUF file with these metadata values (and one tiny tensor), written by the gguf package."""
    import numpy as np

    endian = gguf.GGUFEndian.BIG if big_endian else gguf.GGUFEndian.LITTLE
    w = gguf.GGUFWriter(str(path), arch, endianess=endian)
    for key, value in kv.items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, list):
            w.add_array(key, value)
    w.add_tensor("t", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_a_generated_model_reads_as_llama_cpp_sees_it(gguf_models):
    a = read_header(gguf_models["a"])
    assert a == GGUFInfo(version=3, tensor_count=21, architecture="llama", name="tiny-random-llama",
                         quantization="F32", context_length=2048, chat_template=True)
    b = read_header(gguf_models["b"])
    assert (b.name, b.quantization, b.context_length) == ("tiny-b", "F16", 4096)


@pytest.mark.parametrize("name", ["a", "b"])
def test_agrees_with_the_gguf_package(gguf_models, name):
    ours = read_header(gguf_models[name])
    theirs = gguf.GGUFReader(str(gguf_models[name]))
    fields = theirs.fields

    def value(key):
        return fields[key].contents() if key in fields else None

    arch = value("general.architecture")
    assert ours.architecture == arch
    assert ours.name == value("general.name")
    assert ours.context_length == value(f"{arch}.context_length")
    assert ours.quantization == FILE_TYPES[value("general.file_type")]
    assert ours.chat_template == bool(value("tokenizer.chat_template"))
    assert ours.tensor_count == len(theirs.tensors)


def test_every_value_type_is_read_or_skipped(tmp_path):
    kv = {
        "general.name": "every type",
        "general.file_type": 15,
        "general.tags": ["a", "bb", "ccc"],
        "general.flag": True,
        "general.score": 0.5,
        "qwen2.context_length": 32768,
        "tokenizer.ggml.tokens": [f"tok{i}" for i in range(3000)],
        "tokenizer.ggml.scores": [0.25] * 1000,
        "tokenizer.ggml.token_type": [1, 2, 3],
        "tokenizer.chat_template": "{{ messages }}",
    }
    info = read_header(write(tmp_path / "m.gguf", kv, arch="qwen2"))
    assert info.architecture == "qwen2"
    assert info.name == "every type"
    assert info.quantization == "Q4_K_M"
    assert info.context_length == 32768
    assert info.chat_template is True


def test_big_endian_files_read_too(tmp_path):
    info = read_header(write(tmp_path / "be.gguf", {"llama.context_length": 512, "general.file_type": 1},
                             big_endian=True))
    assert (info.architecture, info.context_length, info.quantization) == ("llama", 512, "F16")


def test_missing_fields_are_none(tmp_path):
    info = read_header(write(tmp_path / "bare.gguf", {}))
    assert (info.quantization, info.context_length, info.chat_template, info.name) == (None, None, False, None)


def test_the_quantization_names_match_llama_cpps():
    for ftype in gguf.LlamaFileType:
        if ftype.name == "GUESSED":
            continue
        assert FILE_TYPES.get(ftype.value) == ftype.name.removeprefix("MOSTLY_").removeprefix("ALL_"), ftype


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not a GGUF"),
        (b"GGU", "not a GGUF"),
        (b"PK\x03\x04zipfile", "not a GGUF"),
        (b"GGUF" + struct.pack("<I", 1) + b"\0" * 16, "version 1"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1), "ends early"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 10**9), "metadata entries"),
        (b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 2**40), "string of"),
        (b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1) + b"k" + struct.pack("<I", 99), "unknown value type"),
        (b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1) + b"k" + struct.pack("<IIQ", 9, 4, 2**31), "ends early"),
        (b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1) + b"k" + struct.pack("<IIQ", 9, 9, 1), "array of value type"),
        (b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1) + b"\xff" + struct.pack("<I", 4) + b"\0" * 4, "not UTF-8"),
    ],
)
def test_damaged_headers_say_why(tmp_path, data, message):
    path = tmp_path / "x.gguf"
    path.write_bytes(data)
    with pytest.raises(GGUFError, match=message):
        read_header(path)


def test_magic(tmp_path, gguf_models):
    assert has_magic(gguf_models["a"])
    (tmp_path / "t.gguf").write_text("hello")
    assert not has_magic(tmp_path / "t.gguf")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400), st.integers(0, 60))
def test_hostile_bytes_give_an_answer_or_a_gguf_error(tmp_path, tail, kv_count):
    """Whatever follows a plausible start, the reader returns or raises GGUFError: no other
    exception, no hang, no huge allocation."""
    path = tmp_path / "h.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1, kv_count) + tail)
    try:
        info = read_header(path)
    except GGUFError:
        return
    assert isinstance(info, GGUFInfo)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_real_header_with_bytes_flipped(tmp_path, gguf_models, data):
    raw = bytearray(gguf_models["a"].read_bytes()[:20000])
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    path = tmp_path / "f.gguf"
    path.write_bytes(bytes(raw))
    try:
        read_header(path)
    except GGUFError:
        pass
