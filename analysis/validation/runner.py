"""``validate``: every registered signal (``analysis.signals.SIGNALS``) on every zoo member of a study and on the
study's unlearning methods (placed among the zoo as "unknown"), each signal's AUROC of knowledge-present (P)
against knowledge-absent (N) members with a bootstrap interval over members, and (``robustness``) how far each
signal's score moves on the quantised and the benignly fine-tuned variant of every zoo member.

Everything is in the study store: each (signal, model) reading as soon as it is read (kind ``READING_KIND``,
keyed by the fingerprints of the original, the model and the retrain control, so an interrupted run resumes
where it stopped), and the whole result (kind ``STORE_KIND``, keyed by every member's fingerprint and the
options), so a rerun is instant. Each signal's own analysis keeps its own results in the store as well.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from analysis.errors import AnalysisInputError, StudyError, WorkbenchError
from analysis.signals import SIGNALS, SignalReading
from analysis.store import ProgressFn
from analysis.validation.auroc import auroc_ci
from analysis.validation.options import (
    READING_KIND,
    READING_VERSION,
    SIGNAL_MODULES,
    SIGNAL_VERSIONS,
    STORE_KIND,
    ValidationOptions,
)
from analysis.validation.result import MemberRecord, SignalRecord, Status, ValidationResult
from analysis.validation.robustness import ensure_variants, recorded_variants, robustness

if TYPE_CHECKING:
    from analysis.study import Study

VARIANT_SHARE = 0.2  # share of the progress bar for building the variants (when any are missing)


# ---- signals -----------------------------------------------------------------------------------------------
def load_signals() -> list[str]:
    """Import every module of ``SIGNAL_MODULES`` (each registers its signals in ``SIGNALS``); a module that is
    not there is left out, with a note naming it (returned)."""
    notes = []
    for module in SIGNAL_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
                raise
            notes.append(f"{module} is not available: its signals are left out")
    return notes


def canonical_order(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` sorted by name: a fixed order whatever the order the signal modules were imported in (which
    decides the registry's order), so that the results, and their store key, do not depend on it."""
    return tuple(sorted(dict.fromkeys(names)))


def resolve_signals(options: ValidationOptions) -> tuple[str, ...]:
    """The signals a run scores, in :func:`canonical_order`: ``options.signals`` (each checked against the
    registry), else every registered one."""
    names = options.signals if options.signals is not None else SIGNALS.names()
    for n in names:
        SIGNALS.check(n)
    if not names:
        raise AnalysisInputError("no signal is registered")
    return canonical_order(names)


# ---- members ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    name: str
    status: Status
    recipe: dict[str, Any] = field(default_factory=dict)


def zoo_of(study: Study) -> list[Member]:
    """The zoo members of the study (``analysis.zoo.zoo_members``), P first, then N."""
    try:
        from analysis.zoo import zoo_members
    except ModuleNotFoundError as e:
        if e.name not in ("analysis.zoo", "analysis"):
            raise
        raise AnalysisInputError("the zoo (analysis.zoo) is not available in this installation") from None
    zoo = [Member(m.name, m.status, dict(getattr(m, "recipe", {}) or {})) for m in zoo_members(study).values()]
    for m in zoo:
        if m.status not in ("present", "absent"):
            raise StudyError(f"zoo member {m.name!r} has status {m.status!r} (expected present or absent)")
    return [m for m in zoo if m.status == "present"] + [m for m in zoo if m.status == "absent"]


def validation_members(study: Study) -> list[Member]:
    """The zoo members (P, then N) and the study's unlearning methods (role "unlearned", status "unknown"); the
    robustness variants and the controls outside the zoo (the reference retrain control) are not members."""
    zoo = zoo_of(study)
    skip = {m.name for m in zoo} | set(recorded_variants(study))
    unknown = [Member(n, "unknown", {"method": e.method}) for n, e in study.manifest.models.items()
               if e.role == "unlearned" and n not in skip]
    return zoo + unknown


def check_members(members: Sequence[Member]) -> None:
    n_p = sum(m.status == "present" for m in members)
    n_n = sum(m.status == "absent" for m in members)
    if not n_p or not n_n:
        raise AnalysisInputError(f"the zoo has {n_p} knowledge-present and {n_n} knowledge-absent members: an AUROC "
                                 "needs at least one of each (build the zoo with `erasure zoo STUDY`)")


