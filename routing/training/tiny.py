"""Tiny random-initialised HF models for tests and examples.

No pretrained weights can be downloaded on the build machines, so the ``bert`` and
``causal_llm`` code paths are exercised on miniature configs that reuse the MiniLM
tokenizer (which is installed locally). They are meaningless as models but structurally
identical to real ones: same classes, same save/load, same forward.
"""

from __future__ import annotations

from pathlib import Path


def _tokenizer():
    from transformers import AutoTokenizer

    from routing.embeddings import minilm_path

    return AutoTokenizer.from_pretrained(minilm_path())


def make_tiny_encoder(out: str | Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A 2-layer BERT with the MiniLM vocabulary, saved with its tokenizer to ``out``."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    tok = _tokenizer()
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=512,
    )
    out = Path(out)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_tiny_llama(out: str | Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A 2-layer Llama causal LM with the MiniLM (WordPiece) vocabulary, saved to ``out``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = _tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
        tie_word_embeddings=False,
    )
    out = Path(out)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out
