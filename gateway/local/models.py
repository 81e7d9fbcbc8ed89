"""The folder of GGUF models (or the one file), what each is, and whether it can be loaded.

``ModelFolder.scan()`` is blocking (it lists the folder and reads headers): call it in a worker
thread. Headers are read once per file version (path, size, mtime); later scans only stat.
A model's name is its path relative to the folder (``qwen/q4_k_m.gguf``), and a name is only
ever resolved by looking it up among the files found, never joined onto a path, so no name
reaches outside the folder. Split models (``x-00001-of-00003.gguf``) are listed once, as their
first part (which llama.cpp loads, finding the others), with the size of all parts.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import flags
from .gguf import GGUFError, GGUFInfo, read_header

SUFFIX = ".gguf"
_SPLIT = re.compile(r"^(?P<base>.+)-(?P<part>\d{5})-of-(?P<parts>\d{5})\.gguf$", re.IGNORECASE)
MAX_DEPTH = 3  # folders below LOCAL_MODELS_DIR that are searched
PROJECTORS = frozenset({"clip", "mmproj"})  # multimodal projectors are GGUF files too, not models


@dataclass(frozen=True)
class ModelFile:
    name: str
    path: Path
    size: int  # bytes, every part of a split model
    info: GGUFInfo | None
    error: str | None = None  # why it is not a loadable GGUF (the header's fault)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"model": self.name, "size_bytes": self.size}
        if self.info is not None:
            out.update(self.info.as_dict())
        if self.error is not None:
            out["error"] = self.error
        return out


class ModelFolder:
    """``root``: LOCAL_MODELS_DIR; or ``single``: LOCAL_MODEL_PATH (then it is the only model)."""

    def __init__(self, root: Path | None = None, single: Path | None = None) -> None:
        if (root is None) == (single is None):
            raise ValueError("give a folder or a file")
        self.root = root
        self.single = single
        self._headers: dict[Path, tuple[int, int, GGUFInfo | None, str | None]] = {}
        self.known: dict[str, ModelFile] = {}  # the last scan, by name (read on the request path)

    def scan(self) -> list[ModelFile]:
        """Every model found, by name. Blocking."""
        files = [(self.single.name, self.single, [self.single])] if self.single is not None else self.files()
        found = []
        for name, path, parts in files:
            try:
                size = sum(p.stat().st_size for p in parts)
                info, error = self._header(path)
            except OSError as e:
                found.append(ModelFile(name, path, 0, None, f"cannot read it: {e.strerror or e}"))
                continue
            if info is not None and info.architecture in PROJECTORS:
                continue
            found.append(ModelFile(name, path, size, info, error))
        self.known = {m.name: m for m in found}
        return found

    def files(self) -> list[tuple[str, Path, list[Path]]]:
        """(name, path, every part) of each .gguf in the folder, by name. Blocking."""
        assert self.root is not None
        out: dict[str, tuple[str, Path, list[Path]]] = {}
        splits: dict[tuple[Path, str], list[Path]] = {}
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            depth = len(Path(dirpath).relative_to(self.root).parts)
            if depth >= MAX_DEPTH:
                dirnames.clear()
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in filenames:
                if not fn.lower().endswith(SUFFIX) or fn.startswith("."):
                    continue
                path = Path(dirpath) / fn
                split = _SPLIT.match(fn)
                if split is not None:
                    splits.setdefault((Path(dirpath), split["base"]), []).append(path)
                    if int(split["part"]) != 1:
                        continue
                name = path.relative_to(self.root).as_posix()
                out[name] = (name, path, [path])
        for name, (_, path, _parts) in list(out.items()):
            split = _SPLIT.match(path.name)
            if split is not None:
                out[name] = (name, path, sorted(splits[(path.parent, split["base"])]))
        return [out[n] for n in sorted(out)]

    def _header(self, path: Path) -> tuple[GGUFInfo | None, str | None]:
        st = path.stat()
        cached = self._headers.get(path)
        if cached is not None and cached[:2] == (st.st_size, st.st_mtime_ns):
            return cached[2], cached[3]
        try:
            info, error = read_header(path), None
        except GGUFError as e:
            info, error = None, str(e)
        self._headers[path] = (st.st_size, st.st_mtime_ns, info, error)
        return info, error

    def resolve(self, name: str) -> ModelFile | None:
        """The model called ``name`` in the last scan (also without its ``.gguf``)."""
        found = self.known.get(name)
        if found is None and not name.lower().endswith(SUFFIX):
            found = self.known.get(name + SUFFIX)
        return found


DEFAULT_CTX = 4096


def default_ctx(model: ModelFile) -> int:
    """The context a model is loaded with when none is set: 4096, or its trained one if shorter."""
    trained = model.info.context_length if model.info is not None else None
    return min(DEFAULT_CTX, trained) if trained else DEFAULT_CTX


def owns(model: object) -> bool:
    """Whether a requested model name means a local GGUF file (cheap: on every request)."""
    return isinstance(model, str) and model[-5:].lower() == SUFFIX


def check(
    model: ModelFile,
    ctx_size: int,
    gpu_layers: int,
    server_args: tuple[str, ...],
    memory: int | None,
    ctx_var: str = "LOCAL_CTX_SIZE",
) -> str | None:
    """Why ``model`` cannot be loaded with these settings, or None (pure).

    - not a GGUF file, or a damaged header;
    - larger than the memory available now, when it runs on the CPU (``gpu_layers`` 0): the
      weights are memory-mapped, and a model that does not fit is read from disk again and again;
    - a context longer than the model was trained for: llama.cpp would take it, but without rope
      scaling the model's answers fall apart past its trained length, so it is refused unless
      ``server_args`` set rope scaling (``--rope-scaling``, ``--rope-freq-scale``,
      ``--yarn-orig-ctx``), which says the user means it.
    """
    if model.info is None:
        return f"{model.name} is not a usable GGUF file: {model.error}"
    if gpu_layers == 0 and memory is not None and model.size > memory:
        return (f"{model.name} is {_gb(model.size)} but only {_gb(memory)} of memory is available; "
                "use a smaller quantization, or offload layers to a GPU (LOCAL_GPU_LAYERS)")
    trained = model.info.context_length
    if trained and ctx_size > trained:
        try:
            scaled = flags.rope_scaled(flags.parse(server_args))
        except ValueError:
            scaled = False
        if not scaled:
            return (f"{ctx_var} {ctx_size} is more than {model.name}'s trained context of {trained} tokens; "
                    f"use at most {trained} (0 means {trained}), or set rope scaling in LOCAL_SERVER_ARGS "
                    "(e.g. --rope-scaling yarn --yarn-orig-ctx " + str(trained) + ")")
    return None


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Bytes of memory available to a new process now (Linux's MemAvailable); None if unknown."""
    try:
        text = meminfo.read_text()
    except OSError:
        return _sysconf_memory()
    match = re.search(r"^MemAvailable:\s+(\d+)\s*kB", text, re.M)
    return int(match.group(1)) * 1024 if match else _sysconf_memory()


def _sysconf_memory() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
