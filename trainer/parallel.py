"""Data parallel: the same recipe on every rank of a torch.distributed process group.

When this process is one rank of an initialised process group with more than one rank (gloo
on CPU, nccl on GPU; torchrun, torch.multiprocessing or Ray Train set it up), `train` runs on
every rank. Every rank builds the same model and the same seeded order of batches; each takes
every world_size-th example of a step's batch (`shard`), and the LoRA gradients are summed
across ranks before clipping (`sum_gradients`, the recipe's gradient-sync hook), so a step is
the step one process would take on the whole batch.

Ours rather than torch's DistributedDataParallel: only the few LoRA tensors need syncing, once
a step, as one flat all-reduce; and a rank with no example in a step still joins it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import structlog
import torch
import torch.distributed as dist

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Called with the trainable parameters once their gradients are accumulated, before clipping.
GradientSync = Callable[[list[torch.nn.Parameter]], None]


def no_gradient_sync(parameters: list[torch.nn.Parameter]) -> None:
    """One process: its gradients already are the whole batch's."""


@dataclass
class DataParallel:
    """This process's place in a torch.distributed process group of more than one rank."""

    rank: int
    world_size: int
    backend: str
    # This session's share of the training: examples and assistant tokens, counted here.
    examples: int = 0
    target_tokens: int = 0
    # Everyone's counts, gathered once training ends (rank order).
    examples_per_rank: list[int] | None = None
    target_tokens_per_rank: list[int] | None = None

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def join(self, parameters: list[torch.nn.Parameter], *, seed: int) -> None:
        """The same seed gave every rank the same adapter; rank 0's is copied to the others
        anyway (as DDP does). Dropout then draws differently on each rank."""
        for parameter in parameters:
            dist.broadcast(parameter.data, src=0)
        torch.manual_seed(seed * 1_000_003 + self.rank)
        log.info(
            "run.data_parallel", rank=self.rank, world_size=self.world_size, backend=self.backend
        )

    def shard(self, examples: Sequence[T]) -> list[T]:
        """This rank's share of a step's batch: every world_size-th example, from the rank."""
        return list(examples[self.rank :: self.world_size])

    def sum_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """One all-reduce (sum) of every LoRA gradient, flattened; a rank that had no
        examples this step adds zeros."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([grad.reshape(-1) for grad in grads])
        dist.all_reduce(flat)
        offset = 0
        for parameter in parameters:
            n = parameter.numel()
            parameter.grad = flat[offset : offset + n].view_as(parameter).to(parameter.dtype)
            offset += n

    def step_totals(
        self, loss_sum: float, processed: int, *, device: torch.device
    ) -> tuple[float, int]:
        """Every rank's summed loss and processed tokens of a step, added up."""
        totals = torch.tensor([loss_sum, float(processed)], dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        return totals[0].item(), int(totals[1].item())

    def count_share(self, examples: Sequence[T], target_tokens: int) -> None:
        self.examples += len(examples)
        self.target_tokens += target_tokens

    def any_rank(self, flag: bool, *, device: torch.device) -> bool:
        """True on every rank when it is true on any (in practice rank 0's stop)."""
        return self.highest(1 if flag else 0, device=device) > 0

    def highest(self, value: int, *, device: torch.device) -> int:
        """The largest of every rank's small integer, on every rank: one all-reduce for
        what rank 0 decided between steps (go on, pause, stop)."""
        shared = torch.tensor([float(value)], device=device)
        dist.all_reduce(shared, op=dist.ReduceOp.MAX)
        return int(shared.item())

    def leaders_value(self, value: float, *, device: torch.device) -> float:
        """Rank 0's `value`, on every rank."""
        shared = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(shared, src=0)
        return shared.item()

    def gather_counts(self, *, device: torch.device) -> None:
        """Every rank learns how many examples and assistant tokens each rank trained on."""
        mine = torch.tensor([self.examples, self.target_tokens], device=device)
        everyone = [torch.zeros_like(mine) for _ in range(self.world_size)]
        dist.all_gather(everyone, mine)
        self.examples_per_rank = [int(counts[0].item()) for counts in everyone]
        self.target_tokens_per_rank = [int(counts[1].item()) for counts in everyone]


def data_parallel() -> DataParallel | None:
    """The process group this process trains in, or None for a single-process run."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return DataParallel(
        rank=dist.get_rank(), world_size=dist.get_world_size(), backend=dist.get_backend()
    )
