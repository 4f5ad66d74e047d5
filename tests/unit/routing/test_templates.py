"""Template-aware scoring: what is found, what is stripped, and what is left alone."""

from __future__ import annotations

import numpy as np
import pytest

from routing.routers.blend import BlendRouter, fit_blend
from routing.routers.blend_features import feature_matrix
from routing.templates import (
    MIN_BATCH,
    find_template,
    score_with_template,
    strip_template,
    template_views,
    windows,
)
from tests.unit.routing._fake_embedder import HashEmbedder

FEW_SHOT = (
    "The following are multiple choice questions (with answers).\n\n"
    + "\n\n".join(
        f"Example question {i} about something rather long?\nA. one\nB. two\nC. three\nD. four\nAnswer: B" for i in range(12)
    )
    + "\n\n"
)
SUFFIX = "\n\nRespond with the letter of the correct option only, with no explanation."


def items(n: int = 40) -> list[str]:
    rng = np.random.default_rng(0)
    words = "apple river theorem molecule contract species economy history algorithm integral".split()
    return [
        f"Q{i}: " + " ".join(rng.choice(words, size=8 + i % 7)) + f"?\nA. {i}\nB. {i + 1}\nC. x\nD. y\nAnswer:" for i in range(n)
    ]


def test_shared_few_shot_prefix_is_found_and_stripped_exactly() -> None:
    plain = items()
    info = find_template([FEW_SHOT + p for p in plain])
    assert info.stripped and info.prefix == FEW_SHOT and info.suffix_chars == 0
    assert info.prefix_chars == len(FEW_SHOT) >= 1000
    assert strip_template([FEW_SHOT + p for p in plain], info) == plain
    assert info.describe() == f"template: {len(FEW_SHOT):,} chars shared prefix stripped"
    assert info.to_dict()["prefix_chars"] == len(FEW_SHOT) and "prefix" not in info.to_dict()


def test_shared_suffix_is_cut_at_the_blank_line_keeping_the_item_format() -> None:
    plain = items()
    info = find_template([p + SUFFIX for p in plain])
    # every item also ends in "\nAnswer:", which is the item's format, not the template
    assert info.suffix == SUFFIX
    assert strip_template([p + SUFFIX for p in plain], info) == plain


def test_plain_batches_and_small_batches_are_left_alone() -> None:
    plain = items()
    assert not find_template(plain).stripped  # only "\nAnswer:" is shared: too short
    small = [FEW_SHOT + p for p in plain[: MIN_BATCH - 1]]
    assert not find_template(small).stripped


def test_near_identical_prompts_are_not_stripped_to_nothing() -> None:
    same = [
        "Please write a short summary of the attached quarterly report for the board, number " + str(i % 3) for i in range(50)
    ]
    assert not find_template(same).stripped
    identical = ["What is the capital of France? Answer in one word, please, and nothing else."] * 50
    assert not find_template(identical).stripped


def test_one_odd_prompt_does_not_hide_the_template() -> None:
    batch = [FEW_SHOT + p for p in items()] + ["a prompt without the template at all, just a question?"]
    info = find_template(batch)
    assert info.prefix == FEW_SHOT and info.stripped_prompts == len(batch) - 1
    assert strip_template(batch, info)[-1] == batch[-1]


def test_repeated_blocks_in_the_middle_are_stripped() -> None:
    block = "Here is an example of a good answer: it is short, it is correct, and it cites its source clearly."
    batch = [f"Item {i} header line that differs {i * 7}.\n\n{block}\n\n{p}" for i, p in enumerate(items())]
    info = find_template(batch)
    assert info.blocks == (block,)
    assert all(block not in s for s in strip_template(batch, info))


def test_feature_view_keeps_a_shared_preamble_on_the_same_paragraph() -> None:
    pre = "For which of these two scenarios does the main character do something clearly wrong? Scenario 1 | "
    batch = [pre + p for p in items()]
    for_embedding, for_features, info = template_views(batch)
    assert info.prefix == pre.rsplit(" ", 1)[0] + " " and for_embedding[0] != batch[0]
    assert for_features == batch  # no blank line: the text features read the item format whole


def test_windows_keep_head_and_tail() -> None:
    text = " ".join(f"w{i}" for i in range(2000))
    head, tail = windows(text, 1000)  # type: ignore[misc]
    assert text.startswith(head) and text.endswith(tail) and len(head) <= 500 and len(tail) <= 500
    assert windows("short", 1000) is None


@pytest.fixture
def router() -> BlendRouter:
    rng = np.random.default_rng(1)
    prompts = items(200)
    E = HashEmbedder(32).embed(prompts)
    model = fit_blend(E, feature_matrix(prompts), rng.integers(0, 2, 200).astype(float), rng.integers(0, 2, 200).astype(float))
    model.config["embedder"] = "test-hash"
    r = BlendRouter(model=model, embedder="test-hash")
    r.use_embedder(HashEmbedder(32))
    return r


def test_blend_scores_a_templated_batch_as_the_plain_one(router: BlendRouter) -> None:
    plain = items()
    base = router.score(plain)
    scores, info = score_with_template(router, [FEW_SHOT + p + SUFFIX for p in plain])
    assert info.prefix_chars == len(FEW_SHOT) and info.suffix_chars == len(SUFFIX)
    np.testing.assert_array_equal(scores, base)
    router.templates = False  # the old path: the template changes every score
    assert not np.allclose(router.score([FEW_SHOT + p for p in plain]), base)


def test_a_prompt_alone_scores_as_in_a_plain_batch(router: BlendRouter) -> None:
    plain = items()
    alone = np.concatenate([router.score([p]) for p in plain[:5]])
    np.testing.assert_allclose(alone, router.score(plain)[:5])


def test_routebatch_score_reports_the_stripped_template(tmp_path, monkeypatch: pytest.MonkeyPatch, router: BlendRouter) -> None:
    import json

    from typer.testing import CliRunner

    import jobs.cli  # noqa: F401
    import jobs.cli.routing_cmds as cmds
    from jobs.cli.app import app

    monkeypatch.setattr(cmds, "_router", lambda spec, as_json: router)
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"custom_id": str(i), "prompt": FEW_SHOT + p}) + "\n" for i, p in enumerate(items())))
    res = CliRunner().invoke(app, ["score", str(data), "--router", "blend", "--out", str(tmp_path / "o.jsonl"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["templates"] == [{"note": f"template: {len(FEW_SHOT):,} chars shared prefix stripped", "chunks": 1}]
    scores = [json.loads(line)["score"] for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    np.testing.assert_array_equal(scores, router.score(items()))
