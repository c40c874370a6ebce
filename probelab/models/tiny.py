"""Tiny random decoder models with a byte-level tokenizer, built in memory (no files, no network).

Unit tests, the CLI's quick paths and documentation examples use them: they run in milliseconds
and exercise the same code as a real checkpoint.
"""
from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

SPECIALS = ["<|bos|>", "<|eos|>", "<|pad|>"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: one token per UTF-8 byte, plus BOS/EOS/PAD (vocab 259). Adds BOS."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=SPECIALS[0], eos_token=SPECIALS[1], pad_token=SPECIALS[2]
    )
    fast.add_bos_token = True
    return fast


def _tiny_dims(num_layers: int, hidden: int) -> dict:
    return dict(
        vocab_size=len(pre_tokenizers.ByteLevel.alphabet()) + len(SPECIALS),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=258,
    )


def tiny_llama(num_layers: int = 4, hidden: int = 64, seed: int = 0) -> LlamaForCausalLM:
    """A random Llama (fp32, eval mode) with ``num_layers`` blocks of width ``hidden``."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(**_tiny_dims(num_layers, hidden), tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def tiny_qwen2(num_layers: int = 4, hidden: int = 64, seed: int = 0) -> Qwen2ForCausalLM:
    """A random Qwen2 (a second decoder architecture, with attention biases)."""
    torch.manual_seed(seed)
    cfg = Qwen2Config(**_tiny_dims(num_layers, hidden), tie_word_embeddings=False)
    return Qwen2ForCausalLM(cfg).eval()
