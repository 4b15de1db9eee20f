"""Fit the verdict rule on development zoos and test it on held-out ones (issue 15).

    python -m benchmarks.verdict_fit --dev /tmp/seeds/small0 /tmp/seeds/small1 --heldout /tmp/seeds/small2 \
        [--also /tmp/seeds/seed2] [--write-rule] --md benchmarks/VERDICT.md

Every study must have been through ``erasure validate`` (the signals' readings are read from its store; nothing
is computed here). The rule (``analysis.verdict.rule.fit_rule``) is fitted on the ``--dev`` studies only and
written to ``analysis/verdict/rule.json`` with ``--write-rule`` (version + 1). Then every zoo member and
unlearning method of every study is judged (``analysis.verdict.judge``): the held-out table is the test; the
development tables are in-sample. Also a leave-one-study-out check over dev + held-out studies: each study judged
by a rule fitted on the others.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from analysis.study import Study
from analysis.validation.runner import load_signals, stored_reading, validation_members
from analysis.verdict.judge import ModelVerdict, false_alarm_rate, stored_verdict
from analysis.verdict.options import EXPECTED, RULE_FILE
from analysis.verdict.rule import DevStudy, Rule, fit_rule, load_rule, write_rule


def dev_study(study: Study, signals: list[str]) -> DevStudy:
    members = [m for m in validation_members(study) if m.status in ("present", "absent")]
    per: dict[str, dict[str, Any]] = {}
    for s in signals:
        per[s] = {}
        for m in members:
            r = stored_reading(study, s, m.name)
            if r is not None:
                per[s][m.name] = r.per_sample
    return DevStudy(study.manifest.name + f"@{study.root}", study.manifest.seed,
                    {m.name: m.status for m in members}, per)


def judge_all(study: Study, rule: Rule) -> list[tuple[str, str, ModelVerdict | None]]:
    return [(m.name, m.status, stored_verdict(study, m.name, rule)) for m in validation_members(study)]


def table(rows: list[tuple[str, str, ModelVerdict | None]]) -> list[str]:
    out = ["| model | status | score [95% CI] | verdict | right? |", "|---|---|---|---|---|"]
    for name, status, v in rows:
        if v is None:
            out.append(f"| {name} | {status} | (not read) | – | – |")
            continue
        ci = "" if v.ci is None else f" [{v.ci[0]:.2f}, {v.ci[1]:.2f}]"
        score = "–" if v.score is None else f"{v.score:.2f}{ci}"
        exp = EXPECTED.get(status)
        right = "–" if exp is None else ("✓" if v.verdict == exp else "inconclusive" if v.verdict == "inconclusive"
                                         else "✗ WRONG")
        out.append(f"| {name} | {status} | {score} | {v.verdict} | {right} |")
    return out


def tally(rows: list[tuple[str, str, ModelVerdict | None]]) -> dict[str, Any]:
    zoo = [(s, v) for _, s, v in rows if s in EXPECTED and v is not None]
    n_members = len(zoo)
    right = sum(v.verdict == EXPECTED[s] for s, v in zoo)
    incon = sum(v.verdict == "inconclusive" for _, v in zoo)
    n_calls = [c for s, v in zoo if s == "absent" for c in v.per_sample.values()]
    return {"members": n_members, "right": right, "inconclusive": incon, "wrong": n_members - right - incon,
            "false_alarm_rate": false_alarm_rate([v for s, v in zoo if s == "absent"]),
            "firing_rate_absent": sum(c != "erased" for c in n_calls) / len(n_calls) if n_calls else None,
            "hit_rate": false_alarm_rate([v for s, v in zoo if s == "present"])}  # suppressed calls on P


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dev", nargs="+", required=True)
    ap.add_argument("--heldout", nargs="+", required=True)
    ap.add_argument("--also", nargs="*", default=[], help="more studies judged by the fitted rule (e.g. full size)")
    ap.add_argument("--write-rule", action="store_true")
    ap.add_argument("--md", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    load_signals()
    from analysis.signals import SIGNALS

    signals = sorted(SIGNALS.names())
    devs = [Study.open(p) for p in a.dev]
    helds = [Study.open(p) for p in a.heldout]
    also = [Study.open(p) for p in a.also]
    try:
        version = load_rule().version + 1
    except Exception:  # noqa: BLE001 - no rule yet (or a damaged one): start at 1
        version = 1
    rule = fit_rule([dev_study(s, signals) for s in devs], signals, version)
    if a.write_rule:
        write_rule(rule, RULE_FILE)
    md = ["# The fitted verdict: development zoos, held-out zoos", "",
          f"`python -m benchmarks.verdict_fit --dev {' '.join(a.dev)} --heldout {' '.join(a.heldout)}"
          f"{' --also ' + ' '.join(a.also) if a.also else ''}`", "",
          f"Rule v{rule.version} (`analysis/verdict/rule.json`): **{rule.signal}** model score (mean of its per-sample "
          f"values) against the threshold **{rule.threshold:.3f}**; verdict from its 95% bootstrap interval over "
          "samples (above: suppressed, below: erased, straddling: inconclusive). Fitted on "
          + ", ".join(f"{d['study']} (seed {d['seed']}: {d['n_present']} P, {d['n_absent']} N)"
                      for d in rule.fitted_on) + ".", "",
          "## Candidates on the development zoos", "",
          "| signal | worst AUROC over dev studies | margin (lowest P − highest N, in pooled SDs) | threshold |",
          "|---|---|---|---|"]
    for c in rule.candidates:
        md.append(f"| {c['signal']} | {c['min_auroc']:.2f} | {c['margin']:+.2f} | {c['threshold']:.3f} |")
    summary: dict[str, Any] = {"rule": rule.to_dict(), "studies": {}}
    for label, group in (("held-out (never used to fit)", helds), ("also judged", also),
                         ("development (in-sample)", devs)):
        for s in group:
            rows = judge_all(s, rule)
            t = tally(rows)
            summary["studies"][str(s.root)] = {"group": label, "seed": s.manifest.seed, **t,
                                               "rows": [[n, st, v.to_dict() if v else None] for n, st, v in rows]}
            far = "–" if t["false_alarm_rate"] is None else f"{t['false_alarm_rate']:.1%}"
            fire = "–" if t["firing_rate_absent"] is None else f"{t['firing_rate_absent']:.1%}"
            md += ["", f"## {label}: {s.root} (seed {s.manifest.seed})", "",
                   f"{t['right']} of {t['members']} zoo members right, {t['inconclusive']} inconclusive, "
                   f"{t['wrong']} wrong; per-sample 'suppressed' calls on N members: {far} (their own evidence "
                   f"fired on {fire} of N members' samples before the model-level gate).", "", *table(rows)]
    # leave one study out over dev + held-out
    pool = devs + helds
    if len(pool) >= 2:
        md += ["", "## Leave one study out", "", "Each study judged by a rule fitted on the others.", "",
               "| judged study | rule signal | threshold | right | inconclusive | wrong | N per-sample false alarms |",
               "|---|---|---|---|---|---|---|"]
        for i, s in enumerate(pool):
            others = [dev_study(o, signals) for j, o in enumerate(pool) if j != i]
            r = fit_rule(others, signals, 0)
            t = tally(judge_all(s, r))
            far = "–" if t["false_alarm_rate"] is None else f"{t['false_alarm_rate']:.1%}"
            md.append(f"| {s.root} (seed {s.manifest.seed}) | {r.signal} | {r.threshold:.3f} | {t['right']}/"
                      f"{t['members']} | {t['inconclusive']} | {t['wrong']} | {far} |")
            summary["studies"].setdefault(f"loso:{s.root}", {"rule": r.signal, "threshold": r.threshold, **t})
    text = "\n".join(md) + "\n"
    print(text)
    if a.md:
        Path(a.md).write_text(text)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
