"""What every launcher is told about supervising a run (built from bench.options.BenchOptions).
The one definition of these defaults: bench's flags, the preflight's and envcheck's read them here
(the collective timeout is the trainer's own default, core.config.Launch, which sits a layer below)."""

from __future__ import annotations

from dataclasses import dataclass, field

from stackbench.core.config import Launch


@dataclass(kw_only=True)
class LaunchOptions:
    deadline_s: float = 900.0
    """Wall-clock limit for one run, start-up included."""
    heartbeat_s: float = 300.0
    """Kill the run when rank 0 has not finished a step for this long (after its first step)."""
    grace_s: float = 30.0
    """After one node's process fails, how long the others get to exit by themselves."""
    collective_timeout_s: int = Launch().collective_timeout_s
    """A collective that waits longer fails the run (torch's default is 30 minutes)."""
    queue_timeout_s: float = 1800.0
    """How long a job may wait in a batch queue before it first runs (one that pends again after
    running, a requeue, is node_lost at once: slurm/follow.py)."""
    preflight: bool = True
    preflight_deadline_s: float = 30.0
    """Seconds for every node to join the preflight and for its all-reduce."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for every rank (NCCL_*, ...), on top of the passthrough of this one."""
