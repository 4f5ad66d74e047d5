"""Fine-tuning the causal_llm router: cross-entropy over the three label-token logits.

The same ``label_logits`` path that scores is trained, so training and inference cannot
drift apart. Full fine-tuning of the base model; on CPU keep it to small models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from routing.training.data import Battles, choose_pair


def train_causal(
    battles: Battles,
    out: str | Path,
    *,
    base: str,
    strong: str | None = None,
    weak: str | None = None,
    epochs: int = 1,
    lr: float = 2e-5,
    batch_size: int = 8,
    max_length: int = 512,
    seed: int = 0,
    device: str | None = None,
    num_threads: int | None = None,
    template: str | None = None,
    label_tokens: list[str] | None = None,
) -> dict[str, Any]:
    """Fine-tune the local causal LM at ``base`` and save a causal_llm checkpoint to ``out``."""
    from routing.routers import _hf
    from routing.routers.causal_llm import DEFAULT_LABEL_TOKENS, DEFAULT_TEMPLATE, CausalLLMRouter, write_causal_config
    from routing.training._loop import fit_classifier

    torch = _hf.setup_torch(num_threads)
    from transformers import AutoModelForCausalLM

    strong, weak = choose_pair(battles, strong, weak)
    prompts, labels = _hf.pair_labels(battles, strong, weak)
    template = template or DEFAULT_TEMPLATE
    label_tokens = list(label_tokens or DEFAULT_LABEL_TOKENS)
    torch.manual_seed(seed)
    router = CausalLLMRouter(
        base, strong=strong, weak=weak, batch_size=batch_size, max_length=max_length, device=device, template=template
    )
    router.label_tokens = label_tokens
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    router.load(model=model)
    assert router.device is not None  # load() picks the device
    ids = router.encode(prompts)
    history = fit_classifier(
        model,
        lambda s: router.batches(ids, shuffle_seed=s),
        labels,
        router.label_logits,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        device=router.device,
    )
    out = Path(out)
    # transformers wraps PreTrainedModel.to in functools.wraps, whose stub drops the self binding
    model.to("cpu").save_pretrained(out / "model")  # type: ignore[arg-type]
    router.tokenizer.save_pretrained(out / "model")
    write_causal_config(
        out,
        strong=strong,
        weak=weak,
        base=str(base),
        max_length=max_length,
        template=template,
        label_tokens=label_tokens,
        trained_on={"battles": len(prompts), "epochs": epochs, "lr": lr, "seed": seed},
    )
    return {"router": "causal_llm", "out": str(out), "strong": strong, "weak": weak, "battles": len(prompts), "history": history}
