"""Smoke test of benchmarks/bench_scaling.py: every curve and the large-model path at their smallest size (one
point each, float32 on the CPU), checking the returned structure and that ours equal the naive references."""

from __future__ import annotations

import pytest

from benchmarks import bench_scaling as bs
from benchmarks.bench_tracing import gpt2_small_random


def test_tracing_curve_one_point_matches_rome_loop():
    (p,) = bs.tracing_curve("cpu", layers=(2,), tokens=(6,), naive_max_cells=36, noise=2)
    assert (p.layers, p.tokens, p.cells) == (2, 6, 36)
    assert p.naive_s is not None and p.ratio is not None and p.ours_s > 0
    assert p.max_abs_diff is not None and p.max_abs_diff < 1e-6
    (q,) = bs.tracing_curve("cpu", layers=(2,), tokens=(6,), naive_max_cells=35, noise=2)
    assert q.naive_s is None and q.ratio is None and q.max_abs_diff is None


def test_eap_curve_one_point_matches_batch_of_one():
    handle, _, _ = gpt2_small_random("cpu", n_layers=2, name="tiny", d_model=32, n_heads=4, d_mlp=64, d_vocab=300,
                                     n_ctx=64)
    handle = bs.with_word_tokenizer(handle)
    assert len(handle.tokenizer) == 300
    prompts, answers = bs.random_pairs(handle, 4, prompt_words=5)
    (e,) = bs.eap_curve(handle, prompts, answers, ns=(3,))
    assert (e.n, e.batch_size) == (3, 3) and e.ours_s > 0 and e.ref_s > 0
    assert e.max_abs_diff <= bs.EAP_REL_TOL * e.max_abs_score
    with pytest.raises(ValueError, match="needs 5 samples"):
        bs.eap_curve(handle, prompts, answers, ns=(5,))
    md = bs.markdown([], [e], "cpu", "tiny", "4 random pairs", "skipped")
    assert "| 3 | 3 |" in md and "## Large models" in md


def test_large_path_builds_and_matches_at_tiny_scale():
    import torch

    specs = bs.large_specs(1.0)
    assert [n for _, n, _ in specs] == [12, 16]
    assert specs[1][2]["d_model"] == 2048 and specs[1][2]["dtype"] == torch.bfloat16
    rows = bs.large_rows("cpu", scale=0.03, dtype=torch.float32, tokens=8, batch=3, noise=2)
    assert [r.analysis for r in rows] == ["causal tracing", "answer scoring"] * 2
    assert all(r.reference_s > 0 and r.ours_s > 0 and r.max_abs_diff < 1e-3 for r in rows)
    assert "Llama" in rows[2].model
