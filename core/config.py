"""The run config: what one run *is*, defined once.

Every knob of a run is one field of `RunConfig`, with its default, its help text and its allowed
values, checked when a config is made. This module is the schema and its validation; everything
else is derived from it, never restated:
  - the run id (content-addressed: the knobs that differ from their defaults);
  - the argv every launcher starts (`to_argv`) and `record.config` (every knob, as run) with its
    reading back (`RunConfig.from_dict`);
  - the command lines (core/flags.py): the trainer's (`python -m stackbench.trainer --help`), the
    `invoke bench` flags (every knob is a flag, every non-boolean knob takes a comma list and is a
    sweep axis: bench/matrix.py), `--ds KEY=VALUE`;
  - the arguments of the hf backend (TrainingArguments / DPOConfig) and of ms-swift's CLI: each
    backend maps the knobs it renames or does not take (trainer/backends/hf.py, swift.py), and any
    other knob reaches it under its own name.
Adding a knob means adding a field here; tests/unit/test_run_config.py adds a throwaway one and
follows it everywhere.

What is not a knob is bookkeeping (`Launch`): where the record goes, its id and sweep, the
launcher that started it, the reproducing command, the collective timeout. Bookkeeping never
changes what is measured, so it is not a sweep axis and not part of the run id.

Defaults: where the trainer's and the bench's defaults used to differ, the bench's won (seq_len
128: the embedded default's, so committed run ids stay); a trainer started by hand records the
launcher "manual".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from stackbench.core.errors import ConfigError

TASKS = ("sft", "dpo", "pt")
ZERO_STAGES = (0, 1, 2, 3)
DTYPES = ("auto", "bf16", "fp16", "fp32")
ATTN_IMPLS = ("sdpa", "flash_attention_2", "eager")
BACKENDS = ("native", "hf", "swift")  # trainer/backends/ registers one module per name (a test keeps them equal)
TYPES = {"int": int, "float": float, "str": str, "bool": bool}


# the row layouts trainer/data/layouts.py reads (a test keeps the two lists one)
Z3_LEAF = re.compile(r"none|[A-Za-z_][\w.]*(,[A-Za-z_][\w.]*)*")  # class names: nothing a shell or a path reads
DATA_FORMATS = ("auto", "messages", "sharegpt", "alpaca", "dolly", "swift", "preference", "text")


@dataclass(frozen=True, slots=True)
class Offload:
    """One value of the offload knob: what DeepSpeed moves to the host, and how it is labelled."""

    optimizer: bool   # zero_optimization.offload_optimizer (optimizer states and the step on the CPU)
    params: bool      # zero_optimization.offload_param (ZeRO-3 only)
    min_stage: int    # the lowest ZeRO stage DeepSpeed accepts it with
    id_tag: str       # in run ids
    short: str        # in tables


OFFLOADS = {
    "none": Offload(False, False, 0, "", ""),
    "optimizer": Offload(True, False, 1, "-offopt", "+opt"),
    "optimizer+params": Offload(True, True, 3, "-offall", "+opt+param"),
    "params": Offload(False, True, 3, "-offpar", "+param"),  # DeepSpeed takes offload_param alone (ZeRO-3)
}


def offload_problem(stage: int, offload: str) -> str | None:
    """Why this stage cannot take this offload (None: it can)."""
    need = OFFLOADS[offload].min_stage
    if stage >= need:
        return None
    return "parameter offload needs ZeRO-3" if need == 3 else "optimizer offload needs ZeRO 1, 2 or 3"


def stage_label(stage: int, offload: str) -> str:
    """'ZeRO-3', 'ZeRO-2 +opt offload': how tables and plots name a configuration."""
    short = OFFLOADS.get(offload, OFFLOADS["none"]).short
    return f"ZeRO-{stage}" + (f" {short} offload" if short else "")


def dtype_on(name: str, device_type: str) -> str:
    """The dtype a run computes in: 'auto' is bf16 on a GPU and fp32 on a CPU."""
    return ("bf16" if device_type == "cuda" else "fp32") if name == "auto" else name


CPU_BF16_WARNING = ("bf16 on a CPU runs, but slowly (no bf16 units: about 15x fp32); its figures say nothing "
                    "about a GPU's")


def resolve_dtype(name: str, device_type: str) -> str:
    """dtype_on, on the device the run has: a CPU takes fp32 and bf16 (slow: CPU_BF16_WARNING),
    not fp16, which DeepSpeed's CPU accelerator does not support."""
    if device_type == "cpu" and dtype_on(name, device_type) == "fp16":
        raise ConfigError("fp16 on a CPU: DeepSpeed's CPU accelerator has no fp16 (is_fp16_supported() is False)",
                          where="--dtype / the DeepSpeed config's fp16.enabled",
                          fix="use bf16 or fp32 on a CPU; fp16 runs on GPUs")
    return dtype_on(name, device_type)


