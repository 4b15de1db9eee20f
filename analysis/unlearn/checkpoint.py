"""Resumable unlearning: the state of the shared loop (``analysis.unlearning.base.GradientMethod``) saved every N
steps under ``OUT/.partial/``, and loaded back by a rerun with the same arguments, which then ends with the same
weights as an uninterrupted run (the loop is deterministic by seed; everything it draws from is restored).

A saved state is one folder ``step-NNNNNNNN/``:

- ``params.safetensors``: the trained parameters by name (the others are the source model's, unchanged);
- ``optimizer.pt``: the Adam state (``torch.save`` of tensors, numbers and lists only; read back with
  ``torch.load(weights_only=True)``);
- ``state.safetensors``: the trajectory rows and top-1 rows so far, the losses, each batch sampler's permutation,
  the batch generator's state and torch's global CPU (and CUDA) RNG states;
- ``state.json``: the steps done, each sampler's cursor and the shapes.

``latest.json`` names the newest complete folder; it is replaced (atomically) only after the folder is written, so
an interruption while saving leaves the previous state in force.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.errors import AnalysisInputError
from analysis.unlearning.base import LoopState

LATEST = "latest.json"
PARAMS = "params.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "state.safetensors"
STATE_JSON = "state.json"


def write_json_atomic(path: Path, obj: Any) -> None:
    """``obj`` as JSON at ``path`` (temp file + rename: a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=1)
    os.replace(tmp, path)


def read_json_dict(path: Path) -> dict[str, Any] | None:
    """The JSON object at ``path``; None when the file is missing, unreadable or not a JSON object."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    out = {"rng_cpu": torch.get_rng_state()}
    if device.type == "cuda" and torch.cuda.is_available():
        out["rng_cuda"] = torch.cuda.get_rng_state(device)
    return out


class Checkpointer:
    """A :class:`analysis.unlearning.base.LoopCheckpoint` saving into ``root`` every ``every`` steps and after the
    last of ``steps``. ``resumed_from`` is the steps a restored state had done (0 = started afresh)."""

    def __init__(self, root: Path, every: int, steps: int) -> None:
        self.root = Path(root)
        self.every = max(1, int(every))
        self.steps = int(steps)
        self.resumed_from = 0

    # ---- saving ----------------------------------------------------------------------------------------------
    def after_step(self, state: LoopState) -> None:
        if state.step % self.every == 0 or state.step >= self.steps:
            self.save(state)

    def save(self, state: LoopState) -> Path:
        from safetensors.torch import save_file

        ctx = state.ctx
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step-{state.step:08d}"
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{final.name}."))
        save_file({n: p.detach().to("cpu").contiguous() for n, p in state.params.items()}, str(tmp / PARAMS))
        torch.save(state.optimizer.state_dict(), tmp / OPTIMIZER)
        tensors: dict[str, torch.Tensor] = {
            "trajectory": torch.from_numpy(np.stack(ctx.trajectory).astype(np.float64)),
            "correct": torch.from_numpy(np.stack(ctx.correct).astype(np.uint8)),
            "losses": torch.tensor(ctx.losses, dtype=torch.float64),
            "generator": ctx.generator.get_state(),
            **_rng_states(ctx.device),
            **{f"order_{k}": s.order.to(torch.int64) for k, s in state.samplers.items()},
        }
        save_file(tensors, str(tmp / STATE))
        meta = {"step": state.step, "cursors": {k: s.cursor for k, s in state.samplers.items()},
                "params": {n: list(p.shape) for n, p in state.params.items()},
                "n_forget": len(ctx.forget), "rows": len(ctx.trajectory)}
        (tmp / STATE_JSON).write_text(json.dumps(meta))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_json_atomic(self.root / LATEST, {"step": state.step, "dir": final.name})
        for old in self.root.glob("step-*"):  # the older states: the newest one is enough to resume
            if old.name != final.name:
                shutil.rmtree(old, ignore_errors=True)
        return final

    # ---- restoring -------------------------------------------------------------------------------------------
    def latest(self) -> Path | None:
        """The newest complete saved state, or None."""
        try:
            rec = json.loads((self.root / LATEST).read_text())
        except (OSError, ValueError):
            return None
        name = rec.get("dir") if isinstance(rec, dict) else None
        if not isinstance(name, str) or not name.startswith("step-") or "/" in name:
            return None
        folder = self.root / name
        return folder if (folder / STATE_JSON).is_file() else None

    def restore(self, state: LoopState) -> int:
        from safetensors.torch import load_file

        folder = self.latest()
        if folder is None:
            return 0
        ctx = state.ctx
        meta = json.loads((folder / STATE_JSON).read_text())
        step = int(meta["step"])
        shapes = {n: list(p.shape) for n, p in state.params.items()}
        if (meta.get("params") != shapes or step > self.steps or meta.get("n_forget") != len(ctx.forget)
                or set(meta.get("cursors", {})) != set(state.samplers)):
            raise AnalysisInputError(f"the saved training state in {folder} does not fit this run (other "
                                     "parameters, steps or samples): rerun with --restart to start afresh")
        params = load_file(str(folder / PARAMS), device=str(ctx.device))
        with torch.no_grad():
            for n, p in state.params.items():
                p.copy_(params[n])
        opt_state = torch.load(folder / OPTIMIZER, map_location="cpu", weights_only=True)
        state.optimizer.load_state_dict(opt_state)
        t = load_file(str(folder / STATE))
        ctx.trajectory = list(t["trajectory"].numpy())
        ctx.correct = list(t["correct"].numpy().astype(bool))
        ctx.losses = [float(x) for x in t["losses"].tolist()]
        for k, sampler in state.samplers.items():
            sampler.order = t[f"order_{k}"].clone()
            sampler.cursor = int(meta["cursors"][k])
        ctx.generator.set_state(t["generator"])
        torch.set_rng_state(t["rng_cpu"])
        if "rng_cuda" in t and ctx.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.set_rng_state(t["rng_cuda"], ctx.device)
        if len(ctx.trajectory) != step + 1 or len(ctx.losses) != step:
            raise AnalysisInputError(f"the saved training state in {folder} is inconsistent (step {step}, "
                                     f"{len(ctx.trajectory)} trajectory rows): rerun with --restart")
        state.step = step
        self.resumed_from = step
        return step
