"""Options of the SAE analyses, the verdict's thresholds, the store kind, and the choices (with their labels
and help texts) that both the CLI and the app read.

- ``SAEOptions``: how the TopK SAE is trained on the original (every field is part of its cache key).
- ``RestoreOptions``: what a restoration run computes (the SAE it loads, the steering strengths, the probe
  layers); ``RestoreOptions.key`` is its store key.
- The thresholds of the verdict rule (``analysis.sae.verdict``), and of the caveat on the SAE's fit to a
  judged model's activations (``MIN_SAE_FVE``, ``MAX_SAE_FVE_DROP``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from analysis.checks import check_float, check_int, check_seed
from analysis.errors import AnalysisInputError

if TYPE_CHECKING:
    from analysis.models.handle import ModelHandle

STORE_KIND = "sae_restoration"  # one RestorationReport per (original, model, retrain control) and options
# of the restoration store key: 2 added the SAE's fit to each model's own activations and its caveat (reports
# stored under 1 have neither, so they are recomputed, not served)
OPTIONS_VERSION = 2
TRAINER = "saelens-runner-1"  # part of the SAE cache key: bump when the training recipe changes

# ---- the verdict rule (analysis.sae.verdict) -------------------------------------------------------------
ALPHAS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)  # steering strengths (alpha 0, the model itself, is added)
PROBE_MARGIN = 0.25  # suppressed: probe accuracy this far over the retrain control's, at some layer
RESTORE_NET = 0.3  # suppressed: net restoration rate (max over alpha) at least this
ERASE_PROBE_GAP = 0.125  # erased: probe gap over the retrain control at most this
ERASE_RESTORE_NET = 0.1  # erased: net restoration rate at most this (or undefined)
ERASE_RETENTION_GAP = 0.25  # erased: expert-feature retention at most the retrain control's + this
MIN_FORGET_DROP = 0.05  # below this drop in forget accuracy a restoration rate is undefined

# ---- the SAE's fit to a judged model (analysis.sae.fit) ---------------------------------------------------
# The SAE is trained on the original only and then read on every other model. Its fraction of variance
# explained (FVE) on a model's own activations at the hook (forget + retain prompt tokens) says whether it
# still describes that model's residual stream. On the small demo study (tests' 300-step SAE) the original's
# own FVE is 0.90, the unlearned models' 0.84-0.88, the retrain control's 0.82, the zoo members derived from
# the original 0.90, and the models trained from other seeds (a residual stream in another basis:
# zoo_retrain_*, zoo_twin) 0.08-0.15. A report carries a caveat (in its reasons) when the FVE is below
# MIN_SAE_FVE, or more than MAX_SAE_FVE_DROP below the original's own (reconstructed much worse than the model
# the SAE was trained on, even above the floor): its retention and restoration then read features the model
# may not use. The caveat does not change the verdict.
MIN_SAE_FVE = 0.7  # caveat below this fraction of variance explained on the model's own activations
MAX_SAE_FVE_DROP = 0.2  # caveat when this far below the original's own fraction

# ---- choices ---------------------------------------------------------------------------------------------
Verdict = Literal["erased", "suppressed", "inconclusive"]
VERDICTS: tuple[Verdict, ...] = ("erased", "suppressed", "inconclusive")
VERDICT_RULES: dict[Verdict, str] = {
    "suppressed": f"probe beats the retrain control by ≥ {PROBE_MARGIN} or net restoration ≥ {RESTORE_NET}",
    "erased": f"probe within {ERASE_PROBE_GAP} of the retrain control, no net restoration, retention at the "
              "control's level",
    "inconclusive": "neither",
}

SteeringMode = Literal["replace", "add"]
STEERING_MODE_LABELS: dict[SteeringMode, str] = {
    "replace": "f_u + α(f_o − f_u) (published)",
    "add": "add expert decoder directions",
}

SAE_OPTION_HELP: dict[str, str] = {
    "layer": "layer of the SAE: the residual stream after block L, hook_resid_post (default n_layers // 2)",
    "k": "active features per token (TopK)",
    "expansion": "d_sae = expansion * d_model",
    "steps": "training steps of SAELens's runner",
}
RESTORE_OPTION_HELP: dict[str, str] = {
    "model": "unlearned model or control of the study (not the reference retrain control it is judged against)",
    "layer": "layer of the SAE (default n_layers // 2)",
    "k": "active features per token of the SAE (TopK)",
    "alphas": f"comma-separated steering strengths, each a finite number > 0 given once (alpha 0, the model "
              f"itself, is always included; default {','.join(f'{a:g}' for a in ALPHAS)})",
}


def check_layer(handle: ModelHandle, layer: int) -> int:
    if not 0 <= int(layer) < handle.n_layers:
        raise AnalysisInputError(f"layer {layer} is out of range: the model has layers 0..{handle.n_layers - 1}")
    return int(layer)


@dataclass(frozen=True)
class SAEOptions:
    """How the TopK SAE is trained on the original's residual stream (every field is in its cache key)."""

    layer: int | None = None  # default: n_layers // 2
    k: int = 16
    expansion: int = 4  # d_sae = expansion * d_model
    steps: int = 1500
    batch_tokens: int = 512
    lr: float = 2e-3
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validated(self) -> SAEOptions:
        """Checked without a model (the layer's range and k against the SAE's width need one: ``resolved``)."""
        if self.layer is not None:
            check_int("layer", self.layer, 0)
        return replace(self, k=check_int("k (active features per token)", self.k, 1),
                       expansion=check_int("expansion", self.expansion, 1),
                       steps=check_int("steps (SAE training steps)", self.steps, 1),
                       batch_tokens=check_int("batch_tokens", self.batch_tokens, 1),
                       lr=check_float("lr (learning rate)", self.lr, 0, min_open=True),
                       seed=check_seed("seed", self.seed))

    def resolved(self, handle: ModelHandle) -> SAEOptions:
        """These options with the default layer filled in and checked against ``handle``: the layer is one of
        the model's, and k is at most the SAE's width ``d_sae = expansion * d_model``."""
        opts = self.validated()
        layer = check_layer(handle, handle.n_layers // 2 if opts.layer is None else opts.layer)
        d_model = int(handle.model.cfg.d_model)
        d_sae = opts.expansion * d_model
        if opts.k > d_sae:
            raise AnalysisInputError(f"k (active features per token) must be at most the SAE's width d_sae = "
                                     f"{d_sae} (expansion {opts.expansion} x d_model {d_model}), got {opts.k}")
        return replace(opts, layer=layer)

    def key(self) -> str:
        """Hash of every option (and the trainer version): part of the cache directory's name."""
        blob = json.dumps({**self.to_dict(), "trainer": TRAINER}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class RestoreOptions:
    """What a restoration run computes. ``layer`` and ``k`` pick the SAE to load (``load_sae``) when no trained
    SAE is passed; the SAE actually used, its layer, the alphas and the probe layers form the store key."""

    layer: int | None = None  # SAE layer; None: n_layers // 2
    k: int = 16
    alphas: tuple[float, ...] = ALPHAS
    probe_layers: tuple[int, ...] | None = None  # None: every layer

    def validated(self, n_layers: int | None = None) -> RestoreOptions:
        """Checked and normalised (alphas and layers as tuples of floats / ints)."""
        if not len(self.alphas):
            raise AnalysisInputError("give at least one steering strength alpha")
        # alpha 0 (the model itself) is always added; each alpha is a distinct finite strength > 0
        alphas = tuple(check_float("each steering strength alpha", a, 0, min_open=True) for a in self.alphas)
        twice = [a for i, a in enumerate(alphas) if a in alphas[:i]]
        if twice:
            raise AnalysisInputError(f"each steering strength alpha must be given once, got {twice[0]:g} twice "
                                     f"in {[f'{a:g}' for a in alphas]}")
        check_int("k", self.k, 1)
        if self.layer is not None:
            check_int("layer", self.layer, 0)
        probe_layers = None if self.probe_layers is None else tuple(check_int("probe layer", x, 0)
                                                                     for x in self.probe_layers)
        if probe_layers is not None and not probe_layers:
            raise AnalysisInputError("give at least one probe layer (or None for every layer)")
        if n_layers is not None:
            for layer in ([] if self.layer is None else [self.layer]) + list(probe_layers or []):
                if not 0 <= layer < n_layers:
                    raise AnalysisInputError(f"layer {layer} is out of range: the model has layers 0..{n_layers - 1}")
        return replace(self, alphas=alphas, probe_layers=probe_layers)

    def key(self, sae_id: str, layer: int) -> dict[str, Any]:
        """The store key of a run with the SAE ``sae_id`` at ``layer`` (the probe layers only when chosen, so
        runs over every layer keep the key they always had)."""
        out: dict[str, Any] = {"sae": sae_id, "layer": layer, "alphas": [float(a) for a in self.alphas],
                               "version": OPTIONS_VERSION}
        if self.probe_layers is not None:
            out["probe_layers"] = [int(x) for x in self.probe_layers]
        return out