def knob(default: Any, help: str, *, choices: Iterable | None = None, minimum: float | None = None,
         flag: str = "", sweep: str = "", tasks: tuple[str, ...] = TASKS, id_name: str = "",
         id_always: bool = False, repeatable: str = "") -> Any:
    """A field of RunConfig.
    help: the one help text (trainer and bench);  choices / minimum: checked in __post_init__;
    flag: the `invoke bench` flag when it differs from the field name;  sweep: the bench's default
    comma list when it sweeps more than the default;  tasks: the tasks it means something for (a
    backend is given it only for these);  id_name / id_always: how the run id hashes it (kept from
    the first ids);  repeatable: the bench flag is given once per value, not as a comma list, and
    never an axis of its own: "overrides" (`--ds KEY=VALUE`: the same key twice is two runs), "list"
    (`--z3-leaf A --z3-leaf B`: one value, the names joined by commas). What another tool calls a
    knob is that backend's to say (trainer/backends/hf.py, swift.py)."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "minimum": minimum, "flag": flag,
            "sweep": sweep, "tasks": tasks, "id_name": id_name, "id_always": id_always, "repeatable": repeatable}
    return field(default=default, metadata=meta)


@dataclass(kw_only=True, frozen=True, slots=True)
class RunConfig:
    """Everything that decides what one run measures. Field order is the sweep's loop order
    (outermost first: one node count's runs stay together, so one preflight serves them)."""

    model: str = knob("tiny", "a preset (qwen3-8b ..., random init), 'tiny' (the embedded model), a local HF "
                      "model directory, or a hub id org/name[@revision] (from the local HF cache; where not cached "
                      "and HF_HUB_OFFLINE is unset, its config and tokenizer files are fetched, never weights)",
                      id_always=True)
    tokenizer: str = knob("", "the tokenizer that counts the tokens: a directory or a hub id org/name[@revision]; "
                          "empty: the model's own (a preset: its family's from the local HF cache, else the "
                          "embedded one, with a warning)")
    task: str = knob("sft", "sft (chat, loss on assistant turns), dpo (preference pairs) or pt (continued "
                     "pre-training)", choices=TASKS, flag="tasks", sweep="sft,dpo", id_always=True)
    nodes: int = knob(1, "nodes (the local launcher: emulated nodes on this host)", minimum=1, sweep="1,2")
    gpus_per_node: int = knob(2, "GPUs per node (CPU: processes per node)", minimum=1, id_name="procs_per_node")
    micro_batch: int = knob(2, "sequences (DPO: pairs) per rank per forward pass", minimum=1)
    seq_len: int = knob(128, "maximum tokens per sequence; longer samples are dropped or truncated (--too-long)",
                        minimum=8)
    zero_stage: int = knob(2, "DeepSpeed ZeRO stage: 0, 1, 2 or 3", choices=ZERO_STAGES, flag="zero",
                           sweep="0,1,2,3", id_always=True)
    offload: str = knob("none", "none, optimizer (ZeRO 1-3: optimizer states and step on the CPU), "
                        "optimizer+params (ZeRO-3: parameters too) or params (ZeRO-3: parameters only)",
                        choices=OFFLOADS)
    deepspeed: str = knob("", "your DeepSpeed config: a JSON file (Hugging Face 'auto' values too), an accelerate "
                          "config YAML (distributed_type: DEEPSPEED), or an ms-swift name (zero0, zero1, zero2, zero3, "
                          "zero2_offload, zero3_offload); what it states sets the knobs it covers (ZeRO stage, "
                          "offload, batch sizes, dtype, optimizer, clipping); empty: built from the knobs")
    ds: str = knob("", "overrides of the effective DeepSpeed config, dotted keys with JSON values: `invoke bench "
                   "--ds zero_optimization.overlap_comm=true` (repeatable; the same key twice: two runs); the "
                   "trainer takes them as one JSON object", flag="ds", repeatable="overrides")
    backend: str = knob("native", "native (stackbench's DeepSpeed loop), hf (transformers' Trainer / TRL's "
                        "DPOTrainer) or swift (ms-swift's pipeline, in its own environment: ./sb swift-env), each "
                        "with the same DeepSpeed config, data and timing", choices=BACKENDS)
    grad_accum: int = knob(1, "micro-batches per optimizer step", minimum=1)
    steps: int = knob(8, "measured optimizer steps", minimum=1)
    warmup_steps: int = knob(2, "optimizer steps run first and excluded from the timings", minimum=0, flag="warmup")
    dtype: str = knob("auto", "auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32", choices=DTYPES)
    attn_impl: str = knob("sdpa", "attention kernel: sdpa, flash_attention_2 (needs flash-attn) or eager",
                          choices=ATTN_IMPLS)
    grad_checkpointing: bool = knob(False, "recompute activations in the backward pass (saves memory, costs ~1/3 "
                                    "more compute)")
    data: str = knob("", "dataset: JSONL, a JSON array, CSV or Parquet, in any layout of trainer/data/layouts.py; "
                     "`invoke bench --data sft=a.jsonl,dpo=b.json` gives each task its own; default: the shipped "
                     "sample set")
    data_format: str = knob("auto", "the dataset's row layout: auto (detected per row), messages, sharegpt, alpaca, "
                            "dolly, swift, preference or text", choices=DATA_FORMATS)
    repeat_data: bool = knob(False, "cycle over the dataset when it has fewer samples than the steps need")
    seed: int = knob(0, "seed for random init (samples are taken in file order)")
    padding: str = knob("fixed", "fixed: pad every batch to seq_len (real shapes); longest: to the longest in the "
                        "batch", choices=("fixed", "longest"))
    too_long: str = knob("drop", "samples longer than seq_len: drop or truncate", choices=("drop", "truncate"))
    packing: bool = knob(False, "pt: concatenate documents and cut them into seq_len blocks; sft and dpo: lay each "
                         "micro-batch's samples into as few seq_len rows as they fit, attention kept within each "
                         "sample (the same samples and loss as unpacked, less padding; native backend)")
    lr: float = knob(1e-4, "learning rate (AdamW, constant schedule)", minimum=0)
    adam_beta1: float = knob(0.9, "AdamW beta1", minimum=0)
    adam_beta2: float = knob(0.95, "AdamW beta2", minimum=0)
    adam_eps: float = knob(1e-8, "AdamW epsilon", minimum=0)
    weight_decay: float = knob(0.0, "AdamW weight decay (decoupled)", minimum=0)
    max_grad_norm: float = knob(1.0, "clip gradients to this global norm (DeepSpeed gradient_clipping; 0: none)",
                                minimum=0)
    beta: float = knob(0.1, "DPO: strength of the KL penalty in the sigmoid loss", minimum=0, tasks=("dpo",))
    dpo_ref_zero_stage: str = knob("auto", "DPO: the frozen reference model's ZeRO stage: auto (3 under a ZeRO-3 "
                                   "policy, else 0: a replica per rank, as TRL's prepare_deepspeed), 0 or 3 "
                                   "(native backend only)", choices=("auto", "0", "3"))
    z3_leaf: str = knob("", "ZeRO-3: a module class to register as a leaf module besides the sparse MoE blocks found "
                        "from the model's structure (repeatable: --z3-leaf A --z3-leaf B; the trainer takes A,B); "
                        "'none': register none (DeepSpeed 0.18+ registers its own defaults unless --ds "
                        "zero_optimization.leaf_module.classes=[])", repeatable="list")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_value(f, getattr(self, f.name))
        rules = [
            (offload_problem(self.zero_stage, self.offload), "use --zero-stage 3 for parameter offload, 1-3 for the "
                                                             "optimizer's, or --offload none"),
            ("--packing of sft and dpo samples needs --backend native" if self.packing and self.task != "pt"
             and self.backend == "hf" else None, "drop --packing, or use --backend native"),
            ("--packing with --backend swift" if self.packing and self.backend == "swift" else None,
             "drop --packing: ms-swift packs with its own algorithm, so the runs would not be comparable"),
            ("--dpo-ref-zero-stage with --backend " + self.backend
             if self.dpo_ref_zero_stage != "auto" and self.backend != "native" else None,
             "TRL and ms-swift choose the reference model's stage themselves: leave it auto"),
            ("--tokenizer with --backend swift" if self.tokenizer and self.backend == "swift" else None,
             "leave --tokenizer out: ms-swift tokenizes with the model directory's own tokenizer"),
            ("--adam-beta1 and --adam-beta2 must be below 1" if max(self.adam_beta1, self.adam_beta2) >= 1 else None,
             "e.g. 0.9 and 0.95"),
            ("--lr and --beta must be positive" if self.lr == 0 or self.beta == 0 else None, "give positive numbers"),
            (f"--z3-leaf {self.z3_leaf!r} is not a list of class names" if self.z3_leaf and not
             Z3_LEAF.fullmatch(self.z3_leaf) else None, "name classes (Qwen3MoeSparseMoeBlock or its module.qualname), "
                                                         "comma-separated, or 'none'"),
        ]
        for problem, fix in rules:
            if problem:
                raise ConfigError(problem, where="run config", fix=fix)

    # --- derived figures ---------------------------------------------------------------------------

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def global_batch(self) -> int:
        """Sequences (DPO: pairs) per optimizer step, over every rank."""
        return self.micro_batch * self.grad_accum * self.world_size

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + self.steps

    @property
    def offload_optimizer(self) -> bool:
        return OFFLOADS[self.offload].optimizer

    @property
    def offload_param(self) -> bool:
        return OFFLOADS[self.offload].params

    @property
    def ref_zero_stage(self) -> int:
        """The DPO reference model's ZeRO stage (see the dpo_ref_zero_stage knob)."""
        if self.dpo_ref_zero_stage == "auto":
            return 3 if self.zero_stage == 3 else 0
        return int(self.dpo_ref_zero_stage)

    @property
    def run_id(self) -> str:
        """Readable prefix + a hash of the knobs that differ from their defaults: a resumed sweep
        finds its runs, two configs never share an id, and adding a knob later keeps every id."""
        content = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["id_always"] or value != f.default:
                content[f.metadata["id_name"] or f.name] = value
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:8]
        backend = "" if self.backend == "native" else f"-{self.backend}"
        return (f"{self.task}{backend}-z{self.zero_stage}{OFFLOADS[self.offload].id_tag}-n{self.nodes}x"
                f"{self.gpus_per_node}-mb{self.micro_batch}-s{self.seq_len}-{digest}")

    # --- conversions -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        """Back from `to_dict()` (a record's config); a key this version does not know is an error."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown run config keys: {', '.join(unknown)}", where="record config",
                              fix="read it with the stackbench version that wrote it")
        return cls(**values)

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_argv(self) -> list[str]:
        """The trainer's command-line arguments that rebuild this config (non-defaults only)."""
        return _argv(self)


