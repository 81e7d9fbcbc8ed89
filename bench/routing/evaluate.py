#!/usr/bin/env python3
"""Run the complexity classifier over the labelled set: precision, recall, confusion, the targets.

    python bench/routing/evaluate.py                  # dev and held-out splits, default settings
    python bench/routing/evaluate.py --sweep          # recall of each label by threshold, on dev
    python bench/routing/evaluate.py --errors         # every misrouted request with its reason
    python bench/routing/evaluate.py --threshold 0.4  # another SIMPLE_TASK_THRESHOLD
    python bench/routing/evaluate.py --seeds 5        # the targets on sets drawn with seeds 1..5

"simple" is the label that goes local, "complex" the one that goes to the cloud. The targets
(issue #13): at least 95% of complex requests go to the cloud while at least 50% of simple ones go
local. The weights and the default threshold were tuned on the dev split only; the held-out split
is reported to show they were not fitted to it.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))
from bench.routing.dataset import Example, example, load  # noqa: E402
from gateway.classify import COMPLEX, SIMPLE, Classification, ClassifierSettings, classify  # noqa: E402

COMPLEX_TO_CLOUD = 0.95
SIMPLE_TO_LOCAL = 0.50
MARGIN = 0.05  # --sweep suggests the highest threshold keeping every dev complex request in the cloud, less this


@dataclass(frozen=True)
class Report:
    name: str
    n: int
    confusion: dict[tuple[str, str], int]  # (true label, predicted label) -> count

    def _count(self, truth: str, predicted: str) -> int:
        return self.confusion.get((truth, predicted), 0)

    def recall(self, label: str) -> float:
        total = sum(self._count(label, p) for p in (SIMPLE, COMPLEX))
        return self._count(label, label) / total if total else 1.0

    def precision(self, label: str) -> float:
        total = sum(self._count(t, label) for t in (SIMPLE, COMPLEX))
        return self._count(label, label) / total if total else 1.0

    @property
    def meets_targets(self) -> bool:
        return self.recall(COMPLEX) >= COMPLEX_TO_CLOUD and self.recall(SIMPLE) >= SIMPLE_TO_LOCAL

    def table(self) -> str:
        c = self._count
        lines = [
            f"{self.name}: {self.n} requests ({c(SIMPLE, SIMPLE) + c(SIMPLE, COMPLEX)} simple, "
            f"{c(COMPLEX, COMPLEX) + c(COMPLEX, SIMPLE)} complex)",
            "  label              precision  recall",
            f"  simple (local)     {self.precision(SIMPLE):9.3f}  {self.recall(SIMPLE):6.3f}",
            f"  complex (cloud)    {self.precision(COMPLEX):9.3f}  {self.recall(COMPLEX):6.3f}",
            "  confusion          -> simple  -> complex",
            f"  true simple        {c(SIMPLE, SIMPLE):9d}  {c(SIMPLE, COMPLEX):10d}",
            f"  true complex       {c(COMPLEX, SIMPLE):9d}  {c(COMPLEX, COMPLEX):10d}",
            f"  targets: complex to cloud {self.recall(COMPLEX):.1%} (>= {COMPLEX_TO_CLOUD:.0%}), "
            f"simple local {self.recall(SIMPLE):.1%} (>= {SIMPLE_TO_LOCAL:.0%}): "
            + ("met" if self.meets_targets else "NOT MET"),
        ]
        return "\n".join(lines)


def run(examples: list[Example], settings: ClassifierSettings) -> list[tuple[Example, Classification]]:
    return [(e, classify(e.payload, settings)) for e in examples]


def report(name: str, results: list[tuple[Example, Classification]]) -> Report:
    confusion: dict[tuple[str, str], int] = {}
    for e, c in results:
        confusion[(e.label, c.label)] = confusion.get((e.label, c.label), 0) + 1
    return Report(name, len(results), confusion)


def evaluate(examples: list[Example], settings: ClassifierSettings) -> dict[str, Report]:
    """Reports for the dev split, the held-out split and the whole set."""
    results = run(examples, settings)
    return {split: report(split, [(e, c) for e, c in results if split == "all" or e.split == split])
            for split in ("dev", "holdout", "all")}


def sweep(examples: list[Example], settings: ClassifierSettings) -> str:
    dev = [e for e in examples if e.split == "dev"]
    scored = [(e.label, classify(e.payload, settings).score) for e in dev]
    lines = ["threshold  complex->cloud  simple->local   (dev)"]
    best = None
    for i in range(1, 20):
        t = i / 20
        complex_recall = _share([s >= t for label, s in scored if label == COMPLEX])
        simple_recall = _share([s < t for label, s in scored if label == SIMPLE])
        lines.append(f"  {t:6.2f}  {complex_recall:14.3f}  {simple_recall:13.3f}")
        if complex_recall == 1.0:
            best = t
    if best is not None:
        lines.append(f"highest threshold keeping every dev complex request in the cloud: {best:.2f}; "
                     f"suggested SIMPLE_TASK_THRESHOLD (less {MARGIN}): {best - MARGIN:.2f}")
    return "\n".join(lines)


def _share(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 1.0


def errors(examples: list[Example], settings: ClassifierSettings) -> str:
    lines = []
    for e, c in run(examples, settings):
        if e.label != c.label:
            lines.append(f"{e.split:7} {e.id:22} {e.client:8} true {e.label:7} score {c.score:.3f}  {c.reason}")
    return "\n".join(lines) or "no errors"


def timing(examples: list[Example], settings: ClassifierSettings) -> str:
    per = []
    for e in examples:
        n = 200
        start = time.perf_counter()
        for _ in range(n):
            classify(e.payload, settings)
        per.append((time.perf_counter() - start) / n * 1e6)
    per.sort()
    return (f"classify: p50 {per[len(per) // 2]:.1f} us, p99 {per[int(len(per) * 0.99)]:.1f} us, "
            f"max {per[-1]:.1f} us per request over the set")


def seeds(n: int, settings: ClassifierSettings) -> str:
    """The targets on sets drawn with other seeds: how much the figures owe to one draw."""
    from bench.routing import make_set
    from bench.routing.prompts import SYSTEMS, TOOLSETS

    prompts = {"systems": SYSTEMS, "tools": TOOLSETS}
    lines = ["seed  complex->cloud (dev, holdout)  simple->local (dev, holdout)"]
    for seed in range(1, n + 1):
        r = evaluate([example(rec, prompts) for rec in make_set.build(seed)], settings)
        lines.append(f"{seed:4d}  {r['dev'].recall(COMPLEX):7.3f} {r['holdout'].recall(COMPLEX):7.3f}"
                     f"            {r['dev'].recall(SIMPLE):7.3f} {r['holdout'].recall(SIMPLE):7.3f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threshold", type=float, help="SIMPLE_TASK_THRESHOLD (default: the classifier's)")
    ap.add_argument("--sweep", action="store_true", help="recall by threshold on the dev split")
    ap.add_argument("--errors", action="store_true", help="list every misrouted request")
    ap.add_argument("--timing", action="store_true", help="time classify on every request of the set")
    ap.add_argument("--seeds", type=int, metavar="N", help="the targets on N sets drawn with other seeds")
    args = ap.parse_args()
    settings = ClassifierSettings()
    if args.threshold is not None:
        settings = replace(settings, simple_threshold=args.threshold)
    if args.seeds:
        print(seeds(args.seeds, settings))
        return
    examples = load()
    if args.sweep:
        print(sweep(examples, settings))
        return
    for r in evaluate(examples, settings).values():
        print(r.table(), end="\n\n")
    if args.errors:
        print(errors(examples, settings))
    if args.timing:
        print(timing(examples, settings))


if __name__ == "__main__":
    main()
