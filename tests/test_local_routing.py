"""Which upstreams a request may use while a local model is loading, failed or named (tables)."""
from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import LocalSettings
from gateway.errors import GatewayError, ServiceUnavailable
from gateway.keypool import KeyPool
from gateway.local.backend import LocalBackend
from gateway.local.supervisor import Child, Launch, Phase
from gateway.routing import Upstream, admit


def up(name: str, unready=None, owns=None) -> Upstream:
    return Upstream(name=name, provider=None, pool=KeyPool(name, ()), unready=unready,  # type: ignore[arg-type]
                    owns=owns)


LOADING = ServiceUnavailable("loading", code="local_model_loading", retry_after=2)


@pytest.mark.parametrize(
    "ups, model, names, error",
    [
        ([up("cerebras"), up("local")], "glm", ["cerebras", "local"], None),
        ([up("cerebras"), up("local", unready=lambda m: LOADING)], "glm", ["cerebras"], None),  # skipped
        ([up("local", unready=lambda m: LOADING)], "glm", [], "local_model_loading"),  # only local: 503
        ([up("local", unready=lambda m: LOADING), up("cerebras")], "glm", ["cerebras"], None),  # local first
        # a local model's name goes to local only: the cloud never gets it
        ([up("cerebras"), up("local", owns=lambda m: m == "a.gguf")], "a.gguf", ["local"], None),
        ([up("cerebras"), up("local", unready=lambda m: LOADING, owns=lambda m: m == "a.gguf")], "a.gguf", [],
         "local_model_loading"),
        ([up("cerebras"), up("local", owns=lambda m: m == "a.gguf")], "glm", ["cerebras", "local"], None),
    ],
)
def test_admit(ups, model, names, error):
    if error is None:
        assert [u.name for u in admit(ups, model)] == names
    else:
        with pytest.raises(GatewayError) as e:
            admit(ups, model)
        assert e.value.code == error and e.value.status == 503 and e.value.retry_after == 2


class Found:
    def __init__(self, name: str) -> None:
        self.name = name


def backend_in(phase: Phase | None, loaded: str = "a.gguf", auto: bool = False, reason: str = "why") -> LocalBackend:
    """A backend whose active server is in ``phase`` (no process: only the states are read)."""
    b = LocalBackend(LocalSettings(default_model="a.gguf", models_dir=Path("/m"), auto_switch=auto),
                     provider_for=lambda url, model: None)  # type: ignore[arg-type,return-value]
    b.folder.known = {n: Found(n) for n in ("a.gguf", "b.gguf")}  # type: ignore[misc]
    if phase is not None:
        child = Child(Launch(loaded, Path("/m") / loaded, 4096), 1, lambda url, model: None)  # type: ignore[arg-type]
        child.phase, child.reason = phase, reason
        b.supervisor.active = child
    return b


@pytest.mark.parametrize(
    "phase, model, status, code",
    [
        (Phase.READY, None, None, None),
        (Phase.READY, "glm-4.7", None, None),
        (Phase.READY, "a.gguf", None, None),
        (Phase.LOADING, None, 503, "local_model_loading"),
        (Phase.RESTARTING, "glm-4.7", 503, "local_model_restarting"),
        (Phase.FAILED, None, 503, "local_model_failed"),
        (None, None, 503, "local_model_unavailable"),
        (Phase.READY, "b.gguf", 400, "model_not_loaded"),  # LOCAL_AUTO_SWITCH off
        (Phase.READY, "zzz.gguf", 404, "model_not_found"),
    ],
)
def test_unready(phase, model, status, code):
    b = backend_in(phase)
    error = b.unready(model)
    if status is None:
        assert error is None
    else:
        assert error is not None and (error.status, error.code) == (status, code), error
        if status == 503:
            assert error.retry_after and error.retry_after > 0
        if phase is Phase.FAILED:
            assert "why" in error.message and "POST /admin/local/model" in error.message


def test_the_model_sent_is_the_loaded_one():
    assert backend_in(Phase.READY, loaded="b.gguf").model_for("glm-4.7") == "b.gguf"
    assert backend_in(None).model_for("glm-4.7") == "a.gguf"  # before anything runs: the default
