"""plan() skips the providers whose monthly budget is reached (a table)."""
import pytest

from gateway.routing import Upstream, plan


def ups():
    return [Upstream("cerebras", None, None, max_prompt_tokens=100), Upstream("synthetic", None, None),
            Upstream("zai", None, None)]


@pytest.mark.parametrize(
    "prompt, capped, names, notes",
    [
        (None, {}, ["cerebras", "synthetic", "zai"], []),
        (500, {}, ["synthetic", "zai"], ["cerebras: skipped, prompt ~500 tokens > 100"]),
        (None, {"cerebras": "cerebras: capped"}, ["synthetic", "zai"], ["cerebras: capped"]),
        (50, {"synthetic": "synthetic: capped"}, ["cerebras", "zai"], ["synthetic: capped"]),
        (500, {"synthetic": "s: capped", "zai": "z: capped"}, ["cerebras"], ["s: capped", "z: capped"]),  # too big
        # for it, but nothing else may serve: the upstream decides
        (None, {"cerebras": "c", "synthetic": "s", "zai": "z"}, [], ["c", "s", "z"]),  # a cap is never overridden
    ],
)
def test_plan_skips_capped_providers(prompt, capped, names, notes):
    targets, got = plan(ups(), prompt, capped)
    assert [u.name for u in targets] == names and got == notes
