"""Every variable the gateway reads is documented in .env.example, docker-compose.yml and the README."""
import re
from pathlib import Path

from gateway.config import Settings

ROOT = Path(__file__).resolve().parent.parent


class Recording(dict):
    """An environment that remembers every variable asked for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)


def variables_read() -> set[str]:
    env = Recording(CEREBRAS_API_KEYS="csk-a", SYNTHETIC_API_KEY="s", ZAI_API_KEY="z",
                    LOCAL_BASE_URL="http://127.0.0.1:8080/v1")
    Settings.from_env(env)
    return env.asked


def test_variables_found():
    assert {"PORT", "CEREBRAS_API_KEYS", "MAX_KEY_WAIT", "ZAI_MODEL", "LOCAL_API_KEY"} <= variables_read()


def test_every_variable_is_documented():
    env_example = (ROOT / ".env.example").read_text()
    compose = (ROOT / "docker-compose.yml").read_text()
    readme = (ROOT / "README.md").read_text()
    for var in sorted(variables_read()):
        assert re.search(rf"^{var}=", env_example, re.M), f"{var} missing from .env.example"
        assert f"{var}:" in compose, f"{var} missing from docker-compose.yml"
        assert f"`{var}`" in readme, f"{var} missing from README.md"
