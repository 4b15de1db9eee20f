"""Study-level entry point of the zoo: ``build_zoo(study, options, progress) -> Zoo``.

Cached and resumable: a member whose recipe is recorded in the manifest (``study.manifest.extra["zoo"][name]``)
unchanged, and whose model directory is complete and still has the recorded fingerprint, is skipped; every member
is recorded (atomic manifest save) as soon as it is built, so an interrupted build resumes with the next one. A
second build of a built zoo loads no model and trains nothing. One ``progress(fraction, message)`` callback covers
the whole build.
"""

from __future__ import annotations

import time

from analysis.store import ProgressFn
from analysis.study import Study
from analysis.zoo.members import MEMBER_KINDS, MemberSpec, ZooContext, member_complete, plan_members
from analysis.zoo.options import MANIFEST_KEY, PREFIX, ZooOptions
from analysis.zoo.result import Zoo, ZooMember, recorded_members


def is_built(ctx: ZooContext, spec: MemberSpec, record: ZooMember | None) -> bool:
    """Whether ``spec`` is already built: recorded with the same recipe and, unless excluded (no model of its
    own), its model in the study with a complete directory and the recorded fingerprint."""
    if record is None or record.recipe != spec.recipe:
        return False
    if record.status == "excluded" and not record.fingerprint:
        return True
    study = ctx.study
    if spec.name not in study.manifest.models:
        return False
    if spec.name.startswith(PREFIX) and not member_complete(ctx, spec):  # one the zoo trained
        return False
    return study.fingerprint(spec.name) == record.fingerprint


def record_member(study: Study, member: ZooMember, order: list[str]) -> None:
    """Write ``member``'s record into the manifest (atomically), keeping the plan's order."""
    records = dict(study.manifest.extra.get(MANIFEST_KEY) or {})
    records[member.name] = member.to_dict()
    study.manifest.extra[MANIFEST_KEY] = {n: records[n] for n in order if n in records}
    study.save_manifest()


def build_zoo(study: Study, options: ZooOptions | None = None, progress: ProgressFn | None = None) -> Zoo:
    """Build (or finish building) the study's zoo; returns every planned member (see the module docstring).

    Records of members no longer in the plan (other options) are dropped from the manifest; their models stay
    in the study."""
    opts = (options if options is not None else ZooOptions()).validated()
    t0 = time.perf_counter()
    ctx = ZooContext(study, opts)
    specs = plan_members(ctx)
    order = [s.name for s in specs]
    recorded = recorded_members(study)
    todo = [s for s in specs if not is_built(ctx, s, recorded.get(s.name))]
    weights = {s.name: MEMBER_KINDS.get(s.kind).weight for s in todo}
    total = sum(weights.values()) or 1.0
    done = 0.0
    built: list[str] = []
    for spec in todo:
        w = weights[spec.name] / total

        def sub(frac: float, msg: str, _w: float = w, _d: float = done, _n: str = spec.name) -> None:
            if progress is not None:
                progress(min(0.999, _d + _w * max(0.0, min(1.0, frac))), f"{_n}: {msg}")

        sub(0.0, "building")
        member = MEMBER_KINDS.get(spec.kind)().build(ctx, spec, sub)
        record_member(study, member, order)
        built.append(spec.name)
        done += w
    stale = [n for n in recorded if n not in order]
    if stale or list(study.manifest.extra.get(MANIFEST_KEY) or {}) != order:
        records = study.manifest.extra.get(MANIFEST_KEY) or {}
        study.manifest.extra[MANIFEST_KEY] = {n: records[n] for n in order if n in records}
        study.save_manifest()
    members = recorded_members(study)
    probe = ctx.probe_acc_by_layer() if any(m.status != "absent" for m in members.values()) else {}
    if progress is not None:
        progress(1.0, f"zoo ready ({len(built)} built)")
    return Zoo(members={n: members[n] for n in order}, built=built, probe_acc_by_layer=probe,
               seconds=time.perf_counter() - t0)