# ---- one reading -----------------------------------------------------------------------------------------
def reading_key(study: Study, signal: str, model: str) -> tuple[list[str], dict[str, Any]]:
    """Where the reading of ``signal`` on ``model`` is stored: the fingerprints of the original, the model and the
    retrain control (every signal reads the model against those), and the signal's name and version."""
    ref = study.manifest.retrain
    fps = [study.fingerprint("original"), study.fingerprint(model), study.fingerprint(ref) if ref else ""]
    key: dict[str, Any] = {"signal": signal, "version": READING_VERSION}
    if signal in SIGNAL_VERSIONS:  # (absent for a signal never revised, so its stored readings stay valid)
        key["signal_version"] = SIGNAL_VERSIONS[signal]
    return fps, key


def stored_reading(study: Study, signal: str, model: str) -> SignalReading | None:
    fps, key = reading_key(study, signal, model)
    hit = study.store.get(READING_KIND, fps, key)
    return None if hit is None else SignalReading.from_dict(hit)


def signal_reading(study: Study, signal: str, model: str, use_store: bool = True) -> SignalReading:
    """``SIGNALS[signal](study, model)``, read from / written to the store. A signal that cannot be read on this
    model (a WorkbenchError: no retrain control, nothing to compare...) gives an undefined reading saying why."""
    if use_store and (hit := stored_reading(study, signal, model)) is not None:
        return hit
    fn = SIGNALS.get(signal)
    try:
        got = fn(study, model)
    except WorkbenchError as e:
        got = SignalReading(signal, model, None, note=str(e))
    if use_store:
        fps, key = reading_key(study, signal, model)
        study.store.put(READING_KIND, fps, key, got.to_dict())
    return got


# ---- the whole run ---------------------------------------------------------------------------------------
def members_digest(study: Study, members: Sequence[Member]) -> str:
    text = "|".join(f"{m.name}={m.status}={study.fingerprint(m.name)}" for m in members)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def result_key(study: Study, members: Sequence[Member], signals: tuple[str, ...],
               options: ValidationOptions) -> tuple[list[str], dict[str, Any]]:
    ref = study.manifest.retrain
    fps = [study.fingerprint("original"), study.fingerprint(ref) if ref else "", members_digest(study, members)]
    return fps, options.key(signals)


def _prepared(study: Study, options: ValidationOptions | None) -> tuple[ValidationOptions, tuple[str, ...],
                                                                        list[Member], list[str]]:
    opts = (options or ValidationOptions()).validated()
    if "original" not in study.manifest.models:
        raise StudyError("this study has no 'original' model: the signals compare with the model before unlearning")
    if not study.forget:
        raise AnalysisInputError("the study's forget set is empty: there is nothing to validate on")
    notes = load_signals()
    signals = resolve_signals(opts)
    members = validation_members(study)
    check_members(members)
    return opts, signals, members, notes


def stored_validation(study: Study, options: ValidationOptions | None = None) -> ValidationResult | None:
    """The stored result for these options and the study's current zoo, or None (no signal is computed)."""
    opts, signals, members, _ = _prepared(study, options)
    fps, key = result_key(study, members, signals, opts)
    hit = study.store.get(STORE_KIND, fps, key)
    return None if hit is None else ValidationResult.from_dict(hit)


