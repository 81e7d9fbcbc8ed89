"""Every variable the gateway reads is documented in .env.example, docker-compose.yml and the README."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def variables_read() -> set[str]:
    source = (ROOT / "gateway" / "config.py").read_text()
    return set(re.findall(r'r\.\w+\(\s*"([A-Z][A-Z0-9_]+)"', source))


def test_variables_found():
    assert {"PORT", "CEREBRAS_API_KEYS", "MAX_KEY_WAIT"} <= variables_read()


def test_every_variable_is_documented():
    env_example = (ROOT / ".env.example").read_text()
    compose = (ROOT / "docker-compose.yml").read_text()
    readme = (ROOT / "README.md").read_text()
    for var in sorted(variables_read()):
        assert re.search(rf"^{var}=", env_example, re.M), f"{var} missing from .env.example"
        assert f"{var}:" in compose, f"{var} missing from docker-compose.yml"
        assert f"`{var}`" in readme, f"{var} missing from README.md"
