"""The labelled set: load bench/routing/labelled.jsonl with its system prompts and tools put back."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SET = HERE / "labelled.jsonl"
PROMPTS = HERE / "prompts.json"


@dataclass(frozen=True)
class Example:
    id: str
    client: str
    kind: str
    label: str
    rationale: str
    split: str
    tokens: int  # the whole prompt's tokens, counted with cl100k when the set was made
    payload: dict[str, Any]  # the chat request as the client sends it


def assemble(record: dict[str, Any], prompts: dict[str, Any]) -> dict[str, Any]:
    """The full request of a record: its system prompt first, its tool definitions attached."""
    payload = json.loads(json.dumps(record["request"]))  # a deep copy, so the record stays as it was
    if record.get("system"):
        payload["messages"].insert(0, {"role": "system", "content": prompts["systems"][record["system"]]})
    if record.get("tools"):
        payload["tools"] = prompts["tools"][record["tools"]]
    return payload


def example(record: dict[str, Any], prompts: dict[str, Any]) -> Example:
    r = record
    return Example(r["id"], r["client"], r["kind"], r["label"], r["rationale"], r["split"], r["tokens"],
                   assemble(r, prompts))


def load(path: Path = SET, prompts_path: Path = PROMPTS) -> list[Example]:
    prompts = json.loads(prompts_path.read_text())
    with open(path) as f:
        return [example(json.loads(line), prompts) for line in f]
