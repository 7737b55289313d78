"""`invoke plan`: the planner's rows as a table (or JSON) and one recommendation per node count."""

from __future__ import annotations

import json
import sys

from core.config import knob_field, parse_axis
from core.errors import ConfigError
from bench.plan import plan as make_plan
from bench.plan import recommend


def plan(*, model: str, gpus_per_node: int, gpu_mem: float, nodes: str, task: str, seq_len: int, micro_batch: int,
         device: str, grad_checkpointing: bool, as_json: bool, mfu: float, busbw_intra: float, busbw_inter: float) -> int:
    for flag, value, top in (("--mfu", mfu, 1.0), ("--busbw-intra", busbw_intra, None), ("--busbw-inter", busbw_inter, None)):
        if not value > 0 or (top and value > top):
            raise ConfigError(f"{flag} {value} is out of range", where=flag,
                              fix="a fraction in (0, 1] for --mfu; GB/s above 0 for the bus bandwidths "
                                  "(the preflight's busbw, or nccl-tests')")
    rows = make_plan(model=model, gpus_per_node=gpus_per_node, gpu_mem_gib=gpu_mem, nodes=parse_axis(knob_field("nodes"), nodes), task=task,
                     seq_len=seq_len, micro_batch=micro_batch, device=device, grad_checkpointing=grad_checkpointing,
                     mfu=mfu, busbw_intra_gbps=busbw_intra, busbw_inter_gbps=busbw_inter)
    if as_json:
        print(json.dumps(rows, indent=1))
        return 0
    from rich.table import Table

    from core.console import stdout_console

    table = Table(title=f"{model} {task}, seq {seq_len}, micro-batch {micro_batch}, {gpus_per_node} x {gpu_mem:g} GiB "
                        f"per node ({device})")
    for col in ("rank", "nodes", "ZeRO", "offload", "GiB/GPU", "states", "buffers", "activ.+logits", "host GiB/rank",
                "fits", "step s", "tok/s/GPU", "≤ tok/s/GPU"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["rank"]), str(r["nodes"]), str(r["zero_stage"]), r["offload"], f"{r['predicted_gib']:.1f}",
                      f"{r['model_states_gib']:.1f}", f"{r['buffers_gib']:.1f}", f"{r['activations_gib']:.1f}",
                      f"{r['host_gib_per_rank']:.1f}", "[green]yes[/]" if r["fits"] else "[red]no[/]",
                      f"{r['predicted_step_s']:.3g}" if r["predicted_step_s"] else "–",
                      f"{r['predicted_tokens_per_s_per_device']:,.0f}" if r["predicted_tokens_per_s_per_device"] else "–",
                      f"{r['max_tokens_per_s_per_device']:.0f}" if r["max_tokens_per_s_per_device"] else "–")
    console = stdout_console()
    console.print(table)
    if rows and rows[0]["predicted_step_s"] is not None:
        console.print(f"step time predicted at {mfu:.0%} MFU, bus bandwidth {busbw_intra:g} GB/s within a node and "
                      f"{busbw_inter:g} GB/s across nodes (--mfu, --busbw-intra, --busbw-inter: nominal unless you "
                      f"set them; the preflight's busbw or `invoke plan --calibrate` give measured ones); no fixed "
                      f"per-step cost. Ranked: fits, then predicted tokens/s per GPU.")
    else:
        console.print(f"no peak FLOP/s known for {device}: no step time predicted; ranked: fits, no offload, lowest stage")
    for line in recommend(rows):
        console.print(line)
    return 0


def calibrate(*, results: str, as_json: bool, plot: str = "", figure=None) -> int:
    """`invoke plan --calibrate DIR`: the step-time model fitted to a sweep, checked run by run.
    figure: what draws the predictions (report.plots.calibration, handed in by tasks.py), saved to plot."""
    from bench.calibrate import calibrate as fit_sweep

    out = fit_sweep(results)
    drawn = figure(out) if figure and plot else None
    if drawn is not None:
        try:
            drawn.savefig(plot, dpi=110)
        except OSError as e:  # a read-only results folder: the tables still print
            print(f"warning: the prediction plot was not written: {e}; --plot PATH writes it elsewhere",
                  file=sys.stderr)
            drawn = None
    if as_json:
        print(json.dumps(out, indent=1))
        return 0
    from rich.table import Table

    from core.console import stdout_console

    console = stdout_console()
    k = out["coefficients"]
    bus = f"{k['busbw_bytes_per_s'] / 1e9:.3g} GB/s" if k["busbw_bytes_per_s"] else "none (no multi-rank run)"
    console.print(f"fitted to {len(out['fitted_from'])} runs of {results}: achieved {k['flops_per_s_per_rank'] / 1e9:.3g} "
                  f"GFLOP/s per rank, bus bandwidth {bus}, fixed per step: "
                  + ", ".join(f"{key} {s * 1e3:.0f} ms" for key, s in k["fixed_s"].items()))
    for where, found in out["preflight_busbw_gbps"].items():
        console.print(f"the preflight measured at {where}: " + ", ".join(f"{op} {bw:.3g} GB/s" for op, bw in found.items()))
    for e in out["excluded"]:
        console.print(f"left out {e['run_id']}: {e['why']} (measures the host being shared)")
    table = Table(title="step time: measured vs predicted (left out: fitted without that run)")
    for col in ("run", "task", "ZeRO", "nodes x ranks", "micro-batch", "measured s", "predicted s", "error %",
                "left out s", "left out error %"):
        table.add_column(col, justify="left" if col in ("run", "task") else "right")
    for r in out["runs"]:
        table.add_row(r["run_id"].rsplit("-", 1)[0], r["task"], str(r["zero_stage"]), f"{r['nodes']}x{r['gpus_per_node']}",
                      str(r["micro_batch"]), f"{r['measured_s']:.3f}", f"{r['predicted_s']:.3f}", f"{r['error_pct']:+.1f}",
                      f"{r['left_out_predicted_s']:.3f}", f"{r['left_out_error_pct']:+.1f}")
    console.print(table)
    err = out["left_out_error_pct"]
    console.print(f"left-out error: median {err['median']:.1f}%, worst {err['worst']:.1f}% over {len(out['runs'])} runs")
    pred = Table(title="predicted, from each task and stage's smallest measured run (one bus bandwidth for every "
                       "node count: emulated nodes have no inter-node link to measure)")
    for col in ("task", "ZeRO", "nodes", "step s", "tokens/s per device", "scaling efficiency %"):
        pred.add_column(col, justify="left" if col == "task" else "right")
    for p in out["predictions"]:
        pred.add_row(p["task"], str(p["zero_stage"]), str(p["nodes"]), f"{p['predicted_step_s']:.3g}",
                     f"{p['predicted_tokens_per_s_per_device']:.3g}", f"{100 * p['scaling_efficiency']:.0f}")
    console.print(pred)
    if drawn is not None:
        console.print(f"plot: {plot}")
    return 0
