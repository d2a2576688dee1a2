"""The final artifacts of a successful run, each file hashed.

    adapter/adapter_model.safetensors   the LoRA weights (their sha256 is the adapter's identity)
    adapter/adapter_config.json         what peft needs to attach them to the base model
    training_config.json                the spec with every "auto" resolved, and the run's facts
    metrics.json                        loss curve, validation rounds, throughput
    eval_report.json                    baselines vs tuned, OOD probe, verdict
    MODEL_CARD.md                       the same for people
    merged/                             optional full weights (merge_and_unload), checked
    SHA256SUMS                          every file above with its sha256

Everything is written into a staging directory and renamed into place at the end: a run that
fails or is cancelled before then leaves no final artifacts.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import structlog
import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from trainer.checkpoints import write_adapter
from trainer.data import render_chat
from trainer.hashing import CHECKSUMS_NAME, hash_tree
from trainer.results import ArtifactFile

log = structlog.get_logger(__name__)

MERGE_PROBE_MESSAGES = [
    {"role": "user", "content": "Summarise what an invoice is in one sentence."}
]


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def export_merged(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    directory: Path,
    *,
    tolerance: float,
) -> dict[str, Any]:
    """Merge the adapter into the base weights, save them, and check both give the same logits.

    Consumes `model`: after merging, the adapter no longer exists as separate weights.
    """
    prompt = render_chat(tokenizer, MERGE_PROBE_MESSAGES, add_generation_prompt=True)
    device = next(model.parameters()).device
    inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(device)
    model.eval()
    with torch.no_grad():
        adapter_logits = model(**inputs).logits.float()
        merged = model.merge_and_unload()
        merged_logits = merged(**inputs).logits.float()
    difference = (adapter_logits - merged_logits).abs().max().item()
    check = {
        "prompt": MERGE_PROBE_MESSAGES[0]["content"],
        "max_abs_logit_difference": difference,
        "tolerance": tolerance,
        "agrees": difference <= tolerance,
    }
    if not check["agrees"]:
        raise RuntimeError(f"merged weights disagree with the adapter: {check}")
    merged.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return check


def render_model_card(facts: dict[str, Any]) -> str:
    """MODEL_CARD.md: the facts of training_config.json and eval_report.json, for people."""
    config = facts["config"]
    lines = [
        f"# LoRA adapter for {facts['base_model_name']}",
        "",
        f"Adapter sha256: `{facts['adapter_sha256']}`",
        "",
        *_card_base_model_and_data(facts["base_model_name"], config),
        *_card_hyperparameters(config),
        *_card_compute(facts, config),
        *_card_evaluation(facts.get("evaluation")),
        *_card_merged_weights(facts.get("merged_check")),
        *_card_limitations(),
    ]
    return "\n".join(lines)


def _card_base_model_and_data(base_model_name: str, config: dict[str, Any]) -> list[str]:
    lines = [
        "## Base model",
        "",
        f"- Directory: `{base_model_name}`",
        f"- Manifest sha256: `{config['base_model']['manifest_sha256']}`",
        f"- Source: `{json.dumps(config['base_model']['source'])}`",
        "",
        "## Data",
        "",
        "| role | file | sha256 | examples |",
        "| --- | --- | --- | --- |",
    ]
    for data_file in config["data_files"]:
        lines.append(
            f"| {data_file['role']} | `{Path(data_file['path']).name}` | `{data_file['sha256']}` "
            f"| {data_file['examples']} |"
        )
    held_out = config["held_out"]
    return [
        *lines,
        "",
        f"Held-out set: {held_out['source']} ({held_out['examples']} examples).",
        f"Examples left out for exceeding max_seq_len: {len(config['too_long_lines'])}.",
        "",
    ]


def _card_hyperparameters(config: dict[str, Any]) -> list[str]:
    hyper = config["resolved_hyperparameters"]
    spec = config["spec"]
    lora = spec["lora"]
    lines = [
        "## Hyperparameters",
        "",
        "| name | value | decided by |",
        "| --- | --- | --- |",
    ]
    for name in ("n_epochs", "batch_size", "learning_rate_multiplier"):
        lines.append(f"| {name} | {hyper[name]} | {hyper['decided_by'][name]} |")
    return [
        *lines,
        f"| learning_rate | {hyper['learning_rate']:.3g} | base x multiplier |",
        f"| lr_scheduler | {spec['lr_scheduler']} (warm-up {config['schedule']['warmup_steps']} "
        f"of {config['schedule']['total_steps']} steps) | spec |",
        f"| max_grad_norm | {spec['max_grad_norm']} | spec |",
        f"| seed | {spec['seed']} | spec |",
        "",
        f"LoRA: r={lora['r']}, alpha={lora['alpha']}, dropout={lora['dropout']}, "
        f"targets={', '.join(config['target_modules'])}, rslora={lora['use_rslora']}, "
        f"dora={lora['use_dora']}; {config['trainable_parameters']:,} trainable parameters.",
        "",
    ]


def _card_compute(facts: dict[str, Any], config: dict[str, Any]) -> list[str]:
    return [
        "## Compute",
        "",
        f"- Device: {facts['device']}; wall clock {facts['seconds']:.1f} s; "
        f"{facts['steps_completed']} optimizer steps.",
        f"- Tokens processed: {facts['processed_tokens']:,}; trained (assistant) tokens: "
        f"{facts['trained_tokens']:,}.",
        "- Libraries: "
        + ", ".join(f"{k} {v}" for k, v in sorted(config["library_versions"].items()))
        + ".",
        f"- Best validation loss: {facts['best_validation_loss']} at step {facts['best_step']}"
        + (" (stopped early)." if facts["stopped_early"] else "."),
        "",
    ]


def _card_evaluation(evaluation: dict[str, Any] | None) -> list[str]:
    if not evaluation:
        return ["## Evaluation against baselines", "", "Not run (evaluation disabled).", ""]
    if evaluation.get("method") == "dpo":
        lines = _card_preferences(evaluation)
    else:
        lines = [
            "## Evaluation against baselines",
            "",
            f"{evaluation['generation_examples']} held-out examples, greedy decoding; the "
            f"few-shot baseline shows {evaluation['few_shot_examples']} training examples.",
            "",
            "| system | exact match | token F1 | loss | perplexity |",
            "| --- | --- | --- | --- | --- |",
        ]
        for system, metrics in evaluation["systems"].items():
            lines.append(
                f"| {system} | {metrics['exact_match']:.3f} | {metrics['token_f1']:.3f} | "
                f"{metrics['loss']:.4f} | {metrics['perplexity']:.3f} |"
            )
    probe = evaluation["ood_probe"]
    lines += [
        "",
        "## Out-of-distribution probe",
        "",
        f"Loss on `{probe['text_file']}` ({probe['tokens_scored']} tokens, sha256 "
        f"`{probe['text_sha256']}`): {probe['loss_before']:.4f} before, "
        f"{probe['loss_after']:.4f} after tuning ({probe['relative_change']:+.1%}).",
        "",
        "## Verdict",
        "",
        f"**{'PASSED' if evaluation['verdict']['passed'] else 'FAILED'}**",
        "",
    ]
    for check in evaluation["verdict"]["checks"]:
        lines.append(
            f"- {check['name']}: {'pass' if check['passed'] else 'fail'} "
            f"(value {check['value']:+.4f}, threshold {check['threshold']})"
        )
    return [*lines, ""]


def _card_preferences(evaluation: dict[str, Any]) -> list[str]:
    """A DPO run's evaluation (trainer.evaluate.evaluate_preferences)."""
    base, tuned = evaluation["systems"]["base"], evaluation["systems"]["tuned"]
    return [
        "## Evaluation against the base model (preference pairs)",
        "",
        f"{evaluation['held_out_examples']} held-out preference pairs. Preference accuracy "
        "(the preferred output's log-ratio against the base model above the non-preferred "
        f"one's): tuned {tuned['preference_accuracy']:.3f}, base "
        f"{base['preference_accuracy']:.3f} (every pair a tie). Ranking accuracy (per-token "
        f"likelihood): tuned {tuned['ranking_accuracy']:.3f}, base "
        f"{base['ranking_accuracy']:.3f}. DPO loss {tuned['dpo_loss']:.4f}.",
    ]


