"""The JSON columns of a model version and its job as the real writers fill them (the job
API, the worker, trainer.evaluate), taken from a quick demo run: the registry's factories
write older, smaller shapes. Values are illustrative; the keys and types are the point."""

from __future__ import annotations

from typing import Any

PV = "d1c10f3e8cef661b3efabbe3126a479644d4b9d103f90842ea47bdbe7e6b7859"

LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": None}

EVALUATION_SETTINGS = {
    "enabled": True,
    "min_exact_match_margin": 0.05,
    "max_ood_loss_increase": 0.1,
    "held_out_fraction": 0.1,
    "max_generation_examples": 4,
    "max_new_tokens": 128,
    "generation_batch_size": 8,
    "few_shot_examples": 3,
}

ESTIMATE = {
    "training_tokens": 5877,
    "n_epochs": 1,
    "tokens_processed": 5877,
    "parameters": 139584,
    "flops": 4922011008,
    "device": "cpu",
    "device_flops": 100000000000.0,
    "mfu": 0.4,
    "seconds": 0.123,
    "device_hours": 3.4e-05,
    "method": "6 x parameters x tokens x epochs",
}

HYPERPARAMETERS = {
    "n_epochs": 1,
    "batch_size": 8,
    "learning_rate_multiplier": 5.0,
    "learning_rate": 0.001,
    "decided_by": {"n_epochs": "given", "batch_size": "given", "learning_rate_multiplier": "auto"},
    "lora": {**LORA, "use_rslora": False, "use_dora": False},
    "base_learning_rate": 0.0002,
    "lr_scheduler": "cosine",
    "warmup_ratio": 0.05,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "max_seq_len": 2048,
    "micro_batch_tokens": 4096,
    "packing": True,
    "max_steps": None,
    "eval_every_steps": None,
    "early_stopping_patience": None,
    "init_adapter_dir": None,
    "target_modules": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj"],
    "trainable_parameters": 32768,
    "schedule": {"steps_per_epoch": 5, "total_steps": 5, "warmup_steps": 1},
}

COMPUTE = {
    "seconds": 0.98,
    "device_hours": 0.000272,
    "flops": 6254479872,
    "flops_per_second": 6383034096,
    "device": "cpu",
    "steps_completed": 5,
    "total_steps": 5,
    "trained_tokens": 1872,
    "processed_tokens": 7468,
    "attempts": 1,
    "torch_threads": 2,
    "estimate": ESTIMATE,
    "estimated_device_seconds": 0.123,
    "resumed": False,
}


def _metrics(loss: float, exact_match: float) -> dict[str, Any]:
    return {
        "loss": loss,
        "perplexity": 2.0 * loss,
        "exact_match": exact_match,
        "token_f1": exact_match,
        "n_generated": 4,
    }


EVALUATION_REPORT = {
    "held_out_examples": 4,
    "generation_examples": 4,
    "few_shot_examples": 3,
    "systems": {
        "base_zero_shot": _metrics(6.9, 0.0),
        "base_few_shot": _metrics(6.8, 0.25),
        "tuned": _metrics(1.2, 0.75),
    },
    "ood_probe": {
        "text_file": "ood_general.txt",
        "text_sha256": "48" * 32,
        "tokens_scored": 2890,
        "loss_before": 6.93,
        "loss_after": 6.95,
        "relative_change": 0.003,
    },
    "samples": [
        {
            "line_number": 1,
            "reference": '{"total": "3336.90"}',
            "base_zero_shot": "",
            "base_few_shot": "3336",
            "tuned": '{"total": "3336.90"}',
        }
    ],
    "verdict": {
        "passed": True,
        "checks": [
            {
                "name": "tuned_beats_best_baseline_exact_match",
                "passed": True,
                "value": 0.5,
                "threshold": 0.05,
            },
            {
                "name": "ood_loss_increase_within_limit",
                "passed": True,
                "value": 0.003,
                "threshold": 0.1,
            },
        ],
    },
}


def decisions(data_source: str) -> list[dict[str, Any]]:
    return [
        {
            "kind": "policy",
            "object": f"ds:{data_source}",
            "action": "train",
            "allowed": True,
            "policy_version": PV,
            "rule": ["user:bob", "default", f"ds:{data_source}", "train", "allow"],
        },
        {
            "kind": "gate",
            "gate": "data_source_approved",
            "passed": True,
            "data_source": data_source,
            "approved_by": "carol",
            "approval_policy_version": PV,
        },
        {"kind": "gate", "gate": "purpose", "passed": True, "data_source": data_source},
        {"kind": "gate", "gate": "min_examples", "passed": True, "examples": 3, "minimum": 1},
        {
            "kind": "gate",
            "gate": "train_validation_overlap",
            "passed": True,
            "overlapping_lines": 0,
            "max_overlapping_lines": 0,
        },
        {"kind": "gate", "gate": "quota", "passed": True, "active_jobs": 0, "device_hours_used": 0},
    ]
