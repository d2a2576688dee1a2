from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trainer.base_models import load_base_model
from trainer.data import (
    IGNORE_INDEX,
    DataFileError,
    TokenizedExample,
    pack,
    pad,
    plan_micro_batches,
    tokenize_file,
    tokenize_messages,
)
from trainer.demo_task import generate_examples
from trainer.modeling import summed_target_loss, use_segmented_attention


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_base_model(tiny_model_dir)


def _trained_text(tokenizer, example: TokenizedExample) -> str:
    return tokenizer.decode(
        [t for t, trained in zip(example.input_ids, example.trained, strict=True) if trained]
    )


def _write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


class TestTokenizeChat:
    def test_only_assistant_reply_and_eos_are_trained(self, tiny):
        messages = [
            {"role": "system", "content": "Answer in JSON."},
            {"role": "user", "content": "Invoice 17 from Kestrel Ltd."},
            {"role": "assistant", "content": '{"vendor": "Kestrel Ltd"}'},
        ]
        example = tokenize_messages(tiny.tokenizer, messages)
        assert _trained_text(tiny.tokenizer, example) == '{"vendor": "Kestrel Ltd"}<|im_end|>'
        assert example.input_ids[-1] == tiny.tokenizer.eos_token_id and example.trained[-1]
        prompt = tiny.tokenizer.apply_chat_template(
            messages[:2], tokenize=False, add_generation_prompt=True
        )
        prompt_ids = tiny.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        assert list(example.input_ids[: len(prompt_ids)]) == prompt_ids
        assert not any(example.trained[: len(prompt_ids)])

    def test_weight_zero_turns_stay_in_context_untrained(self, tiny):
        messages = [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer", "weight": 0},
            {"role": "user", "content": "second question"},
            {"role": "assistant", "content": "second answer"},
        ]
        example = tokenize_messages(tiny.tokenizer, messages)
        assert _trained_text(tiny.tokenizer, example) == "second answer<|im_end|>"
        assert "first answer" in tiny.tokenizer.decode(example.input_ids)

    def test_targets_are_next_tokens_and_never_cross_the_end(self, tiny):
        example = tokenize_messages(
            tiny.tokenizer,
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        )
        targets = example.targets()
        assert targets[-1] == IGNORE_INDEX
        for position, target in enumerate(targets[:-1]):
            expected = (
                example.input_ids[position + 1] if example.trained[position + 1] else IGNORE_INDEX
            )
            assert target == expected
        assert sum(t != IGNORE_INDEX for t in targets) == example.n_target_tokens > 0


class TestTokenizeFile:
    def test_prompt_completion_becomes_a_user_assistant_turn(self, tiny, tmp_path: Path):
        path = _write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "2+2?", "completion": "4"}])
        dataset = tokenize_file(path, tiny.tokenizer, max_seq_len=512)
        assert _trained_text(tiny.tokenizer, dataset.examples[0]) == "4<|im_end|>"

    def test_bad_lines_are_named(self, tiny, tmp_path: Path):
        path = _write_jsonl(
            tmp_path / "bad.jsonl",
            [
                {"prompt": "ok", "completion": "fine"},
                "{not json",
                {"messages": [{"role": "user", "content": "no reply"}]},
                {"messages": [{"role": "wizard", "content": "x"}]},
                {"messages": [{"role": "assistant", "content": "x", "weight": 0.5}]},
            ],
        )
        with pytest.raises(DataFileError) as refused:
            tokenize_file(path, tiny.tokenizer, max_seq_len=512)
        assert sorted(refused.value.problems) == [2, 3, 4, 5]

    def test_too_long_examples_are_left_out_and_listed(self, tiny, tmp_path: Path):
        path = _write_jsonl(
            tmp_path / "long.jsonl",
            [
                {"prompt": "short", "completion": "yes"},
                {"prompt": "long " * 300, "completion": "no"},
            ],
        )
        dataset = tokenize_file(path, tiny.tokenizer, max_seq_len=64)
        assert [example.line_number for example in dataset.examples] == [1]
        assert dataset.too_long_lines == [2]


def _with_structure(model: torch.nn.Module) -> torch.nn.Module:
    """Random-init weights attend almost uniformly; noise makes attention (and errors) visible."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model


@pytest.fixture(scope="module")
def demo_examples(tiny) -> list[TokenizedExample]:
    return [
        tokenize_messages(tiny.tokenizer, example["messages"], line_number=i)
        for i, example in enumerate(generate_examples(count=5, seed=3))
    ]


class TestPacking:
    def test_positions_restart_and_boundaries_are_marked(self, demo_examples):
        batch = pack(demo_examples)
        lengths = [example.n_tokens for example in demo_examples]
        assert batch.input_ids.shape == (1, sum(lengths)) and batch.n_tokens == sum(lengths)
        assert batch.cu_seq_lens.tolist() == [0, *torch.tensor(lengths).cumsum(0).tolist()]
        for start, length in zip(batch.cu_seq_lens[:-1].tolist(), lengths, strict=True):
            assert batch.position_ids[0, start : start + length].tolist() == list(range(length))
            assert batch.targets[0, start + length - 1] == IGNORE_INDEX

    def test_packed_and_padded_loss_agree(self, tiny_model_dir: Path, demo_examples):
        model = _with_structure(load_base_model(tiny_model_dir).model)
        padded = pad(demo_examples, pad_token_id=0)
        packed = pack(demo_examples)
        assert padded.n_target_tokens == packed.n_target_tokens
        with torch.no_grad():
            reference = summed_target_loss(model, padded)
            native_packed = summed_target_loss(model, packed)
            use_segmented_attention(model)
            segmented_packed = summed_target_loss(model, packed)
            segmented_padded = summed_target_loss(model, padded)
        torch.testing.assert_close(native_packed, reference, rtol=1e-5, atol=0)
        torch.testing.assert_close(segmented_packed, reference, rtol=1e-5, atol=0)
        torch.testing.assert_close(segmented_padded, reference, rtol=1e-5, atol=0)

    def test_packed_loss_differs_when_attention_crosses_examples(
        self, tiny_model_dir: Path, demo_examples
    ):
        """The agreement above is not vacuous: without boundaries the loss changes."""
        model = _with_structure(load_base_model(tiny_model_dir).model)
        packed = pack(demo_examples)
        with torch.no_grad():
            separate = summed_target_loss(model, packed)
            packed.position_ids = torch.arange(packed.n_tokens).unsqueeze(0)
            packed.cu_seq_lens = None
            crossing = summed_target_loss(model, packed)
        assert abs(crossing.item() - separate.item()) > 1e-3 * separate.item()


class TestMicroBatches:
    @pytest.mark.parametrize("packing", [True, False])
    def test_every_example_once_within_the_token_budget(self, demo_examples, packing):
        budget = max(e.n_tokens for e in demo_examples) * 2
        groups = plan_micro_batches(demo_examples, max_tokens=budget, packing=packing)
        seen = sorted(example.line_number for group in groups for example in group)
        assert seen == sorted(example.line_number for example in demo_examples)
        for group in groups:
            cost = (
                sum(e.n_tokens for e in group)
                if packing
                else len(group) * max(e.n_tokens for e in group)
            )
            assert cost <= budget
        assert len(groups) >= 3
