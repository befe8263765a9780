"""A tiny random BERT saved as a Hugging Face checkpoint folder (weights, config, tokenizer),
for the offline tests of rmtlib.transformers. Seeded: the same arguments give the same weights."""
import torch


def save_tiny_bert(path, vocab, *, hidden: int, layers: int, ffn: int, positions: int, heads: int = 2):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                                  num_attention_heads=heads, intermediate_size=ffn,
                                  max_position_embeddings=positions)
    transformers.BertModel(cfg).save_pretrained(path)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizer(str(path / "vocab.txt")).save_pretrained(path)
    return path
