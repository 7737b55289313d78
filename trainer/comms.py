"""DeepSpeed's comms logger (`"comms_logger": {"enabled": true, "prof_all": true}` in the DeepSpeed
config, e.g. `--ds comms_logger.enabled=true --ds comms_logger.prof_all=true`), read into the
record: per collective, the calls and bytes of one measured optimizer step (the logger is reset
when the warm-up ends, so start-up broadcasts and zero.Init gathers are not counted).

Bytes are DeepSpeed's own `msg_size`: the size of the tensor handed to the call (for an
all-gather, one rank's shard; for a reduce-scatter or an all-reduce, the whole input), which is
what core.perf_model predicts."""

from __future__ import annotations

from typing import Any


class CommsLog:
    def __init__(self, ds_config: dict, warmup_steps: int):
        self.on = bool((ds_config.get("comms_logger") or {}).get("enabled"))
        self.warmup_steps = warmup_steps

    def _logger(self):
        from deepspeed.comm.comm import comms_logger

        return comms_logger

    def window_opens(self) -> None:
        if self.on:
            self._logger().reset_data()

    def step_done(self, index: int) -> None:
        if index == self.warmup_steps - 1:  # the last warm-up step: count only what follows
            self.window_opens()

    def per_step(self, measured_steps: int) -> dict[str, Any] | None:
        """{op: {"calls": per step, "bytes": per step, "sizes": {bytes: calls per step}}}, or None when off."""
        if not self.on or measured_steps <= 0:
            return None
        out = {}
        for op, sizes in sorted(self._logger().get_raw_data().items()):
            calls = sum(entry[0] for entry in sizes.values())
            out[op] = {"calls": calls / measured_steps,
                       "bytes": sum(size * entry[0] for size, entry in sizes.items()) / measured_steps,
                       "sizes": {str(size): entry[0] / measured_steps for size, entry in sorted(sizes.items())}}
        return out