@dataclass(kw_only=True, frozen=True, slots=True)
class Launch:
    """Bookkeeping of one run: how it was started and where it reports. Not a knob: never part of
    the run id, never a sweep axis, never changes what is measured."""

    out: str = field(default="results/adhoc", metadata={"help": "directory the record is written to (by rank 0)"})
    run_id: str = field(default="", metadata={"help": "the record's name; default: the run config's id"})
    sweep_id: str = field(default="adhoc", metadata={"help": "the sweep this run belongs to"})
    launcher: str = field(default="manual", metadata={"help": "the launcher that started this run (recorded)"})
    command: str = field(default="", metadata={"help": "the exact command that reproduces this run (recorded; the "
                                                       "launcher fills it in)"})
    collective_timeout_s: int = field(default=300, metadata={"help": "seconds a collective may wait before the run "
                                                                     "fails (torch's default: 1800)"})
    secrets: str = field(default="", metadata={"help": "names (never values) of the secrets the launcher passed in "
                                                      "the environment, comma-separated (recorded)"})

    def __post_init__(self) -> None:
        if self.collective_timeout_s < 10:
            raise ConfigError("--collective-timeout-s must be at least 10", where="launch",
                              fix="give seconds, e.g. 300")

    def to_argv(self) -> list[str]:
        return _argv(self)

    def recorded(self) -> dict[str, Any]:
        """What a record keeps of it beside run_id, sweep_id and command."""
        return {"launcher": self.launcher, "collective_timeout_s": self.collective_timeout_s,
                "secrets": [n for n in self.secrets.split(",") if n]}

    def replace(self, **changes: Any) -> "Launch":
        return dataclasses.replace(self, **changes)


