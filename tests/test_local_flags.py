"""LOCAL_SERVER_ARGS: llama-server flags parsed (pure), then applied to xllamacpp's real params."""
from __future__ import annotations

import pytest
import xllamacpp
from hypothesis import given
from hypothesis import strategies as st

from gateway.local import flags
from gateway.local.child import apply
from gateway.local.flags import FLAGS, Setting, parse, rope_scaled


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], []),
        (["--batch-size", "512"], [Setting("--batch-size", "n_batch", 512)]),
        (["-b", "256"], [Setting("--batch-size", "n_batch", 256)]),
        (["--batch-size=128"], [Setting("--batch-size", "n_batch", 128)]),
        (["-fa", "on"], [Setting("--flash-attn", "flash_attn_type", ("llama_flash_attn_type",
                                                                   "LLAMA_FLASH_ATTN_TYPE_ENABLED"))]),
        (["--cache-type-k", "Q8_0"], [Setting("--cache-type-k", "cache_type_k", ("ggml_type", "GGML_TYPE_Q8_0"))]),
        (["--jinja", "--no-context-shift"], [Setting("--jinja", "use_jinja", True),
                                              Setting("--no-context-shift", "ctx_shift", False)]),
        (["-ts", "3,1"], [Setting("--tensor-split", "tensor_split", (3.0, 1.0))]),
        (["--rope-freq-scale", "0.5"], [Setting("--rope-freq-scale", "rope_freq_scale", 0.5)]),
        (["--chat-template", "chatml"], [Setting("--chat-template", "chat_template", "chatml")]),
        (["--mmproj", "/m/proj.gguf"], [Setting("--mmproj", "mmproj.path", "/m/proj.gguf")]),
    ],
)
def test_parse(args, expected):
    assert parse(args) == expected


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "9"], "--port is set by the gateway"),
        (["-c", "9"], "LOCAL_CTX_SIZE"),
        (["-m", "x.gguf"], "LOCAL_MODEL_PATH"),
        (["--api-key", "k"], "fresh key"),
        (["--bogus"], "not a supported llama-server flag"),
        (["--batch-size"], "needs a value"),
        (["--batch-size", "many"], "needs an integer"),
        (["--rope-freq-scale", "x"], "needs a number"),
        (["-fa", "sometimes"], "must be one of on, off, auto"),
        (["--jinja=yes"], "takes no value"),
    ],
)
def test_refusals_name_the_flag(args, message):
    with pytest.raises(ValueError, match=message):
        parse(args)


@given(st.lists(st.text(max_size=12), max_size=6))
def test_any_argument_list_parses_or_says_why(args):
    try:
        parse(args)
    except ValueError as e:
        assert str(e)


@pytest.mark.parametrize(
    "args, scaled",
    [([], False), (["--rope-scaling", "yarn"], True), (["--rope-scaling", "none"], False),
     (["--yarn-orig-ctx", "4096"], True), (["--rope-freq-scale", "0.25"], True), (["--batch-size", "8"], False)],
)
def test_rope_scaled(args, scaled):
    assert rope_scaled(parse(args)) is scaled


def test_every_flag_applies_to_the_real_params():
    """Each table entry names a real field of xllamacpp's CommonParams and a value it takes."""
    samples = {"int": "3", "float": "0.5", "str": "chatml", "floats": "3,1"}
    for name, flag in FLAGS.items():
        p = xllamacpp.CommonParams()
        if flag.kind in ("on", "off"):
            args = [name]
        elif flag.kind == "choice":
            args = [name, flag.choices[-1][0]]
        else:
            args = [name, samples[flag.kind]]
        settings = parse(args)
        apply(p, settings, xllamacpp)
        *path, last = flag.field.split(".")
        target = p
        for part in path:
            target = getattr(target, part)
        got = getattr(target, last)
        if flag.kind == "choice":
            assert got.name == flag.choices[-1][1], name
        elif flag.kind == "floats":
            assert list(got)[:3] == [3.0, 1.0, 0.0], name
        elif flag.kind in ("on", "off"):
            assert got is (flag.kind == "on"), name
        elif flag.kind == "float":
            assert got == pytest.approx(0.5), name
        else:
            assert str(got) == samples[flag.kind], name


def test_aliases_point_at_flags():
    assert set(flags.ALIASES.values()) <= set(FLAGS)
    assert not set(flags.ALIASES) & set(flags.MANAGED)
