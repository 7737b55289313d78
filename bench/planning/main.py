"""`invoke plan`: the planner's rows as a table (or JSON) and one recommendation per node count.
Its flags are bench's (the run config's knobs: same names, comma lists, parsing and checks) with a
GPU node's defaults (PLAN_DEFAULTS), and the planning options (PlanOptions, below)."""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import dataclass
from typing import Any

from stackbench.bench.planning.fit import GPU_MEM_HELP, HOST_MEM_HELP, node_memory
from stackbench.bench.planning.plan import fit_label, recommend
from stackbench.bench.planning.plan import plan as make_plan
from stackbench.core import perf_model
from stackbench.core.config import OFFLOADS, ZERO_STAGES, dtype_on, knob_field
from stackbench.core.errors import ConfigError
from stackbench.core.flags import bench_flag, flag_values, parse_axis
from stackbench.core.options import Options, option

# the knobs plan takes, at a GPU node's defaults (bench's are the embedded default's, for a CPU)
PLAN_DEFAULTS = {"model": "qwen3-8b", "task": "sft", "nodes": "1,2,4", "gpus_per_node": "8", "micro_batch": "1",
                 "seq_len": "4096", "zero_stage": ",".join(map(str, ZERO_STAGES)), "offload": ",".join(OFFLOADS),
                 "grad_accum": "1", "dtype": "bf16", "attn_impl": "sdpa", "grad_checkpointing": "false"}
PCIE_GBPS = perf_model.NOMINAL_PCIE / 1e9
PER_TABLE = ("model", "task", "seq_len", "micro_batch", "gpus_per_node", "grad_accum", "dtype", "attn_impl",
             "grad_checkpointing")


@dataclass(kw_only=True, frozen=True)
class PlanOptions(Options):
    """`invoke plan`'s options beside the knobs it shares with bench (same flags, same parsing)."""

    command = "plan"

    gpu_mem: float = option(80.0, GPU_MEM_HELP)
    host_mem: float = option(0.0, HOST_MEM_HELP)
    partition: str = option("", "read --host-mem from this Slurm partition's RealMemory (sinfo), when not given")
    device: str = option("H100", "GPU name for the peak FLOP/s (H100, H200, A100 ...)")
    mfu: float = option(0.4, "model FLOPs utilization the step time is predicted at")
    busbw_intra: float = option(360.0, "bus bandwidth within a node, GB/s "
                                       "(360: NVLink 4; the preflight measures yours)")
    busbw_inter: float = option(45.0, "bus bandwidth across nodes, GB/s (45: one 400 Gb/s NIC per GPU)")
    json: bool = option(False, "print JSON rows (stdout) instead of the tables")
    calibrate: str = option("", "a sweep's folder (results/<sweep>): fit the step-time model to its runs, show "
                                "measured vs predicted for each, predict node counts up to 512")
    plot: str = option("", "with --calibrate: where the prediction plot goes (default <sweep>/prediction.png)")


def read_flags(flags: dict[str, Any]) -> tuple[dict[str, list], set[str], PlanOptions]:
    """(knob -> values, the knobs given, the options), read exactly as bench reads its flags."""
    axes, given = {}, set()
    for name, default in PLAN_DEFAULTS.items():
        f = knob_field(name)
        values = flag_values(f, flags.pop(bench_flag(f), None))
        if values is not None:
            given.add(name)
        axes[name] = values if values is not None else parse_axis(f, default)
    opts = PlanOptions.from_flags(flags)
    for flag, value, top in (("--mfu", opts.mfu, 1.0), ("--busbw-intra", opts.busbw_intra, None),
                             ("--busbw-inter", opts.busbw_inter, None)):
        if not value > 0 or (top and value > top):
            raise ConfigError(f"{flag} {value} is out of range", where=flag,
                              fix="a fraction in (0, 1] for --mfu; GB/s above 0 for the bus bandwidths "
                                  "(the preflight's busbw, or nccl-tests')")
    return axes, given, opts


