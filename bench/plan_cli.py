"""`invoke plan`: the planner's rows as a table (or JSON) and one recommendation per node count."""

from __future__ import annotations

import json

from core.config import knob_field, parse_axis
from bench.plan import plan as make_plan
from bench.plan import recommend


def plan(*, model: str, gpus_per_node: int, gpu_mem: float, nodes: str, task: str, seq_len: int, micro_batch: int,
         device: str, grad_checkpointing: bool, as_json: bool) -> int:
    rows = make_plan(model=model, gpus_per_node=gpus_per_node, gpu_mem_gib=gpu_mem, nodes=parse_axis(knob_field("nodes"), nodes), task=task,
                     seq_len=seq_len, micro_batch=micro_batch, device=device, grad_checkpointing=grad_checkpointing)
    if as_json:
        print(json.dumps(rows, indent=1))
        return 0
    from rich.table import Table

    from core.console import stdout_console

    table = Table(title=f"{model} {task}, seq {seq_len}, micro-batch {micro_batch}, {gpus_per_node} x {gpu_mem:g} GiB "
                        f"per node ({device})")
    for col in ("rank", "nodes", "ZeRO", "offload", "GiB/GPU", "states", "activ.+logits", "host GiB/rank", "fits",
                "≤ tok/s/GPU"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["rank"]), str(r["nodes"]), str(r["zero_stage"]), r["offload"], f"{r['predicted_gib']:.1f}",
                      f"{r['model_states_gib']:.1f}", f"{r['activations_gib']:.1f}", f"{r['host_gib_per_rank']:.1f}",
                      "[green]yes[/]" if r["fits"] else "[red]no[/]",
                      f"{r['max_tokens_per_s_per_device']:.0f}" if r["max_tokens_per_s_per_device"] else "–")
    console = stdout_console()
    console.print(table)
    for line in recommend(rows):
        console.print(line)
    return 0
