"""Prices per (provider, model) and the cost arithmetic. Pure: no I/O but ``load_prices``'s read.

Prices are USD per million tokens: ``input`` (uncached prompt), ``output`` (completion, reasoning
included) and ``cached_input`` (prompt tokens served from the provider's cache; the input price
when not given). A provider's ``"*"`` entry prices every model it has no entry for.

``PRICES_FILE`` (JSON or TOML, chosen by the ``.toml`` suffix) has the same shape as
``DEFAULT_PRICES``: provider -> model -> {input, output[, cached_input]}; each entry replaces the
default for its (provider, model) and the rest of the defaults stay::

    {"cerebras": {"zai-glm-4.7": {"input": 2.25, "output": 2.75}},
     "zai": {"glm-4.7": {"input": 0.6, "output": 2.2, "cached_input": 0.11}}}
"""
from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..context import Usage

ANY_MODEL = "*"
PER_TOKENS = 1_000_000
_FIELDS = ("input", "output", "cached_input")


class PriceFileError(ValueError):
    """A price file that cannot be used; the message names the file, the entry and the problem."""


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None  # None: cached prompt tokens cost the input price

    @property
    def cached(self) -> float:
        return self.input if self.cached_input is None else self.cached_input


DEFAULT_PRICES: Mapping[tuple[str, str], Price] = {
    ("cerebras", "zai-glm-4.7"): Price(2.25, 2.75),
    ("zai", "glm-4.7"): Price(0.60, 2.20, cached_input=0.11),
    ("synthetic", "hf:zai-org/GLM-4.7"): Price(0.55, 2.19),
    ("local", ANY_MODEL): Price(0.0, 0.0),  # your own hardware: free, whatever the model
}


class PriceTable:
    """Lookups by (provider, model), falling back to the provider's ``"*"`` entry."""

    __slots__ = ("_prices",)

    def __init__(self, prices: Mapping[tuple[str, str], Price]) -> None:
        self._prices = dict(prices)

    def lookup(self, provider: str | None, model: str | None) -> Price | None:
        if provider is None:
            return None
        prices = self._prices
        found = prices.get((provider, model or ""))
        return found if found is not None else prices.get((provider, ANY_MODEL))

    def items(self) -> list[tuple[tuple[str, str], Price]]:
        return sorted(self._prices.items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PriceTable) and self._prices == other._prices

    def __repr__(self) -> str:
        return f"PriceTable({len(self._prices)} prices)"


def default_prices() -> PriceTable:
    return PriceTable(DEFAULT_PRICES)


def cost(usage: Usage, price: Price) -> float:
    """USD for one request's tokens. Cached tokens are part of the prompt tokens (as OpenAI
    reports them) and billed at the cached price; completion tokens include reasoning."""
    prompt = max(usage.prompt_tokens, 0)
    cached = min(max(usage.cached_tokens, 0), prompt)
    output = max(usage.completion_tokens, 0)
    return ((prompt - cached) * price.input + cached * price.cached + output * price.output) / PER_TOKENS


def saved(cost_usd: float | None, primary_cost_usd: float | None) -> float | None:
    """What serving elsewhere saved against the primary provider; None unless both are priced.
    Negative when the request cost more than the primary would have."""
    if cost_usd is None or primary_cost_usd is None:
        return None
    return primary_cost_usd - cost_usd


# ---- the price file ------------------------------------------------------------------------------


def load_prices(path: Path, providers: Iterable[str], base: Mapping[tuple[str, str], Price] = DEFAULT_PRICES
                ) -> PriceTable:
    """The defaults with ``path``'s entries laid over them. ``providers``: the names an entry may
    use (a misspelt provider would otherwise be ignored without a word)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PriceFileError(f"{path}: cannot read it ({e})") from None
    return PriceTable({**base, **parse_prices(text, toml=path.suffix.lower() == ".toml", source=str(path),
                                             providers=frozenset(providers))})


def parse_prices(text: str, *, toml: bool, source: str, providers: frozenset[str]) -> dict[tuple[str, str], Price]:
    """The entries of a price file's text; ``PriceFileError`` naming ``source`` and the entry."""
    try:
        data: Any = tomllib.loads(text) if toml else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise PriceFileError(f"{source}: not valid {'TOML' if toml else 'JSON'} ({e})") from None
    if not isinstance(data, dict):
        raise PriceFileError(f"{source}: must hold an object of providers, e.g. "
                             '{"cerebras": {"zai-glm-4.7": {"input": 2.25, "output": 2.75}}}')
    prices: dict[tuple[str, str], Price] = {}
    for provider, models in data.items():
        if provider not in providers:
            raise PriceFileError(f"{source}: unknown provider {provider!r} (one of {', '.join(sorted(providers))})")
        if not isinstance(models, dict) or not models:
            raise PriceFileError(f"{source}: {provider} must map model names to prices")
        for model, entry in models.items():
            prices[(provider, str(model))] = _price(f"{source}: {provider}/{model}", entry)
    return prices


def _price(where: str, entry: object) -> Price:
    if not isinstance(entry, dict):
        raise PriceFileError(f"{where}: must be an object with input and output (USD per million tokens)")
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise PriceFileError(f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(_FIELDS)})")
    values: dict[str, float] = {}
    for name in _FIELDS:
        if name not in entry:
            if name == "cached_input":
                continue
            raise PriceFileError(f"{where}: {name} is missing (USD per million tokens)")
        value = entry[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise PriceFileError(f"{where}: {name} must be a number of USD per million tokens, 0 or more, "
                                 f"got {value!r}")
        values[name] = float(value)
    return Price(values["input"], values["output"], values.get("cached_input"))