def main(**flags: Any) -> int:
    axes, given, opts = read_flags(dict(flags))
    host_gib, host_source = node_memory(opts.host_mem, partition=opts.partition or None)
    shown = ", ".join(f"{bench_flag(knob_field(k)).replace('_', '-')} {','.join(map(str, v))}"
                      + ("" if k in given else "*") for k, v in axes.items()
                      if k not in ("zero_stage", "offload") or k in given)
    print(f"plan: {shown}; {opts.gpu_mem:g} GiB per GPU ({opts.device}); host RAM per node: "
          + (f"{host_gib:,.0f} GiB ({host_source})" if host_gib else host_source)
          + "  (* a GPU node's default: flags override)", file=sys.stderr)
    out, said = [], []

    for combo in itertools.product(*(axes[k] for k in PER_TABLE)):
        c = dict(zip(PER_TABLE, combo))
        rows = make_plan(model=c["model"], gpus_per_node=c["gpus_per_node"], gpu_mem_gib=opts.gpu_mem,
                         nodes=axes["nodes"], task=c["task"], seq_len=c["seq_len"], micro_batch=c["micro_batch"],
                         device=opts.device, dtype=dtype_on(c["dtype"], "cuda"),
                         grad_checkpointing=c["grad_checkpointing"], mfu=opts.mfu, busbw_intra_gbps=opts.busbw_intra,
                         busbw_inter_gbps=opts.busbw_inter, host_mem_gib=host_gib,
                         zero_stages=tuple(axes["zero_stage"]), offloads=tuple(axes["offload"]),
                         grad_accum=c["grad_accum"], attn_impl=c["attn_impl"])
        out.append((c, rows))
    if opts.json:
        print(json.dumps([{**c, **r} for c, rows in out for r in rows], indent=1))
        return 0
    from rich.table import Table

    from stackbench.core.console import stdout_console

    console = stdout_console()
    for c, rows in out:
        table = Table(title=f"{c['model']} {c['task']}, seq {c['seq_len']}, micro-batch {c['micro_batch']}, "
                            f"{c['gpus_per_node']} x {opts.gpu_mem:g} GiB per node ({opts.device})")
        for col in ("rank", "nodes", "ZeRO", "offload", "GiB/GPU", "states", "buffers", "activ.+logits",
                    "host GiB/rank", "host GiB/node", "fits", "step s", "tok/s/GPU", "≤ tok/s/GPU"):
            table.add_column(col, justify="right")
        colour = {"yes": "green", "host unchecked": "yellow"}
        for r in rows:
            table.add_row(str(r["rank"]), str(r["nodes"]), str(r["zero_stage"]), r["offload"],
                          f"{r['predicted_gib']:.1f}", f"{r['model_states_gib']:.1f}", f"{r['buffers_gib']:.1f}",
                          f"{r['activations_gib']:.1f}", f"{r['host_gib_per_rank']:.1f}",
                          f"{r['host_gib_per_node']:,.0f}", f"[{colour.get(fit_label(r), 'red')}]{fit_label(r)}[/]",
                          f"{r['predicted_step_s']:.3g}" if r["predicted_step_s"] else "–",
                          f"{r['predicted_tokens_per_s_per_device']:,.0f}" if r["predicted_tokens_per_s_per_device"]
                          else "–",
                          f"{r['max_tokens_per_s_per_device']:.0f}" if r["max_tokens_per_s_per_device"] else "–")
        console.print(table)
        for line in recommend(rows):
            console.print(line)
    if out and out[0][1] and out[0][1][0]["predicted_step_s"] is not None:
        said.append(f"step time predicted at {opts.mfu:.0%} MFU, bus bandwidth {opts.busbw_intra:g} GB/s within a "
                    f"node and {opts.busbw_inter:g} GB/s across nodes, PCIe {PCIE_GBPS:g} GB/s for offload (--mfu, "
                    f"--busbw-intra, --busbw-inter: nominal unless you set them; the preflight's busbw or `invoke "
                    f"plan --calibrate` give measured ones); no fixed per-step cost. Ranked: fits (host checked "
                    f"first), then predicted tokens/s per GPU.")
    else:
        said.append(f"no peak FLOP/s known for {opts.device}: no step time predicted; ranked: fits, no offload, "
                    f"lowest stage")
    for line in said:
        print(line, file=sys.stderr)
    return 0


def calibrate(*, results: str, as_json: bool, plot: str = "", figure=None) -> int:
    """`invoke plan --calibrate DIR`: the step-time model fitted to a sweep, checked run by run.
    figure: what draws the predictions (report.plots.calibration, handed in by tasks.py), saved to plot."""
    from stackbench.bench.planning.calibrate import calibrate as fit_sweep

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

    from stackbench.core.console import stdout_console

    console = stdout_console()
    k = out["coefficients"]
    bus = f"{k['busbw_bytes_per_s'] / 1e9:.3g} GB/s" if k["busbw_bytes_per_s"] else "none (no multi-rank run)"
    console.print(f"fitted to {len(out['fitted_from'])} runs of {results}: "
                  f"achieved {k['flops_per_s_per_rank'] / 1e9:.3g} GFLOP/s per rank, bus bandwidth {bus}, "
                  "fixed per step: "
                  + ", ".join(f"{key} {s * 1e3:.0f} ms" for key, s in k["fixed_s"].items()))
    for where, found in out["preflight_busbw_gbps"].items():
        console.print(f"the preflight measured at {where}: "
                      + ", ".join(f"{op} {bw:.3g} GB/s" for op, bw in found.items()))
    for e in out["excluded"]:
        console.print(f"left out {e['run_id']}: {e['why']} (measures the host being shared)")
    table = Table(title="step time: measured vs predicted (left out: fitted without that run)")
    for col in ("run", "task", "ZeRO", "nodes x ranks", "micro-batch", "measured s", "predicted s", "error %",
                "left out s", "left out error %"):
        table.add_column(col, justify="left" if col in ("run", "task") else "right")
    for r in out["runs"]:
        table.add_row(r["run_id"].rsplit("-", 1)[0], r["task"], str(r["zero_stage"]),
                      f"{r['nodes']}x{r['gpus_per_node']}", str(r["micro_batch"]),
                      f"{r['measured_s']:.3f}", f"{r['predicted_s']:.3f}", f"{r['error_pct']:+.1f}",
                      f"{r['left_out_predicted_s']:.3f}", f"{r['left_out_error_pct']:+.1f}")
    console.print(table)
    err = out["left_out_error_pct"]
    console.print(f"left-out error: median {err['median']:.1f}%, worst {err['worst']:.1f}% "
                  f"over {len(out['runs'])} runs")
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
