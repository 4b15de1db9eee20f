"""Prompt-token attribution (unPact) and keyword-emphasis recovery: hand-checked leave-one-out values, batched
equals a loop, the gradient views, KeyTokens, emphasis strategies, before vs after, recovery against the
retrain control, the store, the CLI and the page."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.attribution import (
    ATTRIBUTION_KIND,
    AttributionComparison,
    AttributionOptions,
    EmphasisParams,
    PromptIds,
    RecoveryOptions,
    RecoveryReport,
    TokenAttribution,
    attribute,
    attribute_dataset,
    attribute_pairs,
    attribute_sample,
    attribute_samples,
    compare_models,
    emphasis_outcomes,
    get_emphasis,
    key_tokens,
    loo_contributions,
    prompt_ids,
    recover,
    recovery_cached,
    strategy_names,
)
from analysis.attribution.figures import attribution_heatmap, contribution_change_bars, recovery_bars
from analysis.cli import main
from analysis.data.schema import Sample
from analysis.errors import AnalysisInputError, WorkbenchError
from analysis.subjects import subject_token_range

TOL = 1e-4


@pytest.fixture(scope="module")
def sample(small_study) -> Sample:
    return small_study.forget[0]


@torch.no_grad()
def _lp(handle, prompt_words: list[str], answer: str) -> float:
    """Independent of analysis.scoring: one unpadded forward, mean log-prob of the answer tokens."""
    tok = handle.tokenizer
    ids = [tok.bos_token_id] + [tok.convert_tokens_to_ids(w) for w in prompt_words]
    ans = [tok.convert_tokens_to_ids(w) for w in answer.split()]
    logits = handle.model(torch.tensor([ids + ans]), return_type="logits")[0].double()
    logp = torch.log_softmax(logits, -1)
    return float(np.mean([float(logp[len(ids) - 1 + j, a]) for j, a in enumerate(ans)]))


# ---- leave-one-out -----------------------------------------------------------------------------------------
def test_loo_matches_hand_computed_differences(organism, sample):
    words = sample.prompt.split()
    full = _lp(organism, words, sample.answer)
    r = attribute(organism, sample, AttributionOptions(method="loo", ablation="delete"))
    assert r.tokens == ["<bos>", *words] and r.contributions[0] is None  # BOS is never ablated
    assert r.logprob == pytest.approx(full, abs=TOL)
    for i in range(len(words)):
        expected = full - _lp(organism, words[:i] + words[i + 1:], sample.answer)
        assert r.contributions[i + 1] == pytest.approx(expected, abs=TOL), words[i]
    # replacement by the unk token keeps positions
    r = attribute(organism, sample, AttributionOptions(ablation="replace", neutral="unk"))
    for i in range(len(words)):
        expected = full - _lp(organism, words[:i] + ["<unk>"] + words[i + 1:], sample.answer)
        assert r.contributions[i + 1] == pytest.approx(expected, abs=TOL)
    # a configurable neutral token
    r2 = attribute(organism, sample, AttributionOptions(ablation="replace", neutral="the"))
    assert r2.contributions[1] == pytest.approx(full - _lp(organism, ["the", *words[1:]], sample.answer), abs=TOL)


def test_batched_equals_loop(small_study, organism):
    samples = small_study.forget[:6] + small_study.retain[:6]
    batched, skipped = attribute_samples(organism, samples, AttributionOptions())
    assert not skipped and list(batched) == [s.id for s in samples]
    for s in samples:
        one = attribute(organism, s, AttributionOptions(batch_size=1))  # one row per forward
        np.testing.assert_allclose(batched[s.id].array(), one.array(), atol=TOL, equal_nan=True)
        assert batched[s.id].keywords == one.keywords
    # every ablation of every prompt in one forward, vs chunks of 3 rows
    items = [prompt_ids(organism, s.prompt, s.answer) for s in samples]
    a = loo_contributions(organism, items, batch_size=10_000)
    b = loo_contributions(organism, items, batch_size=3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(np.array(x.contributions[1:]), np.array(y.contributions[1:]), atol=TOL)
    grads, _ = attribute_samples(organism, samples[:4], AttributionOptions(method="ig", ig_steps=8))
    for s in samples[:4]:
        one = attribute(organism, s, AttributionOptions(method="ig", ig_steps=8, batch_size=3))
        np.testing.assert_allclose(grads[s.id].array(), one.array(), atol=TOL, equal_nan=True)


def test_gradient_views(small_study, organism, sample):
    """Integrated gradients is complete: its attributions add up to LP(x) - LP(baseline); input x gradient is
    its one-point (alpha = 1) first-order version."""
    r = attribute(organism, sample, AttributionOptions(method="ig", ig_steps=64))
    total = float(np.nansum(r.array()))
    assert r.baseline_logprob is not None
    gap = r.logprob - r.baseline_logprob
    assert abs(total - gap) < 0.05 * abs(gap) + 0.05, (total, gap)
    g = attribute(organism, sample, AttributionOptions(method="grad"))
    assert g.contributions[0] is None and all(c is not None for c in g.contributions[1:])
    assert g.logprob == pytest.approx(r.logprob, abs=TOL)
    fig = attribution_heatmap({"loo": attribute(organism, sample), "ig": r}, keywords_from="loo")
    assert np.shape(fig.data[0].z) == (2, len(r.tokens) - 1)  # BOS left out


def test_keytokens_rule():
    # fewer than beta positive: all positive tokens
    assert key_tokens([None, 0.5, -1.0, 0.2], alpha=0.4, beta=3) == [1, 3]
    # otherwise: share of the positive mass above alpha (2 / 4 and 1.5 / 4 > 0.3; 0.5 / 4 is not)
    assert key_tokens([None, 2.0, 1.5, 0.5, -3.0], alpha=0.3, beta=3) == [1, 2]
    assert key_tokens([None, -1.0, float("nan")], alpha=0.1, beta=3) == []


def test_keywords_of_recalled_facts_include_subject_tokens(small_study, organism):
    res, _ = attribute_samples(organism, small_study.forget, AttributionOptions())
    hits = 0
    for sid, r in res.items():
        s = small_study.sample(sid)
        a, b = subject_token_range(organism.tokenizer, s, organism.prepend_bos)
        assert r.logprob > math.log(0.5)  # the original recalls the fact
        hits += any(a <= k < b for k in r.keywords)
    assert hits >= 0.75 * len(res), f"{hits}/{len(res)}"


# ---- emphasis -----------------------------------------------------------------------------------------------
def test_prompt_rewrites(organism, sample):
    item = prompt_ids(organism, sample.prompt, sample.answer)  # <bos> First Last was born in
    words = sample.prompt.split()

    def text(it: PromptIds) -> str:
        return " ".join(organism.tokenizer.convert_ids_to_tokens(list(it.prompt[1:])))

    rep, kw = get_emphasis("repeat").rewrite(item, [1, 2], organism)
    assert text(rep) == " ".join(words[:2] * 2 + words[2:]) and kw == [1, 2, 3, 4]
    pre, kw = get_emphasis("prefix").rewrite(item, [1, 2], organism)
    assert text(pre) == " ".join(words[:2] + [","] + words) and kw == [1, 2, 4, 5]
    pre, _ = get_emphasis("prefix", EmphasisParams(copies=2, separator="")).rewrite(item, [1, 4], organism)
    assert text(pre) == " ".join([words[0], words[3]] * 2 + words)
    same, kw = get_emphasis("repeat").rewrite(item, [], organism)
    assert same == item and kw == []


def test_activation_emphasis_factor_one_changes_nothing(small_study, organism):
    samples = small_study.forget[:8]
    items = [prompt_ids(organism, s.prompt, s.answer) for s in samples]
    kws = [attribute(organism, s).keywords for s in samples]
    plain = emphasis_outcomes(organism, get_emphasis("none"), items, kws)
    for name in ("attn_scores", "attn_pattern", "embed_scale"):
        out = emphasis_outcomes(organism, get_emphasis(name, EmphasisParams(factor=1.0)), items, kws)
        for a, b in zip(out, plain, strict=True):
            assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-5) and a["correct"] == b["correct"]
    # with a real factor the hooks fire, and scaling scores by log(f) equals rescaling the pattern
    s3 = emphasis_outcomes(organism, get_emphasis("attn_scores", EmphasisParams(factor=3.0)), items, kws)
    p3 = emphasis_outcomes(organism, get_emphasis("attn_pattern", EmphasisParams(factor=3.0)), items, kws)
    assert max(abs(a["logprob"] - b["logprob"]) for a, b in zip(s3, plain, strict=True)) > 1e-3
    for a, b in zip(s3, p3, strict=True):
        assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-4)
    one_layer = emphasis_outcomes(organism, get_emphasis("attn_scores", EmphasisParams(factor=3.0, layers=(0,))),
                                  items, kws)
    assert max(abs(a["logprob"] - b["logprob"]) for a, b in zip(one_layer, s3, strict=True)) > 1e-4


def test_bad_inputs(small_study, organism, sample):
    with pytest.raises(AnalysisInputError, match="at least two"):
        attribute_pairs(organism, [("Dridaen", "Mossgate")])
    with pytest.raises(AnalysisInputError, match="empty answer"):
        attribute_pairs(organism, [(sample.prompt, "  ")])
    with pytest.raises(AnalysisInputError, match="empty prompt"):
        attribute_pairs(organism, [("", sample.answer)])
    with pytest.raises(AnalysisInputError, match="unknown emphasis strategy 'shout'"):
        get_emphasis("shout")
    with pytest.raises(AnalysisInputError, match="unknown emphasis strategy"):
        RecoveryOptions(strategies=("repeat", "shout")).validated()
    with pytest.raises(AnalysisInputError, match="unknown attribution method"):
        AttributionOptions(method="shap").validated()
    with pytest.raises(AnalysisInputError, match="alpha"):
        AttributionOptions(alpha=1.5).validated()
    with pytest.raises(AnalysisInputError, match="must be one"):
        attribute(organism, sample, AttributionOptions(ablation="replace", neutral="two words"))
    item = prompt_ids(organism, sample.prompt, sample.answer)
    with pytest.raises(AnalysisInputError, match="outside the model's layers"):
        emphasis_outcomes(organism, get_emphasis("attn_pattern", EmphasisParams(layers=(99,))), [item], [[1]])
    with pytest.raises(AnalysisInputError, match="positive"):
        emphasis_outcomes(organism, get_emphasis("embed_scale", EmphasisParams(factor=0)), [item], [[1]])
    with pytest.raises(WorkbenchError, match="unknown sample id"):
        attribute_sample(small_study, "original", "ghost")
    with pytest.raises(WorkbenchError, match="unknown model"):
        recover(small_study, "ghost")
    # a one-token prompt inside a batch job is skipped with its reason, the rest attributed
    one = Sample(id="one", prompt="Dridaen", answer="Mossgate", split="forget")
    res, skipped = attribute_samples(organism, [one, sample])
    assert list(res) == [sample.id] and "at least two" in skipped["one"]


# ---- the study store, before vs after, recovery -----------------------------------------------------------
def test_store_roundtrip(small_study, sample):
    r = attribute_sample(small_study, "npo", sample.id)
    back = TokenAttribution.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r and back.model == small_study.fingerprint("npo")
    stored = small_study.store.get(ATTRIBUTION_KIND, [small_study.fingerprint("npo")], AttributionOptions().key(),
                                   sample_id=sample.id)
    assert stored is not None and TokenAttribution.from_dict(stored) == r
    ds = attribute_dataset(small_study, "npo", split="forget")
    assert set(ds.results) == {s.id for s in small_study.forget} and ds.results[sample.id] == r


def test_compare_models(small_study):
    c = compare_models(small_study, "npo")
    assert set(c.summary) == {"forget", "retain"}
    assert len(c.samples) == len(small_study.forget) + len(small_study.retain)
    assert c.disrupted_focus is not None and c.disrupted_focus > 0  # NPO removes the focus on the keywords
    assert c.summary["forget"]["keyword"] < c.summary["retain"]["keyword"]
    assert AttributionComparison.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    fig = contribution_change_bars({"npo": c})
    assert len(fig.data) == 2  # one bar trace per split


def test_recovery_report(small_study):
    opts = RecoveryOptions(strategies=("repeat", "attn_scores"))
    rep = recover(small_study, "rmu", opts)
    assert rep.retrain == small_study.manifest.retrain and rep.retrain_results is not None
    assert rep.strategies == ["repeat", "attn_scores"] and set(rep.recovery_rate) == set(rep.strategies)
    assert rep.n_forget == len(small_study.forget) and rep.n_eligible >= 0.9 * rep.n_forget
    for res in (rep.results, rep.retrain_results, rep.original_results):
        for r in res.values():
            assert r.n_denominator <= r.n_eligible <= rep.n_eligible and r.n_recovered <= r.n_denominator
            assert r.recovery_rate is None or 0 <= r.recovery_rate <= 1
    assert all(r.n_denominator == 0 and r.recovery_rate is None for r in rep.original_results.values())
    # the retrain control never learned the facts: emphasis recovers (close to) nothing
    assert all((v or 0) <= 0.2 for v in rep.retrain_recovery_rate.values())
    assert recovery_cached(small_study, "rmu", opts)
    assert RecoveryReport.from_dict(json.loads(json.dumps(rep.to_dict()))).to_dict() == rep.to_dict()
    again = recover(small_study, "rmu", opts)
    assert again.to_dict() == rep.to_dict()
    fig = recovery_bars({"rmu": rep})
    assert [t.name for t in fig.data] == ["rmu", f"{rep.retrain} (control)"] and list(fig.data[0].x) == rep.strategies
    assert strategy_names()[:2] == ["repeat", "prefix"] and "none" not in strategy_names()


# ---- CLI and page ---------------------------------------------------------------------------------------------


def test_cli_json(small_study, sample, capsys):
    root = str(small_study.root)
    assert main(["attribute", root, "--model", "rmu", "--sample", sample.id, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"tokens", "contributions", "keywords"} <= set(out)
    assert len(out["tokens"]) == len(out["contributions"]) and out["contributions"][0] is None
    assert all(0 < k < len(out["tokens"]) for k in out["keywords"])
    assert main(["attribute", root, "--sample", sample.id, "--method", "grad", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "grad"
    assert main(["recover", root, "--model", "rmu", "--strategy", "repeat", "--strategy", "attn_scores",
                  "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"recovery_rate", "prob_gain", "retrain_recovery_rate"} <= set(out)
    for key in ("recovery_rate", "prob_gain", "retrain_recovery_rate"):
        assert set(out[key]) == {"repeat", "attn_scores"}
    assert main(["attribute", root, "--sample", "ghost", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown sample id 'ghost'" in err
    assert main(["recover", root, "--model", "rmu", "--strategy", "attn_scores", "--layers", "9"]) == 2
    assert "outside the model's layers" in capsys.readouterr().err
    assert main(["attribute", root]) == 2
    assert "--sample ID or --all" in capsys.readouterr().err


PAGE = str(Path(__file__).resolve().parent.parent / "app" / "views" / "attribution.py")


@pytest.fixture
def page(small_study, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["streamlit"])
    monkeypatch.setenv("ERASURE_STUDY", str(small_study.root))
    return AppTest.from_file(PAGE, default_timeout=120)


def test_page(page, small_study):
    at = page.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Attribution"
    assert len(at.get("plotly_chart")) == 1  # the heatmap; the dataset views wait for their buttons
    at.multiselect(key="strategies").set_value(["repeat", "attn_pattern"]).run()
    at.multiselect(key="recovery_models").set_value(["rmu", "npo"]).run()
    at.button(key="recover_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    table = at.dataframe[-1].value
    assert set(table["model"]) == {"rmu", "npo"} and "retrain rate" in table.columns
    at.run()  # now cached: no recovery button
    assert "recover_go" not in [b.key for b in at.button]
    at.multiselect(key="strategies").set_value([]).run()
    assert not at.exception and any("strategy" in w.value for w in at.warning)


def test_page_query_param(page, small_study):
    page.query_params["sample"] = "ghost"
    at = page.run()
    assert not at.exception and any("ghost" in e.value for e in at.error)
    page.query_params["sample"] = small_study.retain[1].id
    at = page.run()
    assert not at.error and not at.warning and at.selectbox(key="sample").value == small_study.retain[1].id
    at.selectbox(key="sample").set_value(small_study.forget[2].id).run()  # a pick in the box is kept
    assert at.selectbox(key="sample").value == small_study.forget[2].id and not at.exception
