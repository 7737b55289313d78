"""Every run's effective DeepSpeed config, checked against the installed DeepSpeed before anything
is launched or queued (placeholder: being written)."""

from __future__ import annotations

from core.config import RunConfig


def check(configs: list[RunConfig]) -> None:
    """Raise ConfigError (exit 2) for the first config the installed DeepSpeed would refuse."""
    return None
