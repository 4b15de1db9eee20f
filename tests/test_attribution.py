"""Prompt-token attribution (unPact) and keyword-emphasis recovery: hand-checked leave-one-out values, batched
equals a loop, the gradient views, KeyTokens, emphasis strategies, before vs after, recovery against the
retrain control, the store, the CLI and the page."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch

from analysis.attribution import (
    ABLATIONS,
    ATTRIBUTION_METHODS,
    ATTRIBUTION_STORE_KIND,
    EMPHASES,
    KEYWORD_SOURCES,
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
    compare_attributions,
    compare_models,
    emphasis_outcomes,
    get_emphasis,
    key_tokens,
    loo_contributions,
    prompt_ids,
    recover,
    recovery_cached,
    stored_outcomes,
    strategy_names,
)
from analysis.attribution.figures import attribution_heatmap, contribution_change_bars, recovery_bars
from analysis.attribution.options import AttributionMethod, KeywordSource
from analysis.cli import main
from analysis.data.schema import Sample
from analysis.errors import AnalysisInputError, WorkbenchError
from analysis.hooks import EMBED, attn_pattern, attn_scores
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
    stored = small_study.store.get(ATTRIBUTION_STORE_KIND, [small_study.fingerprint("npo")],
                                   AttributionOptions().key(), sample_id=sample.id)
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


def test_recovery_readings(small_study):
    """The report carries its readings: each strategy net of the retrain control, the best of them, and per
    sample which strategies bring the answer back (recounted here by hand from the stored outcomes)."""
    opts = RecoveryOptions(strategies=("repeat", "prefix", "attn_scores")).validated()
    rep = recover(small_study, "rmu", opts)
    retrain = small_study.manifest.retrain
    assert rep.retrain == retrain and rep.retrain_results is not None
    assert set(rep.net_by_strategy) == set(rep.strategies)
    for s in rep.strategies:
        rate, base = rep.results[s].recovery_rate, rep.retrain_results[s].recovery_rate
        expected = None if rate is None else rate - (base or 0.0)
        assert rep.net_by_strategy[s] == (None if expected is None else pytest.approx(expected, abs=1e-12))
    defined = {s: v for s, v in rep.net_by_strategy.items() if v is not None}
    if defined:
        assert rep.best_strategy in defined and rep.best_net == max(defined.values())
    else:
        assert rep.best_strategy is None and rep.best_net is None
    assert [r["net_recovery_rate"] for r in rep.table()] == [rep.net_by_strategy[s] for s in rep.strategies]
    # the control is net of itself: zero wherever it has a rate
    ctrl = recover(small_study, retrain, opts)
    assert all(v in (None, 0.0) for v in ctrl.net_by_strategy.values())
    assert all(row["recovered"] in (None, False) for row in ctrl.per_sample.values())

    # per sample, by hand from the stored outcomes
    ids = [s.id for s in small_study.samples(opts.split)]
    assert list(rep.per_sample) == ids
    none = get_emphasis("none")

    def correct(name: str, strategy: str, sid: str) -> bool:
        got = stored_outcomes(small_study, name, get_emphasis(strategy, opts.params), opts, [sid])
        return bool(got[sid].get("correct", False))

    n_applies = 0
    for sid in ids:
        plain = stored_outcomes(small_study, "rmu", none, opts, [sid])[sid]
        if not correct("original", "none", sid) or plain.get("correct") or "error" in plain:
            assert rep.per_sample[sid] == {"recovered": None, "recovered_by": ""}, sid
            continue
        n_applies += 1
        by = []
        for s in rep.strategies:
            invented = not correct(retrain, "none", sid) and correct(retrain, s, sid)
            if correct("rmu", s, sid) and not invented:
                by.append(s)
        assert rep.per_sample[sid] == {"recovered": bool(by), "recovered_by": ", ".join(by)}, sid
    for r in rep.results.values():  # recovery applies on the denominator (plus samples a strategy could not take)
        assert n_applies == r.n_denominator if r.n_skipped == 0 else n_applies >= r.n_denominator
    for s in rep.strategies:  # a sample recovered net of the control was recovered on the model
        assert sum(s in row["recovered_by"].split(", ") for row in rep.per_sample.values()) <= rep.results[s].n_recovered

    # serialised with the report; a report stored before it carried its readings derives the net rates
    back = RecoveryReport.from_dict(json.loads(json.dumps(rep.to_dict())))
    assert back.per_sample == rep.per_sample and back.net_by_strategy == rep.net_by_strategy
    old = {k: v for k, v in rep.to_dict().items() if k not in ("net_by_strategy", "best_strategy", "best_net",
                                                                 "per_sample")}
    legacy = RecoveryReport.from_dict(old)
    assert legacy.net_by_strategy == rep.net_by_strategy and legacy.best_strategy == rep.best_strategy
    assert legacy.per_sample == {}


def test_registries(organism, sample):
    """Every choice is a registry the CLI and the page read, and matches the options' Literal types."""
    assert ATTRIBUTION_METHODS.names() == get_args(AttributionMethod)
    assert KEYWORD_SOURCES.names() == get_args(KeywordSource)
    assert ABLATIONS.names() == ("delete", "replace")
    assert set(strategy_names(include_baseline=True)) == set(EMPHASES.names())
    with pytest.raises(AnalysisInputError, match="unknown ablation 'mask'.*delete, replace"):
        AttributionOptions(ablation="mask").validated()
    with pytest.raises(AnalysisInputError, match="unknown keyword source 'theirs'"):
        RecoveryOptions(keywords_from="theirs").validated()
    assert RecoveryOptions(keywords_from="self").keyword_source("npo") == "npo"
    assert RecoveryOptions().keyword_source("npo") == "original"
    item = prompt_ids(organism, sample.prompt, sample.answer)
    assert ABLATIONS.get("delete")(list(item.prompt), 2, None) == [*item.prompt[:2], *item.prompt[3:]]
    # activation strategies hook TransformerLens's own hook names
    mask = torch.zeros(1, len(item.prompt), dtype=torch.bool)
    layers = range(organism.n_layers)
    assert [h for h, _ in get_emphasis("attn_scores").hooks(organism, mask)] == [attn_scores(la) for la in layers]
    assert [h for h, _ in get_emphasis("attn_pattern").hooks(organism, mask)] == [attn_pattern(la) for la in layers]
    assert [h for h, _ in get_emphasis("embed_scale").hooks(organism, mask)] == [EMBED]
    # the CLI's choices are the registries'
    from analysis.attribution.cli import add_parser
    from analysis.cli_common import Parser, verb

    parser = Parser(prog="erasure")
    add_parser(parser.add_subparsers(), verb)
    actions = {a.dest: a for sp in parser._subparsers._group_actions[0].choices.values() for a in sp._actions}
    assert tuple(actions["method"].choices) == ATTRIBUTION_METHODS.names()
    assert tuple(actions["keywords_from"].choices) == KEYWORD_SOURCES.names()
    assert list(actions["strategy"].choices) == strategy_names()


def test_compare_attributions_is_compare_models(small_study):
    """compare_models is compare_attributions over the stored attributions of both models."""
    c = compare_models(small_study, "npo")
    assert c.samples
    ds_b = attribute_dataset(small_study, "original", split=["forget", "retain"])
    ds_a = attribute_dataset(small_study, "npo", split=["forget", "retain"])
    again = compare_attributions(ds_b.results, ds_a.results, {s.sample_id: s.split for s in c.samples}, "original",
                                 "npo", options=c.options, skipped=c.skipped)
    assert again == c


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
    # the heatmap, plus each dataset view whose results are already stored (earlier tests of the session may have
    # computed them); a view not stored yet waits for its button
    waiting = [b.key for b in at.button]
    assert len(at.get("plotly_chart")) == 1 + ("compare_go" not in waiting) + ("recover_go" not in waiting)
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