def cli_flag(name: str) -> str:
    """A field's command-line flag: seq_len -> --seq-len (argparse's and invoke's spelling)."""
    return "--" + name.replace("_", "-")


def _argv(obj) -> list[str]:
    """The non-default fields as trainer flags (core/flags.py's trainer_parser reads them back)."""
    argv: list[str] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value == f.default:
            continue
        flag = cli_flag(f.name)
        argv += ([flag] if value else ["--no-" + flag[2:]]) if isinstance(value, bool) else [flag, str(value)]
    return argv


def check_value(f: dataclasses.Field, value: Any, flag: str = "") -> None:
    """One knob's value on its own: its type, its allowed values, its minimum. The error names
    `flag` (what the user typed: `--zero`, `--axis zero_stage`), else the trainer's flag."""
    meta, kind = f.metadata, TYPES[str(f.type)]
    where, flag = (flag, "") if flag else ("run config", cli_flag(f.name) + " ")
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, (int, float) if kind is float else kind):
        raise ConfigError(f"{flag}{value!r} is not a {f.type}", where=where, fix=f"give a {f.type}")
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(f"{flag}{value!r} is not a valid value", where=where,
                          fix=f"use one of {', '.join(map(str, meta['choices']))}")
    if meta["minimum"] is not None and value < meta["minimum"]:
        raise ConfigError(f"{flag}{value!r} is below the minimum of {meta['minimum']:g}", where=where,
                          fix="give a larger number")
    if meta["repeatable"] == "overrides" and value:
        overrides_of(value)  # a JSON object of dotted keys


def knob_fields() -> tuple[dataclasses.Field, ...]:
    """The knobs, in the run config's field order (the sweep's loop order)."""
    return dataclasses.fields(RunConfig)


def knob_field(name: str) -> dataclasses.Field:
    return next(f for f in knob_fields() if f.name == name)


# --- the ds knob's value: a JSON object of dotted keys --------------------------------------------

def overrides_of(text: str) -> dict[str, Any]:
    """The ds knob's value (a JSON object of dotted keys) as a dict; errors say what is wrong."""
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"--ds {text!r} is not a JSON object ({e})", where="run config",
                          fix='e.g. {"zero_optimization.overlap_comm": true}') from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and k and "" not in k.split(".") for k in obj):
        raise ConfigError(f"--ds {text!r} must map dotted keys to values", where="run config",
                          fix='e.g. {"zero_optimization.reduce_bucket_size": 5e8}')
    return obj
