"""Options of a causal trace: the restoration targets (kinds) and their TransformerLens hook names, the
metrics, and the labels / help texts of every choice that both the CLI and the app read."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from analysis.checks import check_float, check_int, check_seed
from analysis.errors import AnalysisInputError

# What is restored, per kind. "resid" restores the hidden state *output* of block l (ROME's h_i^(l)),
# i.e. blocks.{l}.hook_resid_post (= blocks.{l+1}.hook_resid_pre); "mlp" / "attn" restore the MLP /
# attention outputs of a window of layers around l (ROME's default window is 10).
TraceKind = Literal["resid", "mlp", "attn"]
KINDS: tuple[TraceKind, ...] = get_args(TraceKind)
KIND_LABELS: dict[str, str] = {"resid": "residual stream", "mlp": "MLP", "attn": "attention"}
KIND_HELP = "restore the residual stream (resid), MLP outputs (mlp), attention outputs (attn)"
# HOOKS (kind -> "blocks.{layer}.hook_..."): built by analysis.hooks on first use (module __getattr__ below),
# since analysis.hooks imports TransformerLens and the CLI reads this module to build its parser.

# The corruptions (members: analysis.tracing.corruptions.CORRUPTIONS, which imports torch) as the CLI offers them;
# a test checks them against the registry.
CorruptionName = Literal["noise", "str"]
CORRUPTION_HELP: dict[str, str] = {
    "noise": "Gaussian noise on the subject embeddings (std: noise scale x the subject-embedding std; ROME)",
    "str": "symmetric token replacement: the subject replaced by another subject of the study with as many "
           "tokens and a different answer (Zhang & Nanda 2023)",
}

# The traced quantity (analysis.tracing.engine.Metric). "logit_diff_corrupted" is named for what it subtracts:
# the logit of the corrupted run's top token other than the answer (not the circuits' logit difference).
TraceMetric = Literal["prob", "logit_diff_corrupted"]
METRICS: tuple[TraceMetric, ...] = get_args(TraceMetric)
METRIC_LABELS: dict[str, str] = {
    "prob": "answer probability",
    "logit_diff_corrupted": "logit difference vs the corrupted run's top token",
}
METRIC_HELP = ("prob: the answer's probability (length-normalised); logit_diff_corrupted: the answer's logit minus "
               "the logit of the corrupted run's top other token, at the last prompt token")
STORE_KIND = "trace"  # per-sample TraceResult rows in the study store
OPTIONS_VERSION = 1
ROME_WINDOW = 10


def default_window(n_layers: int) -> int:
    """ROME's window of 10 layers, but at most half the model's depth (a 4-layer model gets 2), so that a
    window still localises something in small models."""
    return max(1, min(ROME_WINDOW, n_layers // 2))


def window_layers(layer: int, window: int, n_layers: int) -> range:
    """Layers restored together for an MLP / attention cell at ``layer`` (ROME's window: ``window // 2``
    layers below, the rest from ``layer`` up, clipped to the model)."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


@dataclass(frozen=True)
class TraceOptions:
    """Everything that changes the numbers of a trace (and so the key it is stored under), plus a memory
    budget that only changes how the work is chunked."""

    kinds: tuple[TraceKind, ...] = KINDS
    corruption: str = "noise"  # a name in analysis.tracing.corruptions.CORRUPTIONS
    metric: TraceMetric = "prob"
    window: int | None = None  # None: default_window(n_layers); 1 = no window
    n_samples: int = 10  # noise samples (ignored by deterministic corruptions such as STR)
    seed: int = 0
    noise_scale: float = 3.0  # noise std = noise_scale x std of the study's subject-token embeddings
    memory_budget_mb: int | None = field(default=None, compare=False)  # None: 1 GiB on CPU, half the free GPU

    def validated(self, n_layers: int | None = None) -> TraceOptions:
        """Checked (AnalysisInputError for a bad choice), kinds ordered and deduplicated, the window resolved
        for a model of ``n_layers``."""
        from analysis.tracing.corruptions import get_corruption

        kinds = tuple(dict.fromkeys(self.kinds))
        if not kinds:
            raise AnalysisInputError("choose at least one kind to trace (resid, mlp, attn)")
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise AnalysisInputError(f"unknown trace kind {bad[0]!r} (expected one of {', '.join(KINDS)})")
        check_metric(self.metric)
        corruption = get_corruption(self.corruption)
        window = self.window
        if window is None:
            if n_layers is None:
                raise ValueError("the default window depends on the model: pass n_layers")
            window = default_window(n_layers)
        window = check_int("window (layers restored together)", window, 1)
        if n_layers is not None and window > n_layers:
            raise AnalysisInputError(f"window of {window} layers is larger than the model's {n_layers} layers")
        n_samples = check_int("the number of noise samples (n_samples)", self.n_samples, 1)
        seed = check_seed("seed", self.seed)
        # the scale must be finite even where the corruption ignores it (it would be stored in nothing, but an
        # infinite or NaN value is always a mistake); positive where it is used
        noise_scale = check_float("noise scale", self.noise_scale, 0 if corruption.uses_noise_scale else None,
                                  min_open=True)
        if self.memory_budget_mb is not None:
            check_int("memory budget (MB)", self.memory_budget_mb, 1)
        ordered = tuple(k for k in KINDS if k in kinds)
        return replace(self, kinds=ordered, window=window, n_samples=n_samples, seed=seed, noise_scale=noise_scale)

    def key(self) -> dict[str, Any]:
        """The store key (of validated options): only what changes the numbers, normalised (STR has no noise samples or scale;
        a resid-only trace has no window)."""
        from analysis.tracing.corruptions import get_corruption

        corruption = get_corruption(self.corruption)
        return {
            "version": OPTIONS_VERSION,
            "kinds": list(self.kinds),
            "corruption": self.corruption,
            "metric": self.metric,
            "window": self.window if any(k != "resid" for k in self.kinds) else None,
            "n_samples": self.n_samples if corruption.stochastic else 1,
            "seed": self.seed,
            "noise_scale": float(self.noise_scale) if corruption.uses_noise_scale else None,
        }

    @property
    def budget_bytes(self) -> int | None:
        return None if self.memory_budget_mb is None else int(self.memory_budget_mb) << 20


def check_metric(metric: str) -> TraceMetric:
    """``metric`` if it is a trace metric, else AnalysisInputError naming the choices."""
    if metric not in METRICS:
        raise AnalysisInputError(f"unknown metric {metric!r} (expected one of {', '.join(METRICS)})")
    return metric  # type: ignore[return-value]


def parse_kinds(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """"all" or a comma-separated list ("resid,mlp") or a sequence of kinds."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    else:
        items = list(value)
    if items == ["all"]:
        return KINDS
    return tuple(items)


def corruption_choices_help() -> str:
    """``name: description`` of every corruption (what analysis.tracing.corruptions.corruption_help says, without
    importing torch), for the CLI's help."""
    return "; ".join(f"{name}: {CORRUPTION_HELP[name]}" for name in get_args(CorruptionName))


def __getattr__(name: str) -> Any:
    """``HOOKS``, built on first use (analysis.hooks imports TransformerLens; this module must not)."""
    if name == "HOOKS":
        from analysis.hooks import kind_hook_template

        hooks: dict[str, str] = {k: kind_hook_template(k) for k in KINDS}
        globals()["HOOKS"] = hooks
        return hooks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
