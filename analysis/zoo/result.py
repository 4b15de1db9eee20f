"""The zoo's results: one :class:`ZooMember` per member (its status, the recipe it was built from, the checks
that show its status by construction) and the :class:`Zoo` a build returns. Each member's record lives in the
study manifest (``study.manifest.extra["zoo"][name]``); :func:`zoo_members` reads it back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from analysis.errors import StudyError
from analysis.zoo.options import MANIFEST_KEY, STATUSES

if TYPE_CHECKING:
    from analysis.study import Study

COUNTED = ("present", "absent")  # the statuses that take part in the meta-evaluation


@dataclass
class ZooMember:
    """One member: ``status`` is ``present`` (knowledge present but hidden, P), ``absent`` (N) or ``excluded``
    (its status could not be shown by construction; ``reason`` says why; it has no model in the study unless
    ``recipe["model"]`` names an existing one). ``recipe`` is what it was built from (equal recipes = the same
    member); ``checks`` the construction checks and the member's output accuracies. ``fingerprint`` is the
    model's fingerprint when the checks were made ("" for a member without a model)."""

    name: str
    status: str
    recipe: dict[str, Any]
    checks: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    fingerprint: str = ""

    @property
    def kind(self) -> str:
        return str(self.recipe.get("kind", ""))

    @property
    def counted(self) -> bool:
        return self.status in COUNTED

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "kind": self.kind, "recipe": self.recipe,
                "checks": self.checks, "reason": self.reason, "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ZooMember:
        if not isinstance(d, dict):
            raise StudyError(f"a zoo member record must be an object, got {type(d).__name__}")
        status = d.get("status")
        if status not in STATUSES:
            raise StudyError(f"zoo member {d.get('name')!r}: status {status!r} is not one of {', '.join(STATUSES)}")
        recipe, checks = d.get("recipe") or {}, d.get("checks") or {}
        if not isinstance(recipe, dict) or not isinstance(checks, dict):
            raise StudyError(f"zoo member {d.get('name')!r}: recipe and checks must be objects")
        return cls(name=str(d.get("name", "")), status=str(status), recipe=dict(recipe), checks=dict(checks),
                   reason=str(d.get("reason") or ""), fingerprint=str(d.get("fingerprint") or ""))


@dataclass
class Zoo:
    """A build's result: every planned member in plan order, the names built by this call (empty when everything
    was already built and recorded), the original's probe accuracy per layer and the seconds it took."""

    members: dict[str, ZooMember]
    built: list[str] = field(default_factory=list)
    probe_acc_by_layer: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0

    def names(self, status: str) -> list[str]:
        return [n for n, m in self.members.items() if m.status == status]

    @property
    def present(self) -> list[str]:
        return self.names("present")

    @property
    def absent(self) -> list[str]:
        return self.names("absent")

    @property
    def excluded(self) -> list[str]:
        return self.names("excluded")

    def counts(self) -> dict[str, int]:
        return {s: len(self.names(s)) for s in STATUSES}

    def to_dict(self) -> dict[str, Any]:
        return {"members": [m.to_dict() for m in self.members.values()], "counts": self.counts(),
                "built": list(self.built), "probe_acc_by_layer": {str(k): v for k, v in self.probe_acc_by_layer.items()},
                "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Zoo:
        members = [ZooMember.from_dict(m) for m in d.get("members", [])]
        return cls(members={m.name: m for m in members}, built=list(d.get("built", [])),
                   probe_acc_by_layer={int(k): float(v) for k, v in (d.get("probe_acc_by_layer") or {}).items()},
                   seconds=float(d.get("seconds", 0.0)))


def recorded_members(study: Study) -> dict[str, ZooMember]:
    """Every member recorded in the study manifest, excluded ones included, in the recorded order."""
    raw = study.manifest.extra.get(MANIFEST_KEY) or {}
    if not isinstance(raw, dict):
        raise StudyError(f"{study.root}: manifest extra.{MANIFEST_KEY} must be an object of name -> member record")
    return {name: ZooMember.from_dict({**rec, "name": name}) for name, rec in raw.items()}


def zoo_members(study: Study, include_excluded: bool = False) -> dict[str, ZooMember]:
    """The study's zoo: name -> :class:`ZooMember` with status ``present`` or ``absent`` (every one an ordinary
    model of the study: ``study.load(name)``); ``include_excluded`` adds the members left out, which have no
    model of their own. Empty when the study has no zoo (``build_zoo`` / ``erasure zoo`` builds it)."""
    members = recorded_members(study)
    return {n: m for n, m in members.items() if include_excluded or m.counted}
