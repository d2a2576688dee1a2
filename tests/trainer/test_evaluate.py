from __future__ import annotations

from pathlib import Path

import pytest

from trainer.base_models import load_base_model
from trainer.evaluate import (
    OOD_TEXT_PATH,
    OOD_WINDOW_TOKENS,
    exact_match,
    few_shot_messages,
    ood_examples,
    prompt_and_reference,
    token_f1,
    verdict,
)
from trainer.spec import EvalSpec


class TestMetrics:
    def test_exact_match_ignores_whitespace_only(self):
        assert exact_match(' {"a": 1}\n', '{"a":  1}')
        assert not exact_match('{"a": 1}', '{"a": 2}')

    @pytest.mark.parametrize(
        ("prediction", "reference", "expected"),
        [
            ("the cat sat", "the cat sat", 1.0),
            ("", "", 1.0),
            ("dog", "cat", 0.0),
            ("", "cat", 0.0),
            ('{"vendor": "Kestrel Ltd"}', '{"vendor": "Kestrel AG"}', 2 / 3),
            ("a a b", "a b b", 2 / 3),
        ],
    )
    def test_token_f1(self, prediction, reference, expected):
        assert token_f1(prediction, reference) == pytest.approx(expected)


def _report(zero: float, few: float, tuned: float, ood: float) -> dict:
    return {
        "systems": {
            "base_zero_shot": {"exact_match": zero},
            "base_few_shot": {"exact_match": few},
            "tuned": {"exact_match": tuned},
        },
        "ood_probe": {"relative_change": ood},
    }


class TestVerdict:
    def test_passes_when_tuned_beats_the_best_baseline_and_ood_holds(self):
        outcome = verdict(
            _report(0.1, 0.4, 0.5, 0.05),
            EvalSpec(min_exact_match_margin=0.05, max_ood_loss_increase=0.1),
        )
        assert outcome["passed"]
        assert outcome["checks"][0]["value"] == pytest.approx(0.1)

    @pytest.mark.parametrize(
        ("report", "failed"),
        [
            (_report(0.1, 0.48, 0.5, 0.0), "tuned_beats_best_baseline_exact_match"),
            (_report(0.0, 0.0, 0.9, 0.25), "ood_loss_increase_within_limit"),
        ],
    )
    def test_fails_on_either_threshold(self, report, failed):
        outcome = verdict(report, EvalSpec(min_exact_match_margin=0.05, max_ood_loss_increase=0.1))
        assert not outcome["passed"]
        assert [check["name"] for check in outcome["checks"] if not check["passed"]] == [failed]


class TestPrompts:
    def test_prompt_is_everything_before_the_last_reply(self):
        messages = [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"},
        ]
        assert prompt_and_reference(messages) == (messages[:2], "A")

    def test_few_shot_puts_untrained_demonstrations_after_the_system_turn(self):
        prompt = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
        shots = [
            [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1"},
            ],
            [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}],
        ]
        messages = few_shot_messages(prompt, shots)
        assert [m["content"] for m in messages] == ["S", "q1", "a1", "q2", "a2", "Q"]
        assert [m.get("weight") for m in messages if m["role"] == "assistant"] == [0, 0]


class TestOodProbe:
    def test_committed_text_is_cut_into_scored_windows(self, tiny_model_dir: Path):
        tokenizer = load_base_model(tiny_model_dir).tokenizer
        text = OOD_TEXT_PATH.read_text()
        windows = ood_examples(tokenizer, text, max_tokens=1200)
        assert sum(window.n_tokens for window in windows) == 1200
        assert all(window.n_tokens <= OOD_WINDOW_TOKENS for window in windows)
        assert all(not window.trained[0] and all(window.trained[1:]) for window in windows)
        assert len(text.split()) >= 1000