class _Progress:
    def __init__(self, progress: ProgressFn | None, start: float, width: float, total: int) -> None:
        self.progress, self.start, self.width, self.total, self.done = progress, start, width, max(1, total), 0

    def say(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(min(1.0, self.start + self.width * self.done / self.total), msg)

    def step(self, msg: str) -> None:
        self.done += 1
        self.say(msg)


def validate(study: Study, options: ValidationOptions | None = None, progress: ProgressFn | None = None,
             use_store: bool = True) -> ValidationResult:
    """Score every signal on every member (and, with ``options.robustness``, on both variants of every zoo
    member), then the AUROC of P against N per signal with its bootstrap interval, the robustness per signal,
    and the placement of the unlearning methods. Resumable per (signal, model); a rerun is instant."""
    opts, signals, members, notes = _prepared(study, options)
    fps, key = result_key(study, members, signals, opts)
    if use_store and (hit := study.store.get(STORE_KIND, fps, key)) is not None:
        if progress is not None:
            progress(1.0, "loaded from the study store")
        return ValidationResult.from_dict(hit)
    zoo = [m.name for m in members if m.status != "unknown"]
    variants: dict[str, dict[str, str]] = {}
    start = 0.0
    if opts.robustness:
        sub = None if progress is None else (lambda f, m: progress(VARIANT_SHARE * f, m))
        try:
            variants = ensure_variants(study, zoo, opts, sub)  # type: ignore[assignment]
        except WorkbenchError as e:
            notes.append(f"robustness left out: {e}")
        start = VARIANT_SHARE
    models = [m.name for m in members] + [v for kinds in variants.values() for v in kinds.values()]
    bar = _Progress(progress, start, 1.0 - start, len(signals) * len(models))
    readings: dict[str, dict[str, SignalReading]] = {}
    for signal in signals:
        readings[signal] = {}
        fn = SIGNALS.get(signal)
        prepare: Callable[[Study, Sequence[str]], None] | None = getattr(fn, "prepare", None)
        todo = [m for m in models if not (use_store and stored_reading(study, signal, m) is not None)]
        if prepare is not None and todo:
            bar.say(f"{signal}: preparing {len(todo)} model(s)")
            try:
                prepare(study, todo)
            except WorkbenchError:
                pass  # each model's reading then says why
        for m in models:
            bar.say(f"{signal} on {m}")
            readings[signal][m] = signal_reading(study, signal, m, use_store)
            bar.step(f"{signal} on {m}: done")
    result = assemble(study, members, signals, readings, variants, opts, notes)
    if use_store:
        study.store.put(STORE_KIND, fps, key, result.to_dict())
    if progress is not None:
        progress(1.0, "validation done")
    return result


def assemble(study: Study, members: Sequence[Member], signals: Sequence[str],
             readings: dict[str, dict[str, SignalReading]], variants: dict[str, dict[str, str]],
             options: ValidationOptions, notes: list[str]) -> ValidationResult:
    """The result from the readings: AUROC and interval per signal, robustness, one record per member."""
    records = []
    for signal in signals:
        got = readings[signal]
        value = {m.name: got[m.name].value for m in members}
        present = [value[m.name] for m in members if m.status == "present"]
        absent = [value[m.name] for m in members if m.status == "absent"]
        a = auroc_ci(present, absent, n_resamples=options.n_resamples, seed=options.seed)
        rec = SignalRecord(signal=signal, label=SIGNALS.label(signal), auroc=a.auroc, ci_low=a.ci_low,
                           ci_high=a.ci_high, n_present=a.n_present, n_absent=a.n_absent)
        undefined = [m.name for m in members if m.status != "unknown" and value[m.name] is None]
        if undefined:
            rec.note = f"undefined on {len(undefined)} zoo member(s) ({', '.join(undefined[:4])}), left out"
        if variants:
            zoo_values = {m: value[m] for m in variants}
            rob = robustness(zoo_values, {m: got[v["finetuned"]].value for m, v in variants.items()},
                             {m: got[v["quantised"]].value for m, v in variants.items()})
            rec.robustness_r, rec.robustness_q, rec.robustness_h = rob.r, rob.q, rob.h
            rec.shift_ft, rec.shift_q = rob.shift_ft, rob.shift_q
        records.append(rec)
    member_records = []
    for m in members:
        r = {s: readings[s][m.name] for s in signals}
        member_records.append(MemberRecord(
            name=m.name, status=m.status, scores={s: x.value for s, x in r.items()},
            ci={s: (list(x.ci) if x.ci is not None else None) for s, x in r.items()},
            notes={s: x.note for s, x in r.items() if x.value is None and x.note}, recipe=dict(m.recipe),
            variants=dict(variants.get(m.name, {})),
            variant_scores={k: {s: readings[s][v].value for s in signals} for k, v in variants.get(m.name, {}).items()}))
    names = [m.name for m in members] + [v for kinds in variants.values() for v in kinds.values()]
    ref = study.manifest.retrain
    fingerprints = {n: study.fingerprint(n) for n in dict.fromkeys(["original", *([ref] if ref else []), *names])}
    return ValidationResult(study=study.manifest.name, signals=records, members=member_records,
                            options=options.to_dict(), fingerprints=fingerprints, notes=notes)
