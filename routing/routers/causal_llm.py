"""Causal-LLM classifier router: one forward pass, reading the logits of three label tokens.

RouteLLM's causal router calls ``generate`` and parses the text. Here the prompt is put in
a template that ends where the answer starts ("...Answer:"), the model runs ONE forward
pass over a length-bucketed, right-padded batch, and the hidden state at each row's last
real token is multiplied by the output-embedding rows of the label tokens only (three
rows, not the whole vocabulary). A softmax over those three logits gives
P(weak better), P(tie), P(strong better); the score is the last.

The path may be a router checkpoint (``router.json`` + ``model/``, written by
``routebatch train causal_llm``) or any local HF causal-LM directory, used zero-shot with
the default template (``causal_llm:/models/my-llm``). Long prompts are truncated in the
middle of the template (the prompt part), so the "Answer:" cue is never cut off.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from routing.base import Router
from routing.routers import _checkpoint as ckpt
from routing.routers import _hf

LABELS = ["weak_better", "tie", "strong_better"]
DEFAULT_LABEL_TOKENS = ["1", "2", "3"]
DEFAULT_TEMPLATE = (
    "Would a much stronger AI model answer the request below clearly better than a small one?\n\n"
    "Request: {prompt}\n\n"
    "Reply 1 if the small model is as good, 2 if they are about equal, 3 if the strong model is clearly better.\n"
    "Answer:"
)


class CausalLLMRouter(Router):
    name = "causal_llm"

    def __init__(
        self,
        path: str | None = None,
        strong: str | None = None,
        weak: str | None = None,
        batch_size: Any = 8,
        max_length: Any = None,
        device: str | None = None,
        num_threads: Any = None,
        dtype: str | None = None,
        template: str | None = None,
    ) -> None:
        p = Path(path).expanduser() if path else None
        if p is not None and not (p / ckpt.CONFIG_NAME).exists() and (p / "config.json").exists():
            # a plain HF model directory: zero-shot with the default template
            self.path = p
            self.model_dir = p
            self.config: dict[str, Any] = {
                "router": "causal_llm",
                "strong": strong or "strong",
                "weak": weak or "weak",
                "base": str(p),
            }
        else:
            self.path = ckpt.resolve("causal_llm", path)
            self.config = ckpt.read_config(self.path, expect="causal_llm")
            self.model_dir = self.path / "model"
        self.config.setdefault("models", [self.config["strong"], self.config["weak"]])
        self.strong, self.weak = ckpt.pick_pair(self.config, strong, weak)
        self._column = 2 if self.strong == self.config["strong"] else 0
        self.template = template or self.config.get("template", DEFAULT_TEMPLATE)
        self.label_tokens: list[str] = list(self.config.get("label_tokens", DEFAULT_LABEL_TOKENS))
        self.batch_size = int(batch_size)
        self.max_length = int(max_length or self.config.get("max_length", 512))
        self.device_request = device
        self.num_threads = int(num_threads) if num_threads not in (None, "") else None
        self.dtype_request = dtype
        self._model: Any = None
        self.tokenizer: Any = None
        self.label_ids: list[int] = []
        self._cue: list[int] = []
        self.device: str | None = None

    # ------------------------------------------------------------------ loading
    def load(self, model: Any = None, tokenizer: Any = None) -> None:
        """Load the model (or adopt the given one, as the trainer does); idempotent."""
        if self._model is not None and model is None:
            return
        _hf.setup_torch(self.num_threads)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = _hf.pick_device(self.device_request)
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(self.model_dir)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(
                self.model_dir, dtype=_hf.pick_dtype(self.device, self.dtype_request)
            ).eval()
        self._model = model.to(self.device)
        self.label_ids, self._cue = label_tokens_and_cue(self.tokenizer, self.label_tokens)

    @property
    def model(self) -> Any:
        self.load()
        return self._model

    # ------------------------------------------------------------------ inputs
    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of the filled template; the prompt part is truncated to fit ``max_length``."""
        self.load()
        tok = self.tokenizer
        head, _, tail = self.template.partition("{prompt}")
        head_ids = tok(head, add_special_tokens=False)["input_ids"]
        tail_ids = tok(tail, add_special_tokens=False)["input_ids"] + self._cue
        pre, post = special_wrapping(tok)
        budget = max(0, self.max_length - len(head_ids) - len(tail_ids) - len(pre) - len(post))
        bodies = tok(list(prompts), add_special_tokens=False)["input_ids"]
        return [pre + head_ids + body[:budget] + tail_ids + post for body in bodies]

    def batches(self, ids: list[list[int]], shuffle_seed: int | None = None) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
        """Length-bucketed, right-padded batches: (row indices, {input_ids, attention_mask})."""
        from routing.embeddings import pad_buckets

        return pad_buckets(self.tokenizer, ids, self.batch_size, shuffle_seed)

    # ------------------------------------------------------------------ scoring
    def label_logits(self, model: Any, batch: dict[str, Any]) -> Any:
        """(b, 3) logits of the label tokens at each row's last real position; differentiable."""
        import torch

        base = model.base_model if model.base_model is not model else model.get_decoder()
        hidden = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        last = batch["attention_mask"].sum(dim=1) - 1
        h = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        head = model.get_output_embeddings()
        ids = torch.as_tensor(self.label_ids, device=h.device)
        logits = h @ head.weight[ids].T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[ids]
        cap = getattr(model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def probabilities(self, prompts: Sequence[str]) -> np.ndarray:
        """(n, 3) softmax over the label tokens, in :data:`LABELS` order."""
        import torch

        self.load()
        out = np.zeros((len(prompts), 3), dtype=np.float64)
        if not len(prompts):
            return out
        with torch.inference_mode():
            for idx, batch in self.batches(self.encode(prompts)):
                batch = {k: v.to(self.device) for k, v in batch.items()}
                out[idx] = torch.softmax(self.label_logits(self._model, batch).float(), dim=-1).cpu().numpy()
        return out

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        return self.probabilities(prompts)[:, self._column]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "checkpoint": str(self.path),
            "fingerprint": ckpt.fingerprint(self.path),
            "strong": self.strong,
            "weak": self.weak,
            "base": self.config.get("base"),
            "label_tokens": self.label_tokens,
        }


