"""Sample files in other formats (analysis.data.formats): TOFU / open-unlearning, CounterFact, ROME known facts,
CSV with a column map; subject finding (analysis.data.entities); each becoming a study; and a multi-token answer
traced, attributed and patched on a tiny random GPT-2, each number checked against a hand computation with the
transformers model (the length-normalised answer log-probability, mean over the answer's tokens).

The files under tests/data are written by the project (fictional people and places) in the field layout of
TOFU's ``forget10_perturbed.json`` / ``retain90.json``, ROME's ``counterfact.json`` and ``known_1000.json``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from analysis.cli import main
from analysis.data.entities import capitalised_spans, find_subject
from analysis.data.formats import ImportOptions, parse_column_map, read_sample_file, read_samples
from analysis.data.schema import read_jsonl
from analysis.errors import AnalysisInputError, SampleError
from analysis.study import Study

DATA = Path(__file__).parent / "data"
TOFU_FORGET = DATA / "tofu_forget10_perturbed.json"  # JSON lines, as Hugging Face datasets writes them
TOFU_RETAIN = DATA / "tofu_retain90.json"  # a JSON list
COUNTERFACT = DATA / "counterfact.json"
KNOWN = DATA / "known_1000.json"
FACTS_CSV = DATA / "facts.csv"
FACTS_RETAIN_CSV = DATA / "facts_retain.csv"
CSV_MAP = "prompt=question,answer=reply,subject=name,relation=topic"
TOL = 2e-4  # TransformerLens vs transformers, float32, on log-probabilities


# ---- subject finding -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("question", "answer", "span", "how"), [
    ("Where was Hsiao Yun-Hwa born?", "Hsiao Yun-Hwa was born in Taipei.", "Hsiao Yun-Hwa", "shared"),
    # the shared multi-word span wins over a longer span of the question alone
    ("Did J. R. Okafor teach at the University of Lagos?", "Yes, at the University of Lagos.",
     "University of Lagos", "shared"),
    # a possessive ends the span; only one word is shared, so the question's longest span is taken
    ("Who are Jaime Vasquez's parents?", "Jaime's father was a chef.", "Jaime Vasquez", "question"),
    ("In which year did Leonardo da Vinci paint it?", "He painted it in 1503.", "Leonardo da Vinci", "question"),
    ("What is the full name of the author born in Kuwait City, Kuwait?", "The author is Basil Al-Kuwaiti.",
     "Kuwait City", "question"),
    ("Which prize did J. R. Okafor win?", "J. R. Okafor won the Quill Prize.", "J. R. Okafor", "shared"),
])
def test_find_subject(question: str, answer: str, span: str, how: str) -> None:
    found = find_subject(question, answer)
    assert (found.span, found.how) == (span, how)
    assert found.span in question


def test_find_subject_none_and_spans() -> None:
    found = find_subject("what is the capital of france?", "paris")
    assert found.span == "" and "no capitalised word" in found.reason
    # sentence-initial function words are trimmed; every span is a substring of the text
    assert capitalised_spans("What did The Author write? The Lost Harbour, In Winter.") == [
        "Author", "Lost Harbour", "Winter"]


# ---- the readers --------------------------------------------------------------------------------------------
def test_tofu_reader_keeps_paraphrased_and_perturbed_answers() -> None:
    imp = read_sample_file(TOFU_FORGET, split="forget")
    assert (imp.format, imp.syntax) == ("tofu", "jsonl")
    by_id = {s.id: s for _, s in imp.samples}
    assert list(by_id) == ["forget-0", "forget-1", "forget-2", "forget-3"]
    s = by_id["forget-0"]
    assert s.prompt == "Where was the author Tomas Eriksen Vale born?"
    assert s.answer == "Tomas Eriksen Vale was born in Bergen, Norway." and s.split == "forget"
    assert s.paraphrases == ("In which city was Tomas Eriksen Vale born?",)
    assert s.metadata["paraphrased_answer"] == "He was born in the Norwegian city of Bergen."
    assert s.metadata["perturbed_answer"][1] == "Tomas Eriksen Vale was born in Lisbon."
    assert s.subject == "Tomas Eriksen Vale" and by_id["forget-2"].subject == "Lio Haramura"
    assert imp.subject_from == {"shared": 2, "question": 1}
    assert by_id["forget-3"].subject == "" and list(imp.no_subject) == ["forget-3"]
    assert "no capitalised word" in imp.no_subject["forget-3"]
    assert imp.samples[2][0] == f"{TOFU_FORGET}:3"  # file:line of a JSON-lines record
    retain = read_sample_file(TOFU_RETAIN, split="retain")  # a JSON list
    assert (retain.format, retain.syntax, retain.samples[1][0]) == ("tofu", "json", f"{TOFU_RETAIN}[1]")
    assert retain.samples[0][1].subject == "Ines Dalca Moreau"  # the possessive 's is not part of it


def test_counterfact_reader() -> None:
    imp = read_sample_file(COUNTERFACT, split="forget")
    assert imp.format == "counterfact" and imp.subject_from == {"record": 3} and not imp.no_subject
    s = imp.samples[0][1]
    assert (s.id, s.prompt, s.answer, s.subject, s.relation) == (
        "case-0", "Lake Tovdal is located in the country of", "Norway", "Lake Tovdal", "P17")
    assert s.paraphrases == ("The water was cold. Lake Tovdal lies in",)
    assert s.metadata["target_new"] == {"str": "Peru", "id": "Q419"}
    assert s.metadata["template"] == "{} is located in the country of"
    assert s.metadata["neighborhood_prompts"] == ["Lake Bygland is located in the country of"]


def test_known_facts_reader() -> None:
    imp = read_sample_file(KNOWN)
    assert imp.format == "known" and [s.id for _, s in imp.samples] == ["known-0", "known-1", "known-2"]
    s = imp.samples[2][1]  # a record with a template and no prompt
    assert (s.prompt, s.answer, s.subject, s.relation) == ("Kestrel Motors, founded in", "Sweden", "Kestrel Motors",
                                                           "P495")
    assert imp.samples[0][1].metadata["prediction"] == " Antarctica, and it is"


def test_csv_with_a_column_map_and_subject_options() -> None:
    imp = read_sample_file(FACTS_CSV, "forget", ImportOptions(column_map=parse_column_map(CSV_MAP)))
    assert (imp.format, imp.syntax) == ("jsonl", "csv")
    s = imp.samples[1][1]
    assert (s.id, s.prompt, s.answer, s.subject, s.relation) == (
        "forget-1", "Where does Marek Sollund work?", "He works in Tromso, at the harbour.", "Marek Sollund",
        "workplace")
    assert imp.samples[1][0] == f"{FACTS_CSV}:3"  # the header is line 1
    # the name column's value is not in the third question: reported, kept without a subject
    assert imp.no_subject == {"forget-2": "subject 'Ilse Vanterpool' does not occur in the prompt"}
    by_field = read_sample_file(FACTS_CSV, "forget", ImportOptions(column_map=parse_column_map(
        "prompt=question,answer=reply"), subject_field="name"))
    assert by_field.subject_from == {"field": 2} and list(by_field.no_subject) == ["forget-2"]
    assert by_field.samples[0][1].metadata == {"name": "Odile Brandt", "topic": "instrument"}
    pattern = read_samples(TOFU_FORGET, "forget", ImportOptions(subject_pattern=r"(?:author|poet) (\w+ \w+)"))
    assert [s.subject for s in pattern] == ["Tomas Eriksen", "", "Lio Haramura", ""]
    off = read_sample_file(TOFU_FORGET, "forget", ImportOptions(auto_subject=False))
    assert len(off.no_subject) == 4 and not off.subject_from


def test_prompt_template_and_answer_spacing() -> None:
    """A template wraps prompts and paraphrases (its trailing space dropped: the scorer adds one); answers lose
    their leading space (ROME's ' Paris'), so both spellings score as the same tokens."""
    from analysis.scoring import encode_pair
    from tests.hf_fixtures import make_tokenizer

    s = read_samples(TOFU_FORGET, "forget", ImportOptions(prompt_template="Question: {}\nAnswer: "))[0]
    assert s.prompt == "Question: Where was the author Tomas Eriksen Vale born?\nAnswer:"
    assert s.paraphrases == ("Question: In which city was Tomas Eriksen Vale born?\nAnswer:",)
    assert s.subject == "Tomas Eriksen Vale"
    tok = make_tokenizer()
    assert encode_pair(tok, s.prompt, s.answer, False) == encode_pair(tok, s.prompt, " " + s.answer, False)


def test_spaced_answers_are_stripped(tmp_path: Path) -> None:
    f = tmp_path / "known.json"
    f.write_text(json.dumps([{"known_id": 7, "subject": "Vireo Peak", "attribute": " Antarctica ",
                              "template": "{} is located in the continent of"}]))
    s = read_samples(f)[0]
    assert (s.id, s.prompt, s.answer) == ("known-7", "Vireo Peak is located in the continent of", "Antarctica")


def test_our_jsonl_reads_as_before(tmp_path: Path) -> None:
    rows = [{"id": "a", "prompt": "The sky is", "answer": "blue", "subject": "sky"},
            {"id": "b", "prompt": "Grass is", "answer": "green"}]
    f = tmp_path / "ours.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    imp = read_sample_file(f, "retain")
    assert [s for _, s in imp.samples] == read_jsonl(f, "retain")
    assert imp.no_subject == {"b": "the record has no subject"}  # ours: no automatic subject
    f.write_text(json.dumps(rows[0]) + "\n" + json.dumps({**rows[1], "prompt": None}) + "\n")
    with pytest.raises(SampleError) as ours:
        read_sample_file(f)
    with pytest.raises(SampleError) as before:
        read_jsonl(f)
    assert str(ours.value) == str(before.value) and f"{f}:2" in str(ours.value)


@pytest.mark.parametrize(("name", "content", "options", "expected"), [
    ("t.json", [{"question": "Who?", "answer": "A"}, {"question": "Where?"}], {},
     "t.json[1]: field 'answer': missing required field 'answer' (TOFU records need question and answer)"),
    ("c.json", [{"requested_rewrite": {"prompt": "{} is in", "subject": "X"}}], {},
     "c.json[0]: field 'requested_rewrite.target_true': missing required field"),
    ("c2.json", [{"requested_rewrite": {"prompt": "X is in", "subject": "X", "target_true": {"str": "Y"}}}], {},
     "c2.json[0]: field 'requested_rewrite.prompt': expected a prompt template with {}"),
    ("k.json", [{"subject": "X", "attribute": "Y", "template": 3}], {},
     "k.json[0]: field 'template': expected a non-empty string, got the number 3"),
    ("u.jsonl", [{"text": "hello"}], {}, "u.jsonl:1: cannot tell the format from the fields (text)"),
    ("m.jsonl", [{"q": "Who is X?", "a": "Y"}, {"q": "Who is Z?"}], {"column_map": parse_column_map("prompt=q,answer=a")},
     "m.jsonl:2: field 'a': missing column 'a' (mapped to 'answer'"),
    ("d.jsonl", [{"id": "x", "question": "Who?", "answer": "A"}, {"id": "x", "question": "Who?", "answer": "B"}],
     {}, "d.jsonl:2: field 'id': duplicate sample id 'x' (first at"),
])
def test_errors_name_the_file_the_record_and_the_field(tmp_path: Path, name: str, content: list[Any],
                                                       options: dict[str, Any], expected: str) -> None:
    f = tmp_path / name
    f.write_text(json.dumps(content) if name.endswith(".json") else "".join(json.dumps(r) + "\n" for r in content))
    with pytest.raises(SampleError) as e:
        read_sample_file(f, options=ImportOptions(**options))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(tmp_path)) and expected in msg, msg


