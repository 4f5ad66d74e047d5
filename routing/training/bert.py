"""Fine-tuning the bert router from a local encoder (default: the installed MiniLM weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from routing.training.data import Battles, choose_pair


def train_bert(
    battles: Battles,
    out: str | Path,
    *,
    strong: str | None = None,
    weak: str | None = None,
    base: str | None = None,
    epochs: int = 1,
    lr: float = 3e-5,
    batch_size: int = 16,
    max_length: int = 256,
    seed: int = 0,
    device: str | None = None,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Fine-tune ``AutoModelForSequenceClassification`` (3 labels) on strong-vs-weak battles."""
    from routing.routers import _hf
    from routing.routers.bert import LABELS, write_bert_config
    from routing.training._loop import fit_classifier

    _hf.setup_torch(num_threads)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    strong, weak = choose_pair(battles, strong, weak)
    prompts, labels = _hf.pair_labels(battles, strong, weak)
    if base is None:
        from routing.embeddings import minilm_path

        base = minilm_path()
    device = _hf.pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=3, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)}
    )
    history = fit_classifier(
        model,
        lambda s: _hf.length_buckets(tokenizer, prompts, max_length, batch_size, shuffle_seed=s),
        labels,
        lambda m, b: m(**b).logits,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        device=device,
    )
    out = Path(out)
    model.to("cpu").save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    write_bert_config(
        out,
        strong=strong,
        weak=weak,
        base=str(base),
        max_length=max_length,
        trained_on={"battles": len(prompts), "epochs": epochs, "lr": lr, "seed": seed},
    )
    return {"router": "bert", "out": str(out), "strong": strong, "weak": weak, "battles": len(prompts), "history": history}
