"""Training data: battles, per-model labels and strong/weak labels become one Battles table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from routing.training.data import battles_from_records, choose_pair, prompt_text, read_battles


def test_labels_become_battles():
    b = battles_from_records([
        {"prompt": "p1", "scores": {"s": 1, "w": 0}},   # strong right, weak wrong -> strong wins
        {"prompt": "p2", "scores": {"s": 0, "w": 1}},   # weak wins
        {"prompt": "p3", "scores": {"s": 1, "w": 1}},   # tie
        {"prompt": "p4", "scores": {"s": 0, "w": 0}},   # tie
    ])
    assert b.models == ["s", "w"] and b.prompts == ["p1", "p2", "p3", "p4"]
    np.testing.assert_array_equal(b.outcome, [1.0, 0.0, 0.5, 0.5])
    idx, y = b.pair("w", "s")
    np.testing.assert_array_equal(y, [0.0, 1.0, 0.5, 0.5])


def test_mixed_formats_and_tie_margin(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [
        {"prompt": "a", "model_a": "x", "model_b": "y", "winner": "model_b"},
        {"prompt": "a", "model_a": "x", "model_b": "z", "winner": "tie (bothbad)"},
        {"prompt": "b", "strong": 8.0, "weak": 7.9},
        {"prompt": "c", "scores": {"x": 1, "y": 0, "z": 0.5}},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    b = read_battles(path, strong="x", weak="y", tie_margin=0.2)
    assert b.prompts == ["a", "b", "c"] and b.models == ["x", "y", "z"]
    assert len(b) == 2 + 1 + 3
    np.testing.assert_array_equal(b.outcome, [0.0, 0.5, 0.5, 1.0, 1.0, 0.0])
    assert choose_pair(b) == ("x", "y")  # win rates x 0.6, z 0.5, y 0.375


def test_bad_lines_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="record 1"):
        battles_from_records([{"prompt": "a", "model_a": "x", "model_b": "y", "winner": "nobody"}])
    with pytest.raises(ValueError, match="expected a battle"):
        battles_from_records([{"prompt": "a"}])
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "strong": 1, "weak": 0}\nnot json\n')
    with pytest.raises(ValueError, match=":2"):
        read_battles(path)


def test_choose_pair_by_win_rate_and_validation():
    b = battles_from_records([{"prompt": f"p{i}", "scores": {"big": 1, "mid": i % 2, "small": 0}} for i in range(4)])
    assert choose_pair(b) == ("big", "small")
    assert choose_pair(b, weak="mid") == ("big", "mid")
    with pytest.raises(ValueError):
        choose_pair(b, strong="nope")
    with pytest.raises(ValueError):
        choose_pair(b, strong="big", weak="big")


def test_prompt_text_shapes():
    assert prompt_text({"prompt": "x"}) == "x"
    assert prompt_text({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}) == "s\nu"
    assert prompt_text({"body": {"messages": [{"role": "user", "content": [{"type": "text", "text": "t"}]}]}}) == "t"
    with pytest.raises(ValueError):
        prompt_text({"text": "x"})
