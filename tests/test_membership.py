"""Membership inference: Min-K%++ and the loss score on a hand-computed tiny logits case, AUROC and percentiles on
hand-computed cases (identical lists give 0.5; the mean percentile is the AUROC), the batched scores against the
naive per-row loop, bad inputs, the held-out sets, the store, the signal, the CLI and the page section."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

from analysis.cli import main
from analysis.errors import AnalysisInputError
from analysis.membership import (
    STORE_KIND,
    MembershipOptions,
    auroc,
    auroc_ci,
    heldout_items,
    membership_cached,
    membership_report,
    membership_scores,
    membership_scores_naive,
    percentiles,
    scores_from_logits,
)
from analysis.scoring import batch_from_ids
from analysis.signals import SIGNALS
from analysis.store import ResultStore
from analysis.study import Study
from benchmarks.bench_membership import REL_TOL

pytestmark = pytest.mark.usefixtures("one_thread")
LN2 = math.log(2.0)


@pytest.fixture
def study(small_study) -> Study:
    """The small study with a store of its own (nothing stored here leaks into other tests)."""
    s = Study.open(small_study.root)
    s.store = ResultStore(s.root.parent / f"membership-{id(s)}.sqlite", content=s)
    yield s
    for suffix in ("", "-wal", "-shm"):
        (s.root.parent / f"membership-{id(s)}.sqlite{suffix}").unlink(missing_ok=True)


def _tiny_case() -> tuple[torch.Tensor, object]:
    """Tokens [0, 1, 2, 0]: prompt [0, 1], answer [2, 0]. Logits at position t predict token t + 1.
    At t = 1 and t = 2 the next-token distribution is p = (1/2, 1/4, 1/4) (logits (ln 2, 0, 0)):
    mu = E[log p] = -1.5 ln 2, sigma = sqrt(E[(log p - mu)^2]) = 0.5 ln 2. The answer tokens are 2 (log p = -2 ln 2,
    z = -1) and 0 (log p = -ln 2, z = +1). At t = 0 (the prompt's second token, 1) logits (0, ln 3, 0):
    p = (1/5, 3/5, 1/5)."""
    batch = batch_from_ids([([0, 1], [2, 0])], pad_id=0, n_ctx=8)
    logits = torch.tensor([[[0.0, math.log(3.0), 0.0], [LN2, 0.0, 0.0], [LN2, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    return logits, batch


@pytest.mark.parametrize(("k", "expected"), [(0.2, -1.0), (0.5, -1.0), (1.0, 0.0)])
def test_min_k_plus_plus_hand_computed_answer_span(k, expected):
    logits, batch = _tiny_case()
    loss, mink = scores_from_logits(logits, batch, k, "answer")
    assert float(mink[0]) == pytest.approx(expected, abs=1e-5)  # lowest max(1, floor(k * 2)) of z = (-1, +1)
    assert float(loss[0]) == pytest.approx(-1.5 * LN2, abs=1e-6)  # mean of log(1/4) and log(1/2)


def test_min_k_plus_plus_hand_computed_text_span():
    logits, batch = _tiny_case()
    p = np.array([0.2, 0.6, 0.2])
    mu = float(np.sum(p * np.log(p)))
    z0 = (math.log(0.6) - mu) / math.sqrt(float(np.sum(p * (np.log(p) - mu) ** 2)))  # token 1 at t = 0
    loss, mink = scores_from_logits(logits, batch, 1.0, "text")
    assert float(mink[0]) == pytest.approx((z0 - 1.0 + 1.0) / 3, abs=1e-5)
    assert float(loss[0]) == pytest.approx((math.log(0.6) - 3 * LN2) / 3, abs=1e-6)
    _, mink_low = scores_from_logits(logits, batch, 0.4, "text")  # floor(0.4 * 3) = 1 token: the lowest
    assert float(mink_low[0]) == pytest.approx(min(z0, -1.0), abs=1e-5)


def test_auroc_known_answers():
    xs = [0.3, 1.2, -0.5, 1.2, 2.0]
    assert auroc(xs, list(xs)) == 0.5  # identical score lists
    assert auroc([1.0, 1.0], [1.0]) == 0.5  # all tied
    assert auroc([2.0, 3.0], [0.0, 1.0]) == 1.0 and auroc([0.0, 1.0], [2.0, 3.0]) == 0.0
    assert auroc([3.0, 5.0], [2.0, 4.0]) == pytest.approx(0.75)  # 3 of 4 pairs
    assert auroc([1.0, 2.0], [2.0, 0.0]) == pytest.approx((1 + 0.5 + 1 + 0) / 4)  # a tie counts 1/2
    assert auroc([], [1.0]) is None and auroc([1.0, float("nan")], [0.0]) == 1.0


def test_percentiles_mean_is_auroc():
    rng = np.random.default_rng(3)
    pos = np.round(rng.normal(0.5, 1, 37), 1)  # rounded: ties on purpose
    neg = np.round(rng.normal(0, 1, 53), 1)
    pct = percentiles(pos, neg)
    assert np.all((pct >= 0) & (pct <= 1))
    assert float(np.mean(pct)) == pytest.approx(auroc(pos, neg), abs=1e-12)
    assert percentiles([1.0, 2.5, 9.0, float("nan")], [1.0, 2.0, 3.0, 4.0]).tolist()[:3] == [0.125, 0.5, 1.0]
    assert np.isnan(percentiles([float("nan")], [1.0])[0])


def test_auroc_ci_is_seeded_and_contains_the_point():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 30), rng.normal(0, 1, 40)
    a, b = auroc_ci(pos, neg, seed=1), auroc_ci(pos, neg, seed=1)
    assert a == b and a is not None and a[0] <= auroc(pos, neg) <= a[1]
    assert auroc_ci([1.0], neg) is None


def test_batched_equals_naive(small_study, organism):
    rows = small_study.forget[:5] + small_study.retain[:6]
    prompts, answers = [s.prompt for s in rows], [s.answer for s in rows]
    answers[-1] = "Quenlow Zentrix baker"  # a multi-token answer: more than one token to sort
    for span in ("answer", "text"):
        for k in (0.2, 0.6):
            ours = membership_scores(organism, prompts, answers, k, span, batch_size=4)  # across batches
            ref = membership_scores_naive(organism, prompts, answers, k, span)
            np.testing.assert_allclose(ours.loss, ref.loss, rtol=REL_TOL, atol=REL_TOL)
            np.testing.assert_allclose(ours.mink, ref.mink, rtol=REL_TOL, atol=REL_TOL)  # |z| reaches hundreds


@pytest.mark.parametrize(("field", "value", "match"), [
    ("k", 0.0, "k"), ("k", 1.5, "k"), ("k", float("nan"), "k"), ("heldout", "bogus", "held-out"),
    ("span", "prompt", "span"), ("n_perturbed", 0, "n_perturbed"), ("seed", -1, "seed"),
    ("batch_size", 0, "batch_size")])
def test_bad_options(field, value, match):
    with pytest.raises(AnalysisInputError, match=match):
        MembershipOptions(**{field: value}).validated()


def test_heldout_sets(study):
    forget = {s.id: s for s in study.forget}
    pert = heldout_items(study, MembershipOptions(n_perturbed=3))
    assert 0 < len(pert) <= 3 * len(forget)
    for item_id, prompt, answer in pert:
        fid, _, wrong = item_id.partition("~")
        assert prompt == forget[fid].prompt and wrong == answer and answer != forget[fid].answer
    assert [i for i, _, _ in heldout_items(study, MembershipOptions(heldout="retain"))] == [s.id for s in study.retain]


def test_report_store_and_signal(study, monkeypatch):
    opts = MembershipOptions()
    r = membership_report(study, "original", opts)
    mink = r.scores["mink"]
    assert list(mink.percentile) == [s.id for s in study.forget]
    assert float(np.mean(list(mink.percentile.values()))) == pytest.approx(mink.auroc, abs=1e-12)
    assert mink.auroc > 0.9  # the original singles out the facts it was trained on
    assert membership_cached(study, "original", opts)
    assert study.store.get(STORE_KIND, [study.fingerprint("original")], opts.key()) is not None
    import analysis.membership.runner as runner

    monkeypatch.setattr(runner, "membership_scores", lambda *a, **k: pytest.fail("rescored a stored model"))
    again = membership_report(study, "original", MembershipOptions(seed=5))  # the seed only redraws intervals
    assert again.scores["mink"].auroc == mink.auroc
    reading = SIGNALS.get("membership")(study, "original")
    assert reading.signal == "membership" and reading.value == pytest.approx(mink.auroc)
    assert reading.per_sample == mink.percentile and reading.ci is not None
    assert reading.details["auroc_loss"] == r.scores["loss"].auroc


def test_retain_heldout_differs(study):
    r = membership_report(study, "original", MembershipOptions(heldout="retain"))
    assert r.heldout == "retain" and len(r.heldout_ids) == len(study.retain)
    assert 0.0 <= r.scores["mink"].auroc <= 1.0


def test_cli(small_study, capsys):
    root = str(small_study.root)
    assert main(["membership", root, "--model", "original", "--model", "retrain", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert set(obj["models"]) == {"original", "retrain"}
    orig = obj["models"]["original"]
    assert orig["signal"]["signal"] == "membership"
    assert orig["signal"]["value"] == pytest.approx(orig["scores"]["mink"]["auroc"])
    assert main(["membership", root, "--model", "retrain", "--heldout", "retain"]) == 0
    assert "held-out retain" in capsys.readouterr().out
    assert main(["membership", root, "--model", "nope"]) == 2
    assert "unknown model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["membership", root, "--k", "0"])
    assert "--k" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:  # the help (argparse %-formats it: "Min-K%++" must survive)
        main(["membership", "--help"])
    assert done.value.code == 0 and capsys.readouterr().out.count("Min-K%++") == 2


def _section_script() -> None:
    import os

    from analysis.study import Study
    from app.views.signal_sections_attack import membership_section

    membership_section(Study.open(os.environ["ERASURE_STUDY"]), "npo")


def test_page_section(small_study, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["streamlit"])
    monkeypatch.setenv("ERASURE_STUDY", str(small_study.root))
    at = AppTest.from_function(_section_script, default_timeout=120).run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    if any(b.key == "membership_go" for b in at.button):
        at.button(key="membership_go").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    metrics = {m.label: m.value for m in at.metric}
    r = membership_report(small_study, "npo")
    assert metrics["Min-K%++ AUROC"] == f"{r.scores['mink'].auroc:.3f}"
    assert len(at.get("plotly_chart")) == 1