def _card_merged_weights(merged: dict[str, Any] | None) -> list[str]:
    if not merged:
        return []
    return [
        "## Merged weights",
        "",
        f"`merged/` holds the base weights with the adapter merged in; on a fixed prompt the "
        f"largest logit difference to the adapter is {merged['max_abs_logit_difference']:.2e} "
        f"(tolerance {merged['tolerance']}).",
        "",
    ]


def _card_limitations() -> list[str]:
    return [
        "## Limitations",
        "",
        "- Evaluated only on the held-out set named above; scores do not transfer to other "
        "tasks, domains or prompt formats.",
        "- Generation metrics use greedy decoding with a bounded answer length; sampling or "
        "longer answers may behave differently.",
        "- The OOD probe is a short general English text: it detects gross forgetting, not "
        "subtle changes in knowledge, safety behaviour or other languages.",
        "- The adapter inherits the base model's limitations and biases.",
        "",
        f"Every file of this directory is listed with its sha256 in `{CHECKSUMS_NAME}`.",
        "",
    ]


def write_final_artifacts(
    artifact_dir: Path,
    *,
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    adapter: dict[str, torch.Tensor],
    resolved_config: dict[str, Any],
    metrics: dict[str, Any],
    evaluation: dict[str, Any] | None,
    card_facts: dict[str, Any],
    export_merged_weights: bool,
    merged_tolerance: float,
) -> tuple[str, list[ArtifactFile], dict[str, Any] | None]:
    """Write every final artifact atomically; (adapter sha256, hashed files, merge check)."""
    if artifact_dir.exists():
        raise FileExistsError(f"{artifact_dir} already holds final artifacts")
    artifact_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = artifact_dir.parent / f".{artifact_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        adapter_sha256 = write_adapter(model, staging / "adapter", adapter)
        _write_json(staging / "training_config.json", resolved_config)
        _write_json(staging / "metrics.json", metrics)
        if evaluation is not None:
            _write_json(staging / "eval_report.json", evaluation)
        merged_check = None
        if export_merged_weights:
            merged_check = export_merged(
                model, tokenizer, staging / "merged", tolerance=merged_tolerance
            )
        card = render_model_card(
            {
                **card_facts,
                "adapter_sha256": adapter_sha256,
                "evaluation": evaluation,
                "merged_check": merged_check,
            }
        )
        (staging / "MODEL_CARD.md").write_text(card)
        files = hash_tree(staging)
        (staging / CHECKSUMS_NAME).write_text(
            "".join(f"{file.sha256}  {file.relative_path}\n" for file in files)
        )
        os.replace(staging, artifact_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info(
        "artifacts.written", path=str(artifact_dir), adapter_sha256=adapter_sha256, files=len(files)
    )
    return adapter_sha256, files, merged_check
