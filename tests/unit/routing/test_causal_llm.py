"""Causal-LLM router on a tiny random-initialised Llama: one forward pass, label-token logits."""

from __future__ import annotations

import numpy as np
import pytest

import routing
import routing.routers  # noqa: F401
from routing.routers.causal_llm import CausalLLMRouter, label_token_ids
from routing.training.causal import train_causal
from routing.training.data import battles_from_records


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from routing.training.tiny import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("llama") / "base")


def test_scores_equal_a_manual_forward_and_never_generate(llama, monkeypatch):
    import torch

    router = routing.get_router(f"causal_llm:{llama},batch_size=2")
    assert isinstance(router, CausalLLMRouter)
    prompts = ["What is 2+2?", "Write a long proof of Fermat's last theorem for n = 3, with all steps.", "hi"]
    model = router.model
    monkeypatch.setattr(model, "generate", lambda *a, **k: pytest.fail("generate must not be called"))
    probs = router.probabilities(prompts)
    ids = router.encode(prompts)
    label_ids = label_token_ids(router.tokenizer, ["1", "2", "3"])
    assert router.label_ids == label_ids
    for i, seq in enumerate(ids):
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([seq])).logits[0, -1, label_ids]
        manual = torch.softmax(logits.float(), -1).numpy()
        np.testing.assert_allclose(probs[i], manual, atol=1e-5)
    np.testing.assert_allclose(router.score(prompts), probs[:, 2])
    # the template's answer cue survives truncation of a long prompt
    router.max_length = 80
    long_ids = router.encode(["word " * 500])[0]
    assert len(long_ids) == 80
    tail = router.tokenizer(router.template.partition("{prompt}")[2], add_special_tokens=False)["input_ids"]
    assert long_ids[-1 - len(tail):-1] == tail  # ...tail, then the tokenizer's closing [SEP]


def test_fine_tuning_moves_the_label_logits(llama, tmp_path):
    records = []
    for i in range(24):
        records.append({"prompt": f"integrate the function number {i}", "scores": {"big": 1, "small": 0}})
        records.append({"prompt": f"say hi to person {i}", "scores": {"big": 0, "small": 1}})
    battles = battles_from_records(records)
    report = train_causal(battles, tmp_path / "ck", base=str(llama), strong="big", weak="small", epochs=4,
                          lr=3e-3, batch_size=8, max_length=64, num_threads=1)
    assert report["history"][-1]["loss"] < report["history"][0]["loss"]
    router = routing.get_router(f"causal_llm:{tmp_path / 'ck'}")
    assert router.config["router"] == "causal_llm" and router.strong == "big"
    s = router.score(["integrate the function number 77", "say hi to person 77"])
    assert s[0] > s[1]
    swapped = CausalLLMRouter(str(tmp_path / "ck"), strong="small", weak="big")
    np.testing.assert_allclose(swapped.score(["say hi to person 1"]),
                               router.probabilities(["say hi to person 1"])[:, 0], atol=1e-6)


class SplitSpaceTokenizer:
    """Mimics SmolLM2/Llama-3 digits: " 3" -> [" ", "3"]."""

    vocab = {" ": 5, "1": 11, "2": 12, "3": 13, "x": 20}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.vocab[c] for c in text]}


class MergedSpaceTokenizer:
    """Mimics GPT-2 BPE: " 3" is one token."""

    vocab = {" 1": 31, " 2": 32, " 3": 33, "1": 11, "2": 12, "3": 13}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.vocab[text]]}


def test_label_tokens_and_cue():
    from routing.routers.causal_llm import label_tokens_and_cue

    assert label_tokens_and_cue(SplitSpaceTokenizer(), ["1", "2", "3"]) == ([11, 12, 13], [5])
    assert label_tokens_and_cue(MergedSpaceTokenizer(), ["1", "2", "3"]) == ([31, 32, 33], [])
    with pytest.raises(ValueError):
        label_tokens_and_cue(SplitSpaceTokenizer(), ["1", "1", "3"])
