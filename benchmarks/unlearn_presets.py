"""The pretrained preset of `erasure unlearn` (analysis.unlearning.base.PRETRAINED_PRESET) measured on what this
machine can run: a tiny Llama (tests/hf_fixtures.py, 2 layers, hidden 64) fine-tuned until it gives 12 facts
top-1 (tests/test_unlearn_cli.py: 4 forget, 8 retain), unlearned by every method with the preset (its steps:
10 epochs of the forget set) and with the preset's rate for 130 steps (TOFU forget10's step count: 10 epochs of
400 samples in batches of 32). It measures the direction only (the forget answers' log-prob falls, the retain
answers' holds): a 2-layer model says nothing of the rate a 1B model needs.

    python -m benchmarks.unlearn_presets            # prints a markdown table
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from analysis.data.schema import write_jsonl
from analysis.unlearn.options import METHODS, UnlearnRunOptions
from analysis.unlearn.runner import unlearn_checkpoint
from tests.test_unlearn_cli import FORGET_FACTS, RETAIN_FACTS, _samples, memorised_checkpoint

TOFU_FORGET10_STEPS = 130


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=TOFU_FORGET10_STEPS, help="the second run's steps")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = memorised_checkpoint(root / "tiny-llama")
        forget, retain = root / "forget.jsonl", root / "retain.jsonl"
        write_jsonl(_samples(FORGET_FACTS, "forget"), forget)
        write_jsonl(_samples(RETAIN_FACTS, "retain"), retain)
        print("| method | steps | lr | forget log-prob | forget acc | retain log-prob | retain acc | s |")
        print("|---|---:|---:|---|---|---|---|---:|")
        for method in METHODS:
            extra = {"base": "scratch"} if method == "retrain" else {}
            for steps in (None, args.steps):
                opts = UnlearnRunOptions(method=method, steps=steps, **extra)
                t0 = time.perf_counter()
                run = unlearn_checkpoint(model, forget, retain, root / f"{method}-{steps}", opts)
                b, a = run.before, run.after
                print(f"| {method} | {run.steps} | {run.config['lr']:g} | "
                      f"{b['forget']['logprob']:.4f} -> {a['forget']['logprob']:.4f} | "
                      f"{b['forget']['accuracy']:.2f} -> {a['forget']['accuracy']:.2f} | "
                      f"{b['retain']['logprob']:.4f} -> {a['retain']['logprob']:.4f} | "
                      f"{b['retain']['accuracy']:.2f} -> {a['retain']['accuracy']:.2f} | "
                      f"{time.perf_counter() - t0:.1f} |", flush=True)


if __name__ == "__main__":
    main()
