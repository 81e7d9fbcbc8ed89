"""The folder of models (real files) and the load checks (pure)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from gateway.config import LocalSettings
from gateway.local.backend import LocalBackend
from gateway.local.gguf import GGUFInfo
from gateway.local.models import ModelFile, ModelFolder, available_memory, check, default_ctx, owns


@pytest.fixture
def folder(tmp_path, gguf_models) -> Path:
    root = tmp_path / "models"
    (root / "qwen").mkdir(parents=True)
    shutil.copy(gguf_models["a"], root / "a.gguf")
    shutil.copy(gguf_models["b"], root / "qwen" / "b.GGUF")
    (root / "notes.txt").write_text("not a model")
    (root / "broken.gguf").write_text("this is not gguf")
    shutil.copy(gguf_models["a"], root / "big-00001-of-00002.gguf")
    (root / "big-00002-of-00002.gguf").write_bytes(b"\0" * 1000)
    (root / ".hidden.gguf").write_text("x")
    deep = root / "1" / "2" / "3" / "4"
    deep.mkdir(parents=True)
    shutil.copy(gguf_models["a"], deep / "too-deep.gguf")
    return root


def test_scan_lists_models_with_what_they_are(folder, gguf_models):
    found = {m.name: m for m in ModelFolder(root=folder).scan()}
    assert sorted(found) == ["a.gguf", "big-00001-of-00002.gguf", "broken.gguf", "qwen/b.GGUF"]
    a = found["a.gguf"]
    assert a.size == gguf_models["a"].stat().st_size
    assert a.info is not None and a.info.context_length == 2048 and a.error is None
    assert found["qwen/b.GGUF"].info.quantization == "F16"  # type: ignore[union-attr]
    assert found["broken.gguf"].info is None and "not a GGUF" in (found["broken.gguf"].error or "")
    # a split model: its first part, with the size of every part
    assert found["big-00001-of-00002.gguf"].size == gguf_models["a"].stat().st_size + 1000
    row = a.as_dict()
    assert row["model"] == "a.gguf" and row["architecture"] == "llama" and row["chat_template"] is True


def test_headers_are_read_once_per_file_version(folder):
    models = ModelFolder(root=folder)
    models.scan()
    target = folder / "a.gguf"
    before = models._headers[target]
    models.scan()
    assert models._headers[target] is before  # unchanged file: not read again
    target.write_text("replaced by something else")
    (changed,) = [m for m in models.scan() if m.name == "a.gguf"]
    assert changed.info is None and changed.error


def test_resolve_only_finds_scanned_names(folder):
    models = ModelFolder(root=folder)
    models.scan()
    assert models.resolve("a.gguf").path == folder / "a.gguf"  # type: ignore[union-attr]
    assert models.resolve("a").name == "a.gguf"  # type: ignore[union-attr]
    for outside in ("../a.gguf", "/etc/passwd", str(folder / "a.gguf"), "qwen/../a.gguf", "notes.txt"):
        assert models.resolve(outside) is None


def test_a_single_file(gguf_models):
    models = ModelFolder(single=gguf_models["b"])
    (only,) = models.scan()
    assert only.name == "b.gguf" and only.info is not None


def test_multimodal_projectors_are_not_models(tmp_path, gguf_models):
    from tests.test_gguf import write

    write(tmp_path / "mmproj.gguf", {}, arch="clip")
    shutil.copy(gguf_models["a"], tmp_path / "a.gguf")
    assert [m.name for m in ModelFolder(root=tmp_path).scan()] == ["a.gguf"]


def test_an_unreadable_file_is_listed_with_the_reason(tmp_path, gguf_models):
    shutil.copy(gguf_models["a"], tmp_path / "a.gguf")
    os.symlink(tmp_path / "gone.gguf", tmp_path / "dangling.gguf")
    found = {m.name: m for m in ModelFolder(root=tmp_path).scan()}
    assert "cannot read" in (found["dangling.gguf"].error or "")


INFO = GGUFInfo(version=3, tensor_count=1, architecture="llama", name="m", quantization="Q4_K_M",
                context_length=8192, chat_template=True)
GB = 10**9


@pytest.mark.parametrize(
    "info, size, ctx, gpu, args, memory, problem",
    [
        (INFO, 4 * GB, 8192, 0, (), 16 * GB, None),
        (INFO, 4 * GB, 0, 0, (), 16 * GB, None),  # 0: the trained context
        (INFO, 4 * GB, 4096, 0, (), None, None),  # memory unknown: not refused
        (None, 10, 4096, 0, (), 16 * GB, "not a usable GGUF"),
        (INFO, 40 * GB, 4096, 0, (), 16 * GB, "40.0 GB but only 16.0 GB"),
        (INFO, 40 * GB, 4096, -1, (), 16 * GB, None),  # on the GPU: RAM is not the limit
        (INFO, 4 * GB, 16384, 0, (), 16 * GB, "LOCAL_CTX_SIZE 16384 is more than m.gguf's trained context of 8192"),
        (INFO, 4 * GB, 16384, 0, ("--rope-scaling", "yarn"), 16 * GB, None),  # meant: rope scaling set
        (INFO, 4 * GB, 16384, 0, ("--rope-scaling", "none"), 16 * GB, "trained context"),
        (GGUFInfo(3, 1, "llama", None, None, None, False), GB, 1 << 20, 0, (), 16 * GB, None),  # length unknown
    ],
)
def test_check(info, size, ctx, gpu, args, memory, problem):
    model = ModelFile("m.gguf", Path("/m/m.gguf"), size, info, None if info else "not a GGUF file")
    got = check(model, ctx, gpu, args, memory)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got


def test_check_names_the_field_it_was_given():
    model = ModelFile("m.gguf", Path("/m/m.gguf"), GB, INFO)
    assert (check(model, 9000, 0, (), None, ctx_var="ctx_size") or "").startswith("ctx_size 9000")


def test_available_memory(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\n")
    assert available_memory(meminfo) == 8_000_000 * 1024
    assert available_memory() is None or available_memory() > 0  # this machine's


@pytest.mark.parametrize("model, local", [("a.gguf", True), ("qwen/B.GGUF", True), ("glm-4.7", False),
                                          (None, False), (5, False), ("gguf", False)])
def test_owns(model, local):
    assert owns(model) is local


@pytest.mark.parametrize("trained, ctx", [(2048, 2048), (4096, 4096), (131072, 4096), (None, 4096)])
def test_default_ctx(trained, ctx):
    info = GGUFInfo(3, 1, "llama", None, None, trained, False)
    assert default_ctx(ModelFile("m.gguf", Path("/m"), 1, info)) == ctx


def test_with_no_context_size_set_a_short_model_loads_with_its_own(folder):
    """A 2048-token model with LOCAL_CTX_SIZE unset is not refused: it gets its trained context."""
    backend = LocalBackend(LocalSettings(default_model="a.gguf", models_dir=folder),
                           provider_for=lambda url, model: None)  # type: ignore[arg-type,return-value]
    backend.folder.scan()
    launch, reason = backend.launch("a.gguf", None)
    assert reason is None and launch is not None and launch.ctx_size == 2048
    launch, reason = backend.launch("qwen/b.GGUF", None)
    assert reason is None and launch is not None and launch.ctx_size == 4096
    launch, reason = backend.launch("a.gguf", 4096)  # asked for: checked
    assert reason is not None and "trained context of 2048" in reason
