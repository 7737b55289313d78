"""The sweep matrix: every knob of core.config.RunConfig is an axis (a list of values; one value
for a knob that does not vary), expanded into run configs in the config's field order, outermost
first, so one node count's runs stay together (one preflight serves them)."""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

from stackbench.core.config import TASKS, RunConfig, check_value, knob_fields
from stackbench.core.errors import ConfigError


def expand(axes: dict[str, list[Any]] | None = None, *, given: set[str] | None = None,
           **values: Any) -> tuple[list[RunConfig], list[tuple[str, str]]]:
    """(the run configs, [(combination, why it was left out)]) for these axes: knob name -> list of
    values (a scalar is a one-value axis; knobs not named keep their default). Each run takes what
    its DeepSpeed config states (trainer/ds_source.py's rule; a contradiction with a knob in
    `given` stops the matrix); the same run twice (a value listed twice, or a swept knob the
    config fixes) runs once."""
    from stackbench.trainer import ds_source

    explicit = set(given or ())
    given = {**(axes or {}), **values}
    unknown = sorted(set(given) - {f.name for f in knob_fields()})
    if unknown:
        raise ConfigError(f"not knobs of the run config: {', '.join(unknown)}", where="matrix")
    lists = {f.name: list(v) if isinstance(v := given.get(f.name, f.default), (list, tuple)) else [v]
             for f in knob_fields()}
    per_task = per_task_data(lists["data"], lists["task"])
    tasks_with_files = {task for task, _ in per_task.values()}
    if per_task and set(lists["task"]) - tasks_with_files and all(v in per_task for v in lists["data"]):
        lists["data"].append("")  # the other tasks: their default sample sets
    for f in knob_fields():  # a value that is wrong on its own is a mistake, not a combination to leave out
        for value in lists[f.name]:
            check_value(f, value)
    varying = [name for name, vals in lists.items() if len(vals) > 1]
    configs, invalid, seen = [], [], set()
    for combo in itertools.product(*lists.values()):
        chosen = dict(zip(lists, combo))
        task, path = per_task.get(chosen["data"], (None, chosen["data"]))
        if task not in (None, chosen["task"]) or (task is None and chosen["task"] in tasks_with_files):
            continue  # another task's file (--data sft=a.jsonl,dpo=b.jsonl), not a combination
        chosen["data"] = path
        # what the run's DeepSpeed config states, first: a contradiction with a knob given is a
        # mistake (raised, nothing runs); a combination it makes impossible is left out, naming it
        stated = ds_source.apply_stated(chosen, explicit)
        try:
            cfg = RunConfig(**stated)
        except ConfigError as e:
            source = f" (with {chosen['deepspeed'] or ''} {chosen['ds'] or ''})" if stated != chosen else ""
            invalid.append(((" ".join(f"{k}={chosen[k]}" for k in varying) or "the run") + source, e.what))
            continue
        if cfg.run_id not in seen:
            seen.add(cfg.run_id)
            configs.append(cfg)
    return configs, invalid


def per_task_data(values: list[str], tasks: list[str]) -> dict[str, tuple[str, str]]:
    """--data values of the form TASK=PATH: value -> (task, path)."""
    out = {}
    for value in values:
        task, eq, path = str(value).partition("=")
        if not eq or "/" in task or task.endswith((".jsonl", ".json", ".csv", ".parquet")):
            continue  # a plain path (which may itself hold '=' further on)
        if task not in TASKS:
            raise ConfigError(f"--data {value}: {task!r} is not a task", where="--data",
                              fix=f"write TASK=PATH with TASK one of {', '.join(TASKS)}, or a plain path")
        if task not in tasks:
            raise ConfigError(f"--data {value}: the matrix runs no {task}", where="--data",
                              fix=f"add {task} to --tasks, or drop its file")
        out[value] = (task, path)
    return out


def sweep_id_for(configs: list[RunConfig], launcher: str) -> str:
    """The same matrix through the same launcher gives the same id, so running the same command
    again resumes it (run ids are content hashes: adding a knob later keeps sweep ids too)."""
    content = json.dumps({"launcher": launcher, "runs": [c.run_id for c in configs]})
    return f"sweep-{hashlib.sha256(content.encode()).hexdigest()[:8]}"