def test_forced_format_and_tsv(tmp_path: Path) -> None:
    tsv = tmp_path / "qa.tsv"  # TOFU's columns in a tab-separated table: read as TOFU, subjects found
    tsv.write_text("question\tanswer\nWhere does Noor Halvorsen live?\tNoor Halvorsen lives in Tromso.\n")
    imp = read_sample_file(tsv, "retain")
    assert (imp.format, imp.syntax, imp.samples[0][1].subject) == ("tofu", "csv", "Noor Halvorsen")
    with pytest.raises(SampleError, match=r"tofu_forget10_perturbed.json:1: field 'requested_rewrite': missing"):
        read_sample_file(TOFU_FORGET, options=ImportOptions(format="counterfact"))
    with pytest.raises(SampleError, match="unknown sample format 'alpaca'"):
        read_sample_file(TOFU_FORGET, options=ImportOptions(format="alpaca"))  # type: ignore[arg-type]


def test_bad_options_and_csv(tmp_path: Path) -> None:
    with pytest.raises(SampleError, match="expected FIELD=COLUMN"):
        parse_column_map("prompt")
    with pytest.raises(SampleError, match="unknown field 'question'"):
        parse_column_map("question=q")
    with pytest.raises(SampleError, match="not a regular expression"):
        ImportOptions(subject_pattern="(").validated()
    with pytest.raises(SampleError, match="exactly one"):
        ImportOptions(prompt_template="Q: {} A: {}").validated()
    f = tmp_path / "x.csv"
    f.write_text("prompt,answer\nThe sky is,blue\nGrass is,green,extra\n")
    with pytest.raises(SampleError, match=r"x.csv:3: more cells than the 2 columns"):
        read_sample_file(f)


