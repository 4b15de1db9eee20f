"""Typed, JSON-serialisable results of prompt-token attribution (unPact): one sample on one model
(``TokenAttribution``), before vs after unlearning (``AttributionComparison``), and keyword-emphasis
recovery (``RecoveryReport``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from analysis.attribution.options import is_function_word


def _f(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _mean(xs: Sequence[float]) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


@dataclass
class TokenAttribution:
    """Contribution of each prompt token to the answer on one model. ``contributions[i]`` is None for
    tokens that are never attributed (BOS); ``keywords`` are positions into ``tokens`` (the KeyTokens)."""

    tokens: list[str]  # prompt tokens, BOS included
    token_ids: list[int]
    contributions: list[float | None]
    keywords: list[int]
    method: str
    options: dict[str, Any]  # the store key
    model: str  # fingerprint of the model
    sample_id: str = ""
    prompt: str = ""
    answer: str = ""
    logprob: float = 0.0  # LP(x, y): mean log-prob of the answer tokens after the full prompt
    ablated_logprob: list[float | None] | None = None  # loo: LP(x without x_i, y)
    baseline_logprob: float | None = None  # ig: LP with the attributed embeddings at zero

    def array(self) -> np.ndarray:
        return np.array([np.nan if c is None else c for c in self.contributions], dtype=np.float64)

    @property
    def positions(self) -> list[int]:
        return [i for i, c in enumerate(self.contributions) if c is not None]

    @property
    def keyword_tokens(self) -> list[str]:
        return [self.tokens[i] for i in self.keywords]

    def function_positions(self) -> list[int]:
        return [i for i in self.positions if is_function_word(self.tokens[i])]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenAttribution:
        abl = d.get("ablated_logprob")
        return cls(tokens=[str(t) for t in d["tokens"]], token_ids=[int(t) for t in d["token_ids"]],
                   contributions=[_f(c) for c in d["contributions"]], keywords=[int(k) for k in d["keywords"]],
                   method=str(d["method"]), options=dict(d.get("options", {})), model=str(d.get("model", "")),
                   sample_id=str(d.get("sample_id", "")), prompt=str(d.get("prompt", "")),
                   answer=str(d.get("answer", "")), logprob=float(d.get("logprob", 0.0)),
                   ablated_logprob=None if abl is None else [_f(x) for x in abl],
                   baseline_logprob=_f(d.get("baseline_logprob")))


# ---- before vs after ----------------------------------------------------------------------------------------
GROUPS: tuple[str, ...] = ("keyword", "non_keyword", "function", "other", "all")
GROUP_LABELS: dict[str, str] = {
    "keyword": "keywords (the original model's KeyTokens)",
    "non_keyword": "all other tokens",
    "function": "function words (not keywords)",
    "other": "content words that are not keywords",
    "all": "every attributed token",
}


def token_groups(before: TokenAttribution) -> dict[str, list[int]]:
    """Positions of each group, from the model *before* unlearning: its keywords, the rest, and the rest split
    into function words and other (content) tokens."""
    kw = set(before.keywords)
    pos = before.positions
    func = set(before.function_positions())
    return {"keyword": [i for i in pos if i in kw], "non_keyword": [i for i in pos if i not in kw],
            "function": [i for i in pos if i not in kw and i in func],
            "other": [i for i in pos if i not in kw and i not in func], "all": list(pos)}


@dataclass
class SampleChange:
    """One sample: contributions before and after, and the mean change (after - before) per token group."""

    sample_id: str
    split: str
    tokens: list[str]
    before: list[float | None]
    after: list[float | None]
    keywords_before: list[int]
    keywords_after: list[int]
    change: dict[str, float | None]  # group -> mean (after - before) over the group's tokens; None if empty
    keyword_overlap: float | None  # Jaccard of the keyword sets (None when both are empty)
    logprob_before: float
    logprob_after: float

    @classmethod
    def of(cls, before: TokenAttribution, after: TokenAttribution, split: str) -> SampleChange:
        if before.token_ids != after.token_ids:
            raise ValueError(f"sample {before.sample_id!r}: attributions of different prompts cannot be compared")
        b, a = before.array(), after.array()
        change = {g: _mean([float(a[i] - b[i]) for i in idx]) for g, idx in token_groups(before).items()}
        kb, ka = set(before.keywords), set(after.keywords)
        overlap = len(kb & ka) / len(kb | ka) if kb | ka else None
        return cls(sample_id=before.sample_id, split=split, tokens=list(before.tokens),
                   before=list(before.contributions), after=list(after.contributions),
                   keywords_before=list(before.keywords), keywords_after=list(after.keywords), change=change,
                   keyword_overlap=overlap, logprob_before=before.logprob, logprob_after=after.logprob)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SampleChange:
        return cls(sample_id=str(d["sample_id"]), split=str(d["split"]), tokens=list(d["tokens"]),
                   before=[_f(x) for x in d["before"]], after=[_f(x) for x in d["after"]],
                   keywords_before=[int(k) for k in d["keywords_before"]],
                   keywords_after=[int(k) for k in d["keywords_after"]],
                   change={g: _f(v) for g, v in d["change"].items()}, keyword_overlap=_f(d.get("keyword_overlap")),
                   logprob_before=float(d["logprob_before"]), logprob_after=float(d["logprob_after"]))


@dataclass
class AttributionComparison:
    """Contributions before vs after unlearning over samples of several splits.

    ``summary[split][group]`` is the mean over samples of the mean contribution change (after - before) of
    the group's tokens. Two headline numbers (both positive when contributions drop):

    - ``disrupted_focus``: the drop of the keywords' contribution on the forget set, -summary[forget][keyword];
    - ``indiscriminate_penalisation``: the drop of every token's contribution on the retain set,
      -summary[retain][all] (unPact: unlearning also penalises tokens of prompts it should leave alone);
      ``retain_abs_change`` is the mean |after - before| over retain tokens (drops and rises alike).
    """

    before: str  # model names
    after: str
    models: list[str]  # fingerprints [before, after]
    options: dict[str, Any]
    samples: list[SampleChange]
    summary: dict[str, dict[str, float | None]]
    keyword_overlap: dict[str, float | None]  # split -> mean Jaccard of keyword sets
    logprob_change: dict[str, float | None]  # split -> mean LP(after) - LP(before)
    disrupted_focus: float | None
    indiscriminate_penalisation: float | None
    retain_abs_change: float | None
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttributionComparison:
        return cls(before=str(d["before"]), after=str(d["after"]), models=list(d["models"]),
                   options=dict(d.get("options", {})), samples=[SampleChange.from_dict(s) for s in d["samples"]],
                   summary={s: {g: _f(v) for g, v in gs.items()} for s, gs in d["summary"].items()},
                   keyword_overlap={s: _f(v) for s, v in d["keyword_overlap"].items()},
                   logprob_change={s: _f(v) for s, v in d["logprob_change"].items()},
                   disrupted_focus=_f(d.get("disrupted_focus")),
                   indiscriminate_penalisation=_f(d.get("indiscriminate_penalisation")),
                   retain_abs_change=_f(d.get("retain_abs_change")), skipped=dict(d.get("skipped", {})))


def compare_attributions(before: dict[str, TokenAttribution], after: dict[str, TokenAttribution],
                         splits: dict[str, str], before_name: str, after_name: str,
                         options: dict[str, Any] | None = None,
                         skipped: dict[str, str] | None = None) -> AttributionComparison:
    """Compare attributions of the same samples (``splits``: sample id -> split) on two models."""
    changes = [SampleChange.of(before[s], after[s], splits[s]) for s in splits if s in before and s in after]
    by_split: dict[str, list[SampleChange]] = {}
    for c in changes:
        by_split.setdefault(c.split, []).append(c)
    summary = {sp: {g: _mean([c.change[g] for c in cs if c.change[g] is not None]) for g in GROUPS}
               for sp, cs in by_split.items()}
    overlap = {sp: _mean([c.keyword_overlap for c in cs if c.keyword_overlap is not None])
               for sp, cs in by_split.items()}
    lp_change = {sp: _mean([c.logprob_after - c.logprob_before for c in cs]) for sp, cs in by_split.items()}
    kw = summary.get("forget", {}).get("keyword")
    allr = summary.get("retain", {}).get("all")
    retain_abs = [abs(float(a) - float(b)) for c in by_split.get("retain", [])
                  for a, b in zip(c.after, c.before, strict=True) if a is not None and b is not None]
    fps = [next(iter(before.values())).model if before else "", next(iter(after.values())).model if after else ""]
    return AttributionComparison(before=before_name, after=after_name, models=fps, options=dict(options or {}),
                                 samples=changes, summary=summary, keyword_overlap=overlap, logprob_change=lp_change,
                                 disrupted_focus=None if kw is None else -kw,
                                 indiscriminate_penalisation=None if allr is None else -allr,
                                 retain_abs_change=_mean(retain_abs), skipped=dict(skipped or {}))


# ---- recovery ----------------------------------------------------------------------------------------------
@dataclass
class StrategyRecovery:
    """Keyword-emphasis outcome of one strategy on one model over the forget set.

    Eligible samples: forget samples the *original* model answers top-1 (without emphasis) and that the
    strategy could be applied to. Denominator: the eligible samples this model does *not* answer top-1
    without emphasis. ``recovery_rate`` = recovered / denominator (None when the denominator is 0);
    ``prob_gain`` = mean over eligible samples of p(answer | emphasised) - p(answer | plain prompt), with p
    the joint probability of the answer tokens."""

    strategy: str
    recovery_rate: float | None
    prob_gain: float | None
    n_eligible: int
    n_denominator: int
    n_recovered: int
    prob_plain: float | None  # mean p(answer) without emphasis over eligible samples
    prob_emphasised: float | None
    top1_emphasised: float | None  # share of eligible samples answered top-1 with emphasis
    n_skipped: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StrategyRecovery:
        return cls(strategy=str(d["strategy"]), recovery_rate=_f(d.get("recovery_rate")), prob_gain=_f(d.get("prob_gain")),
                   n_eligible=int(d["n_eligible"]), n_denominator=int(d["n_denominator"]),
                   n_recovered=int(d["n_recovered"]), prob_plain=_f(d.get("prob_plain")),
                   prob_emphasised=_f(d.get("prob_emphasised")), top1_emphasised=_f(d.get("top1_emphasised")),
                   n_skipped=int(d.get("n_skipped", 0)))


Outcome = dict[str, Any]  # {"correct": bool, "prob": float, "logprob": float} or {"error": str}


def strategy_recovery(strategy: str, plain: dict[str, Outcome], emphasised: dict[str, Outcome],
                      eligible: Sequence[str]) -> StrategyRecovery:
    """Aggregate per-sample outcomes (see StrategyRecovery for the definitions)."""
    ok = [s for s in eligible if "error" not in plain.get(s, {"error": ""}) and "error" not in emphasised.get(s, {"error": ""})]
    denom = [s for s in ok if not plain[s]["correct"]]
    recovered = [s for s in denom if emphasised[s]["correct"]]
    gains = [float(emphasised[s]["prob"]) - float(plain[s]["prob"]) for s in ok]
    return StrategyRecovery(
        strategy=strategy, recovery_rate=len(recovered) / len(denom) if denom else None, prob_gain=_mean(gains),
        n_eligible=len(ok), n_denominator=len(denom), n_recovered=len(recovered),
        prob_plain=_mean([float(plain[s]["prob"]) for s in ok]),
        prob_emphasised=_mean([float(emphasised[s]["prob"]) for s in ok]),
        top1_emphasised=_mean([float(bool(emphasised[s]["correct"])) for s in ok]),
        n_skipped=len(eligible) - len(ok))


def net_recovery(results: dict[str, StrategyRecovery], reference: dict[str, StrategyRecovery] | None
                 ) -> tuple[dict[str, float | None], str | None, float | None]:
    """Each strategy's recovery rate net of the reference (retrain) control's rate for the same strategy
    (a missing or undefined reference rate counts as 0; an undefined rate stays None), and the strategy with
    the largest defined net rate with that rate (None, None when no net rate is defined)."""
    ref = reference or {}
    net: dict[str, float | None] = {}
    for s, r in results.items():
        base = ref[s].recovery_rate if s in ref else None
        net[s] = None if r.recovery_rate is None else r.recovery_rate - (base or 0.0)
    defined = {s: v for s, v in net.items() if v is not None}
    best = max(defined, key=lambda s: defined[s]) if defined else None
    return net, best, None if best is None else defined[best]


def _correct(outcomes: dict[str, Outcome], sid: str) -> bool:
    return bool(outcomes.get(sid, {}).get("correct", False))


def per_sample_recovery(ids: Sequence[str], strategies: Sequence[str], original_plain: dict[str, Outcome],
                        plain: dict[str, Outcome], emphasised: dict[str, dict[str, Outcome]],
                        reference_plain: dict[str, Outcome] | None = None,
                        reference_emphasised: dict[str, dict[str, Outcome]] | None = None
                        ) -> dict[str, dict[str, Any]]:
    """Per sample: which strategies bring the answer back on the model and not on the reference control.

    Recovery applies where the original answers top-1 without emphasis and the model does not (and its plain
    outcome is not an error); elsewhere ``recovered`` is None. A strategy counts when the model answers
    top-1 with emphasis and the reference control does not *gain* the answer from the same emphasis (it
    misses it without emphasis and answers it with: the emphasis inventing the answer). ``plain`` and
    ``emphasised[strategy]`` are the model's outcomes; ``reference_*`` the control's (None: no control)."""
    rows: dict[str, dict[str, Any]] = {}
    for sid in ids:
        if not _correct(original_plain, sid) or _correct(plain, sid) or "error" in plain.get(sid, {}):
            rows[sid] = {"recovered": None, "recovered_by": ""}
            continue
        by = [s for s in strategies if _correct(emphasised[s], sid) and not (
            reference_plain is not None and reference_emphasised is not None
            and not _correct(reference_plain, sid) and _correct(reference_emphasised[s], sid))]
        rows[sid] = {"recovered": bool(by), "recovered_by": ", ".join(by)}
    return rows


@dataclass
class RecoveryReport:
    """Keyword-emphasis recovery of one unlearned model, with the same numbers on the retrain control (a
    model that never learned the forget facts: what it "recovers" is the emphasis inventing answers, not
    knowledge coming back) and on the original model (how much the emphasis itself disturbs a model that
    knows the facts).

    Its readings: ``net_by_strategy`` (each strategy's recovery rate minus the retrain control's, see
    :func:`net_recovery`), the best of them (``best_strategy``, ``best_net``), and ``per_sample``: for every
    sample of the recovery split, ``{"recovered": bool | None, "recovered_by": "s1, s2"}`` (see
    :func:`per_sample_recovery`)."""

    model: str
    retrain: str | None
    strategies: list[str]
    options: dict[str, Any]
    fingerprints: dict[str, str]  # model name -> fingerprint
    results: dict[str, StrategyRecovery]
    retrain_results: dict[str, StrategyRecovery] | None
    original_results: dict[str, StrategyRecovery]
    n_forget: int
    n_eligible: int  # forget samples the original answers top-1
    net_by_strategy: dict[str, float | None] = field(default_factory=dict)
    best_strategy: str | None = None
    best_net: float | None = None
    per_sample: dict[str, dict[str, Any]] = field(default_factory=dict)  # sample id -> recovered, recovered_by

    @property
    def recovery_rate(self) -> dict[str, float | None]:
        return {s: r.recovery_rate for s, r in self.results.items()}

    @property
    def prob_gain(self) -> dict[str, float | None]:
        return {s: r.prob_gain for s, r in self.results.items()}

    @property
    def retrain_recovery_rate(self) -> dict[str, float | None] | None:
        return None if self.retrain_results is None else {s: r.recovery_rate for s, r in self.retrain_results.items()}

    @property
    def retrain_prob_gain(self) -> dict[str, float | None] | None:
        return None if self.retrain_results is None else {s: r.prob_gain for s, r in self.retrain_results.items()}

    def table(self) -> list[dict[str, Any]]:
        """One row per strategy: the model's numbers with the retrain baseline beside each."""
        rows = []
        for s in self.strategies:
            r, b, o = self.results[s], (self.retrain_results or {}).get(s), self.original_results.get(s)
            rows.append({"strategy": s, "recovery_rate": r.recovery_rate,
                         "retrain_recovery_rate": None if b is None else b.recovery_rate,
                         "net_recovery_rate": self.net_by_strategy.get(s),
                         "recovered": f"{r.n_recovered}/{r.n_denominator}",
                         "retrain_recovered": None if b is None else f"{b.n_recovered}/{b.n_denominator}",
                         "prob_gain": r.prob_gain, "retrain_prob_gain": None if b is None else b.prob_gain,
                         "original_top1": None if o is None else o.top1_emphasised})
        return rows

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["recovery_rate"] = self.recovery_rate
        d["prob_gain"] = self.prob_gain
        d["retrain_recovery_rate"] = self.retrain_recovery_rate
        d["retrain_prob_gain"] = self.retrain_prob_gain
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecoveryReport:
        def res(x: dict[str, Any] | None) -> dict[str, StrategyRecovery] | None:
            return None if x is None else {s: StrategyRecovery.from_dict(v) for s, v in x.items()}

        results, retrain_results = res(d["results"]) or {}, res(d.get("retrain_results"))
        if "net_by_strategy" in d:
            net = {s: _f(v) for s, v in d["net_by_strategy"].items()}
            best, best_net = d.get("best_strategy"), _f(d.get("best_net"))
        else:  # stored before the report carried its readings: derive them from the results
            net, best, best_net = net_recovery(results, retrain_results)
        per_sample = {str(i): {"recovered": None if v.get("recovered") is None else bool(v["recovered"]),
                               "recovered_by": str(v.get("recovered_by", ""))}
                      for i, v in (d.get("per_sample") or {}).items()}
        return cls(model=str(d["model"]), retrain=d.get("retrain"), strategies=list(d["strategies"]),
                   options=dict(d.get("options", {})), fingerprints=dict(d.get("fingerprints", {})),
                   results=results, retrain_results=retrain_results,
                   original_results=res(d.get("original_results")) or {}, n_forget=int(d["n_forget"]),
                   n_eligible=int(d["n_eligible"]), net_by_strategy=net, best_strategy=best, best_net=best_net,
                   per_sample=per_sample)