def special_wrapping(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text (BOS; or [CLS] ... [SEP])."""
    probe = "routing probe"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return list(full[:start]), list(full[start + len(bare) :])
    return [], []


def label_token_ids(tokenizer: Any, labels: Sequence[str]) -> list[int]:
    """One token id per label, as it follows "Answer:" (see :func:`label_tokens_and_cue`)."""
    return label_tokens_and_cue(tokenizer, labels)[0]


def label_tokens_and_cue(tokenizer: Any, labels: Sequence[str]) -> tuple[list[int], list[int]]:
    """(label token ids, cue ids to append after the template).

    BPE vocabularies usually have the label with its leading space as one token (" 3");
    tokenizers that split spaces off digits (SmolLM2, Llama 3) give [" ", "3"], and the model
    would predict the space first — so that space becomes a cue appended to the prompt and
    the label is read at the next position.
    """
    ids: list[int] = []
    cues: set[tuple[int, ...]] = set()
    for label in labels:
        spaced = tokenizer(" " + label, add_special_tokens=False)["input_ids"]
        plain = tokenizer(label, add_special_tokens=False)["input_ids"]
        if len(spaced) == 1:
            ids.append(int(spaced[0]))
            cues.add(())
        elif len(spaced) > 1 and len(plain) == 1 and spaced[-1] == plain[0]:
            ids.append(int(plain[0]))
            cues.add(tuple(spaced[:-1]))
        elif len(plain) == 1:
            ids.append(int(plain[0]))
            cues.add(())
        else:
            raise ValueError(f"label {label!r} is not a single token for this tokenizer; choose other label_tokens")
    if len(set(ids)) != len(ids):
        raise ValueError(f"label tokens {list(labels)} map to the same token ids {ids}")
    if len(cues) != 1:
        raise ValueError(f"label tokens {list(labels)} tokenise inconsistently after a space; choose other ones")
    return ids, list(cues.pop())


def write_causal_config(
    out: Path, *, strong: str, weak: str, base: str, max_length: int, template: str, label_tokens: Sequence[str], **extra: Any
) -> None:
    ckpt.write_config(
        out,
        {
            "router": "causal_llm",
            "strong": strong,
            "weak": weak,
            "models": [strong, weak],
            "labels": LABELS,
            "label_tokens": list(label_tokens),
            "template": template,
            "base": base,
            "max_length": max_length,
            **extra,
        },
    )
