"""What the local backend's worker did, for benchmarks and tests."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BackendStats:
    """Counters and timings written by the worker thread, read without a lock."""

    steps: int = 0  # decode steps run (one per token of every running batch)
    prefills: int = 0
    max_rows: int = 0  # the largest batch seen
    adapter_hits: int = 0
    adapter_misses: int = 0
    adapter_evictions: int = 0
    adapter_slot_reuses: int = 0  # misses served by copying into an evicted adapter's slot
    swap_seconds_hit: list[float] = field(default_factory=list)
    swap_seconds_miss: list[float] = field(default_factory=list)
    activate_seconds: list[float] = field(default_factory=list)  # peft set_adapter