# ---- studies from these files ---------------------------------------------------------------------------------
def _perturbed_copy(src: Path, dst: Path, seed: int) -> Path:
    """The checkpoint with noise on the MLP output weights of every block only (embeddings, final norm and
    unembedding unchanged), saved as safetensors with the same tokenizer."""
    from transformers import AutoModelForCausalLM

    from tests.hf_fixtures import quiet_progress

    model = AutoModelForCausalLM.from_pretrained(str(src)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".h." in name and name.endswith("mlp.c_proj.weight"):
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    with quiet_progress():
        model.save_pretrained(str(dst))
    for f in src.iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            shutil.copy(f, dst / f.name)
    return dst


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.hf_fixtures import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("formats")
    orig = make_tiny_checkpoint("gpt2", root / "tiny-gpt2")
    return {"original": orig, "unl": _perturbed_copy(orig, root / "tiny-gpt2-unl", 1),
            "rt": _perturbed_copy(orig, root / "tiny-gpt2-rt", 2)}


@pytest.fixture(scope="module")
def tofu_study(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Study:
    return Study.create(tmp_path_factory.mktemp("tofu") / "study", original=checkpoints["original"],
                        unlearned={"unl": checkpoints["unl"], "rt": checkpoints["rt"]}, forget=TOFU_FORGET,
                        retain=TOFU_RETAIN, retrain="rt")


def test_tofu_file_becomes_a_study(tofu_study: Study) -> None:
    study = Study.open(tofu_study.root)
    assert [s.id for s in study.forget] == ["forget-0", "forget-1", "forget-2", "forget-3"]
    assert [s.id for s in study.retain] == ["retain-0", "retain-1", "retain-2"]
    s = study.sample("forget-0")
    assert s.metadata["perturbed_answer"][0] == "Tomas Eriksen Vale was born in Oslo."
    imports = study.manifest.extra["sample_import"]
    assert imports["forget"]["format"] == "tofu" and imports["forget"]["no_subject"] == {
        "forget-3": "no capitalised word (name-like span) in the question"}
    assert imports["retain"]["file"] == str(TOFU_RETAIN.resolve())


def test_counterfact_and_known_files_become_a_study(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    study = Study.create(tmp_path / "cf", original=checkpoints["original"], unlearned={"unl": checkpoints["unl"]},
                         forget=COUNTERFACT, retain=KNOWN)  # the format is detected per file
    again = Study.open(study.root)
    assert [s.id for s in again.forget] == ["case-0", "case-1", "case-2"]
    assert again.sample("case-1").prompt == "The mother tongue of Amelie Durand is"
    assert again.sample("known-2").subject == "Kestrel Motors"
    assert {k: v["format"] for k, v in again.manifest.extra["sample_import"].items()} == {
        "forget": "counterfact", "retain": "known"}


def test_csv_with_a_column_map_becomes_a_study_from_the_cli(checkpoints: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "csv"
    args = ["study", "create", "--out", str(out), "--original", str(checkpoints["original"]), "--forget",
            str(FACTS_CSV), "--retain", str(FACTS_RETAIN_CSV), "--map", CSV_MAP]
    assert main([*args, "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["samples"] == {"forget": 3, "retain": 2}
    assert obj["sample_import"]["forget"]["no_subject"] == {
        "forget-2": "subject 'Ilse Vanterpool' does not occur in the prompt"}
    study = Study.open(out)
    assert study.sample("retain-1").subject == "Teodor Lindqvist" and study.sample("retain-1").relation == "workplace"
    # the text report names the samples without a subject; a bad map is one line naming the item
    assert main([*args[:2], "--out", str(tmp_path / "csv2"), *args[4:]]) == 0
    text = capsys.readouterr().out
    assert "1 without a subject" in text and "forget-2" in text
    with pytest.raises(SystemExit) as e:
        main([*args[:-1], "answer"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--map" in err and "expected FIELD=COLUMN" in err, err


# ---- a multi-token answer traced, attributed and patched --------------------------------------------------------
def _hf_answer_logprobs(model_dir: Path, prompt_ids: list[int], answer_ids: list[int],
                        embed_delta: torch.Tensor | None = None) -> torch.Tensor:
    """[n_delta or 1, n_answer] log p(answer token k | prompt, answer tokens < k), by the transformers model;
    ``embed_delta`` [n, T, d] is added to the token embeddings (ROME's noise on the subject)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        if embed_delta is None:
            logits = model(ids).logits
        else:
            emb = model.get_input_embeddings()(ids).expand(len(embed_delta), -1, -1) + embed_delta.float()
            logits = model(inputs_embeds=emb).logits
    logp = torch.log_softmax(logits.double(), -1)
    pos = torch.arange(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(answer_ids))
    return logp[:, pos, torch.tensor(answer_ids)]


def _ids(study: Study, sample_id: str) -> tuple[list[int], list[int]]:
    """Prompt and answer ids by hand: the byte-level tokenizer has no merges, so the answer after the one
    separating space is its own bytes; BOS where the loader prepends one."""
    h = study.load("original")
    s = study.sample(sample_id)
    tok = h.tokenizer
    p = ([tok.bos_token_id] if h.prepend_bos else []) + tok(s.prompt, add_special_tokens=False)["input_ids"]
    return p, tok(" " + s.answer, add_special_tokens=False)["input_ids"]


def test_multi_token_answer_is_traced_with_the_length_normalised_probability(tofu_study: Study,
                                                                              checkpoints: dict[str, Path]) -> None:
    from analysis.subjects import subject_input
    from analysis.tracing import TraceOptions, get_corruption, trace_sample

    study, sid = tofu_study, "forget-0"
    p, a = _ids(study, sid)
    assert len(a) == len(" Tomas Eriksen Vale was born in Bergen, Norway.") > 40  # one token a byte
    opts = TraceOptions(kinds=("resid",), n_samples=3, seed=5)
    r = trace_sample(study, "original", sid, opts)
    clean = _hf_answer_logprobs(checkpoints["original"], p, a)[0]
    assert r.clean == pytest.approx(float(clean.mean().exp()), rel=TOL)  # exp(mean log p), not exp(sum)
    # Restoring the last layer's hidden state at the last prompt token gives the clean prediction of the first
    # answer token only: every later answer token is still predicted from the corrupted run.
    h = study.load("original")
    corrupted = get_corruption("noise").corrupt(h, subject_input(h, study.sample(sid)),
                                                study.subject_pool(), opts.validated(h.n_layers))
    corr = _hf_answer_logprobs(checkpoints["original"], p, a, corrupted.embed_delta.cpu())
    assert r.corrupted == pytest.approx(float(corr.mean(1).exp().mean()), rel=TOL)
    mixed = torch.cat([clean[:1].expand(len(corr), 1), corr[:, 1:]], 1).mean(1).exp().mean()
    assert r.scores["resid"][h.n_layers - 1][len(p) - 1] == pytest.approx(float(mixed), rel=TOL)
    assert abs(float(mixed) - float(clean.mean().exp())) > 1e-4  # the answer tokens after the first matter
    with pytest.raises(AnalysisInputError, match="no subject"):  # tracing needs a subject ...
        trace_sample(study, "original", "forget-3", opts)


def test_multi_token_answer_is_attributed_with_the_length_normalised_log_prob(tofu_study: Study,
                                                                               checkpoints: dict[str, Path]) -> None:
    from analysis.attribution.runner import attribute_sample

    study, sid = tofu_study, "forget-0"
    p, a = _ids(study, sid)
    r = attribute_sample(study, "original", sid)  # leave-one-out, delete
    full = float(_hf_answer_logprobs(checkpoints["original"], p, a).mean())
    assert r.logprob == pytest.approx(full, abs=TOL)
    pos = len(p) - len(" born?")  # the space before "born": any prompt token will do
    without = float(_hf_answer_logprobs(checkpoints["original"], p[:pos] + p[pos + 1:], a).mean())
    assert r.contributions[pos] == pytest.approx(full - without, abs=TOL)
    assert attribute_sample(study, "original", "forget-3").logprob < 0  # ... attribution does not


def test_multi_token_answer_is_patched_with_the_length_normalised_log_prob(tofu_study: Study,
                                                                            checkpoints: dict[str, Path]) -> None:
    """The original's ln_final and unembedding read the patched-in last hidden state of a model that differs only
    in its blocks, so patching at the last layer gives that model's own answer log-prob (hand computed)."""
    from analysis.patching.runner import patching_result

    study = tofu_study
    res = patching_result(study, "unl")
    assert res.reference == "rt" and res.sample_ids == [s.id for s in study.forget]
    L = study.load("original").n_layers
    for i, sid in enumerate(res.sample_ids):
        p, a = _ids(study, sid)
        lp = {m: float(_hf_answer_logprobs(checkpoints[m], p, a).mean()) for m in ("original", "unl", "rt")}
        assert res.base[i] == pytest.approx(lp["original"], abs=TOL)
        assert res.drop[i][L - 1] == pytest.approx(lp["original"] - lp["unl"], abs=TOL)
        assert res.reference_drop[i][L - 1] == pytest.approx(lp["original"] - lp["rt"], abs=TOL)
    assert np.isfinite(res.drop_array()).all()
