"""Causal tracing: known answers, agreement with TransformerLens's activation patching and with a naive
per-cell loop, determinism, errors, the store, the CLI and the page."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformer_lens import patching

from analysis import hooks
from analysis.cli import main
from analysis.data.schema import Sample
from analysis.errors import AnalysisInputError, StudyError
from analysis.tracing import (
    CORRUPTIONS,
    STORE_KIND,
    TOKEN_ROLES,
    AIEResult,
    SubjectPool,
    TraceOptions,
    TraceResult,
    average_indirect_effect,
    cached_trace,
    get_corruption,
    subject_input,
    trace,
    trace_dataset,
    trace_difference,
    trace_sample,
    window_layers,
)
from analysis.tracing.runner import store_key

TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pool(small_study, organism) -> SubjectPool:
    return small_study.subject_pool()


@pytest.fixture(scope="module")
def sample(small_study) -> Sample:
    return small_study.forget[0]


def _metric(kind: str, prompt_len: int, answer: int, other: int | None = None):
    """Independent of analysis.tracing: p(answer) or (logit_diff_corrupted) logit(answer) - logit(other) at the
    last prompt position, averaged over the batch."""

    def f(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, prompt_len - 1].double()
        if kind == "prob":
            return torch.softmax(last, -1)[:, answer].mean()
        return (last[:, answer] - last[:, other]).mean()

    return f


@pytest.mark.parametrize("metric", ["prob", "logit_diff_corrupted"])
def test_known_answers(organism, sample, pool, metric):
    r = trace(organism, sample, pool, TraceOptions(metric=metric, n_samples=4))
    assert len(subject_input(organism, sample).answer_ids) == 1  # one-token answers: restoring the end is exact
    s0, s1 = r.subject_range
    assert r.tokens[s0:s1] == sample.subject.split() and r.layers == list(range(organism.n_layers))
    resid = r.array("resid")
    assert resid.shape == (organism.n_layers, len(r.tokens))
    # The last layer's residual at the last token carries the whole clean output.
    assert resid[-1, -1] == pytest.approx(r.clean, abs=TOL)
    # Restoring what the corruption never touched restores nothing: positions before the subject (BOS) at
    # every layer, and the last layer at every other position (it feeds only its own logits).
    for kind in ("resid", "mlp", "attn"):
        np.testing.assert_allclose(r.array(kind)[:, :s0], r.corrupted, atol=TOL)
    np.testing.assert_allclose(resid[-1, :-1], r.corrupted, atol=TOL)
    # Restoring nothing: the corrupted run on its own (same seeded noise, applied here by a plain hook).
    inp = subject_input(organism, sample)
    opts = TraceOptions(metric=metric, n_samples=4).validated(organism.n_layers)
    corrupted = get_corruption("noise").corrupt(organism, inp, pool, opts)
    with torch.no_grad():
        logits = organism.model.run_with_hooks(corrupted.tokens, fwd_hooks=[
            (hooks.EMBED, lambda act, hook: act + corrupted.embed_delta)])
        clean_logits = organism.model(inp.tensor(organism.device)[None])
    other = None
    if metric == "logit_diff_corrupted":
        mean = logits[:, inp.prompt_len - 1].mean(0)
        mean[inp.answer_ids[0]] = -torch.inf
        other = int(mean.argmax())
    f = _metric(metric, inp.prompt_len, inp.answer_ids[0], other)
    assert r.corrupted == pytest.approx(float(f(logits)), abs=TOL)
    assert r.clean == pytest.approx(float(f(clean_logits)), abs=TOL)
    assert r.clean > r.corrupted  # the corruption hurts the trained organism's recall


@pytest.mark.parametrize("metric", ["prob", "logit_diff_corrupted"])
def test_str_equals_transformer_lens_patching(organism, sample, pool, metric):
    model = organism.model
    opts = TraceOptions(corruption="str", metric=metric, window=1).validated(organism.n_layers)
    r = trace(organism, sample, pool, opts)
    inp = subject_input(organism, sample)
    corrupted = get_corruption("str").corrupt(organism, inp, pool, opts)
    P, a0 = inp.prompt_len, inp.answer_ids[0]
    clean_tokens = inp.tensor(organism.device)[None]
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(clean_tokens)
        corr_logits = model(corrupted.tokens)
    other = None
    if metric == "logit_diff_corrupted":
        last = corr_logits[0, P - 1].clone()
        last[a0] = -torch.inf
        other = int(last.argmax())
    f = _metric(metric, P, a0, other)
    assert r.clean == pytest.approx(float(f(clean_logits)), abs=TOL)
    assert r.corrupted == pytest.approx(float(f(corr_logits)), abs=TOL)
    # resid_post[l] = resid_pre[l + 1]; TL's row 0 (resid_pre 0, the embeddings) has no counterpart here.
    tl_resid = patching.get_act_patch_resid_pre(model, corrupted.tokens, cache, f)[:, :P].numpy()
    np.testing.assert_allclose(r.array("resid")[:-1], tl_resid[1:], atol=TOL)
    tl_mlp = patching.get_act_patch_mlp_out(model, corrupted.tokens, cache, f)[:, :P].numpy()
    np.testing.assert_allclose(r.array("mlp"), tl_mlp, atol=TOL)
    tl_attn = patching.get_act_patch_attn_out(model, corrupted.tokens, cache, f)[:, :P].numpy()
    np.testing.assert_allclose(r.array("attn"), tl_attn, atol=TOL)


def _naive(handle, inp, corrupted, metric_fn, kind: str, window: int) -> np.ndarray:
    """One full forward per (layer, token) cell, batch = the noise samples, hooks doing the corruption and
    the restoration (as ROME's trace_with_patch)."""
    model = handle.model
    L, P = handle.n_layers, inp.prompt_len
    with torch.no_grad():
        _, clean = model.run_with_cache(inp.tensor(handle.device)[None])
    out = np.zeros((L, P))
    for layer in range(L):
        layers = [layer] if kind == "resid" else list(window_layers(layer, window, L))
        for t in range(P):
            def restore(act, hook, t=t):
                act[:, t] = clean[hook.name][0, t]
                return act

            fwd_hooks = [(hooks.kind_hook(kind, j), restore) for j in layers]
            if corrupted.embed_delta is not None:
                fwd_hooks.append((hooks.EMBED, lambda act, hook: act + corrupted.embed_delta))
            with torch.no_grad():
                logits = model.run_with_hooks(corrupted.tokens, fwd_hooks=fwd_hooks)
            out[layer, t] = float(metric_fn(logits))
    return out


def test_batched_equals_naive_loop(organism, sample, pool):
    # A 1 MB budget forces several chunks per start layer.
    opts = TraceOptions(n_samples=3, window=2, seed=7, memory_budget_mb=1).validated(organism.n_layers)
    r = trace(organism, sample, pool, opts)
    inp = subject_input(organism, sample)
    corrupted = get_corruption("noise").corrupt(organism, inp, pool, opts)
    f = _metric("prob", inp.prompt_len, inp.answer_ids[0])
    for kind in ("resid", "mlp", "attn"):
        np.testing.assert_allclose(r.array(kind), _naive(organism, inp, corrupted, f, kind, 2), atol=TOL,
                                   err_msg=kind)


@pytest.mark.parametrize("arch", ["organism", "llama"])
def test_kv_reuse_groupings_equal_naive_loop(monkeypatch, tmp_path, organism, sample, pool, arch):
    """Runs over positions lo.. that attend to the corrupted run's cached keys/values give the naive scores,
    with one forward per restored token (overhead 0) and with a single group (KV reuse off); on the organism
    (learned positions) and on a tiny Llama (rotary, grouped-query attention)."""
    import analysis.tracing.engine as engine
    from analysis.models import load_model
    from analysis.tracing import SubjectInput
    from tests.hf_fixtures import make_tiny_checkpoint

    if arch == "organism":
        handle, inp = organism, subject_input(organism, sample)
        p = pool
    else:
        handle = load_model(make_tiny_checkpoint("llama", tmp_path / "tiny-llama",
                                                 config_overrides={"num_key_value_heads": 2}), device="cpu")
        ids = (1, 5, 9, 12, 7, 3, 11, 4)
        inp = SubjectInput(ids=ids, prompt_len=7, answer_ids=(4,), subject_range=(2, 4), sample_id="x")
        p = SubjectPool.from_ids([[8, 6], [10, 13], [14, 2]])
    opts = TraceOptions(n_samples=3, window=2, seed=3).validated(handle.n_layers)
    corrupted = get_corruption("noise").corrupt(handle, inp, p, opts)
    f = _metric("prob", inp.prompt_len, inp.answer_ids[0])
    want = {k: _naive(handle, inp, corrupted, f, k, 2) for k in ("resid", "mlp", "attn")}
    for overhead, reuse in [(0.0, engine.KV_REUSE_POS_EMBED), (1e30, ())]:
        monkeypatch.setattr(engine, "FORWARD_OVERHEAD_FLOP", overhead)
        monkeypatch.setattr(engine, "KV_REUSE_POS_EMBED", reuse)
        got = engine.run_trace(handle, inp, corrupted, ("resid", "mlp", "attn"), "prob", 2)
        for kind, arr in want.items():
            np.testing.assert_allclose(got.scores[kind], arr, atol=TOL, err_msg=f"{arch} {kind} {overhead}")
    assert engine.suffix_groups(1, 6, 8, 30, 0.0) == [(1, 2), (2, 3), (3, 4), (4, 5), (5, 6)]
    assert engine.suffix_groups(1, 6, 8, 30, 1e30) == [(1, 6)]


def test_seed_and_determinism(organism, sample, pool):
    opts = TraceOptions(kinds=("resid",), n_samples=3, seed=1)
    a, b = trace(organism, sample, pool, opts), trace(organism, sample, pool, opts)
    assert a.scores == b.scores and a.corrupted == b.corrupted
    c = trace(organism, sample, pool, TraceOptions(kinds=("resid",), n_samples=3, seed=2))
    assert c.scores != a.scores
    assert a.options["noise_std"] == pytest.approx(3 * a.options["embedding_std"])
    s1 = trace(organism, sample, pool, TraceOptions(kinds=("resid",), corruption="str", seed=1))
    s2 = trace(organism, sample, pool, TraceOptions(kinds=("resid",), corruption="str", seed=1))
    assert s1.options["replacement"] == s2.options["replacement"] != sample.subject
    assert len(s1.options["replacement"].split()) == len(sample.subject.split())
    assert all(a != b for a, b in zip(s1.options["replacement"].split(), sample.subject.split(), strict=True))


def test_bad_inputs(small_study, organism, sample, pool):
    moved = Sample(id="x", prompt="Somebody was born in", answer=sample.answer, subject="Nobody Here")
    with pytest.raises(AnalysisInputError, match="not found in prompt"):
        trace(organism, moved, pool)
    no_subject = next(s for s in small_study.samples() if not s.subject)
    with pytest.raises(AnalysisInputError, match="no subject"):
        trace_sample(small_study, "original", no_subject.id, use_store=False)
    with pytest.raises(StudyError, match="unknown sample id 'ghost'"):
        trace_sample(small_study, "original", "ghost")
    with pytest.raises(AnalysisInputError, match="larger than the model's 4 layers"):
        trace(organism, sample, pool, TraceOptions(window=5))
    with pytest.raises(AnalysisInputError, match="unknown corruption"):
        trace(organism, sample, pool, TraceOptions(corruption="blur"))
    with pytest.raises(AnalysisInputError, match="unknown trace kind"):
        trace(organism, sample, pool, TraceOptions(kinds=("heads",)))


def test_store_roundtrip_and_difference(small_study, sample):
    opts = TraceOptions(corruption="str", kinds=("resid", "mlp", "attn"))
    r = trace_sample(small_study, "original", sample.id, opts)
    assert TraceResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert r.model == small_study.fingerprint("original")
    hit = cached_trace(small_study, "original", sample.id, TraceOptions(corruption="str", kinds=("mlp",))
                       .validated(4))
    assert hit is not None and list(hit.scores) == ["mlp"] and hit.scores["mlp"] == r.scores["mlp"]
    other = trace_sample(small_study, "readout_suppression", sample.id, opts)
    d = trace_difference(other, r)
    np.testing.assert_allclose(d.array("resid"), other.array("resid") - r.array("resid"))
    e = trace_difference(other, r, effect=True)
    np.testing.assert_allclose(e.array("mlp"), other.indirect_effect("mlp") - r.indirect_effect("mlp"))


def test_dataset_aie(small_study):
    opts = TraceOptions(corruption="str", kinds=("resid",))
    small_study.store.delete(STORE_KIND, [small_study.fingerprint("original")])  # computed here, not found
    seen: list[float] = []
    a = trace_dataset(small_study, "original", opts, progress=lambda f, m: seen.append(f))
    assert seen and seen[-1] == pytest.approx(1.0)
    assert a.roles == list(TOKEN_ROLES) and a.n_samples == len(small_study.forget)
    assert a.counts["middle subject tokens"] == 0  # two-token names
    assert a.aie["resid"][TOKEN_ROLES.index("middle subject tokens")] == [None] * 4
    assert AIEResult.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    ids = [s.id for s in small_study.forget]
    key = store_key(small_study, opts.validated(4))  # the options and the study's subject pool
    assert len(small_study.store.get_many(STORE_KIND, [a.model], key, ids)) == len(ids)
    again = trace_dataset(small_study, "original", opts, progress=lambda f, m: pytest.fail("recomputed"))
    assert again == a


def test_dataset_keeps_the_traces_it_averaged(small_study):
    """``trace_dataset(...).traces[sid]`` is the sample's own trace (from the store and recomputed), for every
    forget sample it did not skip, and survives serialisation; the average is the average of those traces."""
    opts = TraceOptions(corruption="str", kinds=("resid", "mlp"))
    a = trace_dataset(small_study, "original", opts)
    kept = [s.id for s in small_study.forget if s.id not in a.skipped]
    assert kept and list(a.traces) == kept and a.n_samples == len(kept)
    for sid in kept:
        assert a.traces[sid] == trace_sample(small_study, "original", sid, opts)
        fresh = trace_sample(small_study, "original", sid, opts, use_store=False)
        assert a.traces[sid].scores == fresh.scores and a.traces[sid] == fresh
    back = AIEResult.from_dict(json.loads(json.dumps(a.to_dict())))
    assert back == a and back.traces == a.traces
    d = a.to_dict()
    del d["traces"]  # results stored before AIEResult kept its traces
    assert AIEResult.from_dict(d).traces == {}
    again = average_indirect_effect(list(a.traces.values()), options=a.options, model=a.model, skipped=a.skipped)
    assert again == a
    with pytest.raises(ValueError, match="distinct sample ids"):
        average_indirect_effect([a.traces[kept[0]]] * 2)
    assert average_indirect_effect([a.traces[kept[0]]] * 2, keep_traces=False).traces == {}


def test_choices_come_from_options(small_study, sample, capsys):
    """The CLI's choices are the registry's and options.py's; the renamed metric is the one computed."""
    from analysis.tracing.options import KIND_LABELS, KINDS, METRIC_LABELS, METRICS

    assert CORRUPTIONS.names() == ("noise", "str") and set(CORRUPTIONS.labels()) == set(CORRUPTIONS.names())
    assert set(METRIC_LABELS) == set(METRICS) == {"prob", "logit_diff_corrupted"}
    assert set(KIND_LABELS) == set(KINDS)
    root = str(small_study.root)
    for bad in (["--corruption", "blur"], ["--metric", "logit_diff"]):  # argparse: choices, exit status 2
        with pytest.raises(SystemExit) as exit_:
            main(["trace", root, "--sample", sample.id, "--kind", "resid", *bad])
        assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "choose from 'noise', 'str'" in err and "choose from 'prob', 'logit_diff_corrupted'" in err
    assert main(["trace", root, "--sample", sample.id, "--kind", "resid", "--corruption", "str", "--metric",
                 "logit_diff_corrupted", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["options"]["metric"] == "logit_diff_corrupted" and "other_token" in out["options"]


def test_cli_json(small_study, sample, capsys):
    root = str(small_study.root)
    assert main(["trace", root, "--model", "original", "--sample", sample.id, "--kind", "all", "--corruption",
                  "str", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"tokens", "subject_range", "layers", "clean", "corrupted", "scores"} <= set(out)
    assert set(out["scores"]) == {"resid", "mlp", "attn"}
    assert np.shape(out["scores"]["mlp"]) == (len(out["layers"]), len(out["tokens"]))
    assert main(["trace", root, "--all", "--kind", "resid", "--corruption", "str", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"roles", "layers", "aie", "n_samples"} <= set(out)
    assert np.shape(out["aie"]["resid"]) == (len(TOKEN_ROLES), len(out["layers"]))
    assert main(["trace", root, "--sample", "ghost", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown sample id 'ghost'" in err
    assert main(["trace", root, "--sample", sample.id, "--window", "9", "--kind", "mlp"]) == 2
    assert "larger than the model" in capsys.readouterr().err
    assert main(["trace", root]) == 2
    assert "--sample ID or --all" in capsys.readouterr().err


PAGE = str(Path(__file__).resolve().parent.parent / "app" / "views" / "tracing.py")


@pytest.fixture
def page(small_study, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["streamlit"])
    monkeypatch.setenv("ERASURE_STUDY", str(small_study.root))
    return lambda: AppTest.from_file(PAGE, default_timeout=120)


def test_page(page, small_study):
    small_study.store.delete(STORE_KIND)  # the forget-set average must be computed (then found) here
    at = page().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Causal tracing"
    assert len(at.get("plotly_chart")) == 3  # before, after, difference
    at.radio(key="corruption").set_value("str").run()
    at.button(key="aie_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 4
    at.run()  # now stored: shown without the button
    assert len(at.get("plotly_chart")) == 4 and not at.get("button")

    no_subject = next(s for s in small_study.samples() if not s.subject)
    at.selectbox(key="sample").set_value(no_subject.id).run()
    assert not at.exception and any("no subject" in e.value for e in at.error)


def test_page_query_param(page, small_study):
    at = page()
    at.query_params["sample"] = "ghost"
    at.run()
    assert not at.exception and any("ghost" in e.value for e in at.error)
    at = page()
    at.query_params["sample"] = small_study.forget[1].id
    at.run()
    assert not at.exception and not at.error and at.selectbox(key="sample").value == small_study.forget[1].id
