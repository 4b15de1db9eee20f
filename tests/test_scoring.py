import numpy as np
import pytest
import torch

from analysis.errors import AnalysisInputError
from analysis.scoring import encode_pair, make_batch, score_answers, top_next_tokens


def test_encode_pair_prefix_and_bos(organism):
    tok = organism.tokenizer
    p, a = encode_pair(tok, "the pet of", "cat", prepend_bos=True)
    assert p[0] == tok.bos_token_id and len(p) == 4 and len(a) == 1
    assert tok.decode(a) == "cat"


def test_scores_match_manual_logprob(organism, small_study):
    samples = small_study.forget[:5] + small_study.retain[:5]
    sc = score_answers(organism, [s.prompt for s in samples], [s.answer for s in samples], batch_size=3)
    for i, s in enumerate(samples):  # hand-computed, one unpadded forward per sample
        p, a = encode_pair(organism.tokenizer, s.prompt, s.answer, True)
        logits = organism.model(torch.tensor([p + a]), return_type="logits")[0]
        lp = torch.log_softmax(logits, -1)
        manual = sum(float(lp[len(p) - 1 + j, t]) for j, t in enumerate(a))
        assert sc.logprob_sum[i] == pytest.approx(manual, abs=1e-4)
        assert sc.correct[i] == all(int(logits[len(p) - 1 + j].argmax()) == t for j, t in enumerate(a))
    assert np.allclose(sc.prob, np.exp(sc.logprob_sum))


def test_multi_token_answer_is_padded_correctly(organism):
    prompts = ["Counting : one two three", "Counting : one"]
    answers = ["four five six", "two"]
    batched = score_answers(organism, prompts, answers)
    single = [score_answers(organism, [p], [a]) for p, a in zip(prompts, answers, strict=True)]
    assert batched.logprob_sum == pytest.approx([s.logprob_sum[0] for s in single], abs=1e-5)
    b = make_batch(organism, prompts, answers)
    assert b.answer_lens.tolist() == [3, 1] and int(b.target_mask.sum()) == 4


def test_bad_inputs(organism):
    with pytest.raises(AnalysisInputError, match="empty prompt"):
        score_answers(organism, [" "], ["cat"])
    with pytest.raises(AnalysisInputError, match="empty answer"):
        score_answers(organism, ["the pet of"], [""])
    with pytest.raises(AnalysisInputError, match="2 prompts but 1 answers"):
        score_answers(organism, ["a", "b"], ["c"])
    with pytest.raises(AnalysisInputError, match="longer than the model's context"):
        top_next_tokens(organism, "cat " * 100)


def test_top_next_tokens_sum_to_at_most_one(organism, small_study):
    s = small_study.retain[0]
    top = top_next_tokens(organism, s.prompt, k=5)
    assert len(top) == 5 and sum(p for _, p in top) <= 1 + 1e-6
    assert [p for _, p in top] == sorted([p for _, p in top], reverse=True)
