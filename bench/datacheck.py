"""The sweep's data, checked once in the bench process before anything is launched, queued or
printed as a plan: every file read and validated (a bad row exits 2 here, naming file:line, the
field and the fix), tokenized into the cache every rank memory-maps (trainer/data/dataset.py), and what
each run keeps of it said on the console: rows read, kept, dropped, truncated.

Without the training stack here (a login node), the rows are still checked; the first run's ranks
tokenize into the cache (once per host) and later runs reuse it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from stackbench.core.config import RunConfig
from stackbench.core.console import note
from stackbench.core.errors import DataError


def check(configs: list[RunConfig], *, max_drop: float = 1.0) -> dict[str, dict[str, Any]]:
    """run_id -> what its data keeps (data_rows, data_kept, data_dropped, data_truncated); raises DataError
    for the first run its data cannot serve."""
    from stackbench.trainer.data import checks, dataset, rows
    from stackbench.trainer.data.cache import Spec

    tokenizes = importlib.util.find_spec("transformers") is not None
    said: set[tuple] = set()  # files described
    tokenized: dict[tuple, Any] = {}
    out: dict[str, dict[str, Any]] = {}
    tokenizers: dict[tuple, Any] = {}
    said_lines: set[str] = set()  # tokenizer lines said
    for cfg in configs:
        spec = Spec.of(cfg)
        if not tokenizes:
            if (spec.path, spec.task, spec.data_format) not in said:
                said.add((spec.path, spec.task, spec.data_format))
                for line in rows.read_rows(spec.path, spec.task, spec.data_format)[1].lines():
                    note(f"data: {line}")
            continue
        which = (cfg.model, cfg.tokenizer, cfg.backend == "swift")  # what choose_tokenizer reads
        key = (spec, which)
        if key not in tokenized:
            if which not in tokenizers:
                from stackbench.trainer import models

                ref = models.resolve(cfg.model)
                tokenizers[which], choice = models.tokenizer_for(cfg, ref)  # the ranks make the same choice
                line = choice.console_line(cfg.model)
                if (ref.kind != "tiny" or cfg.tokenizer) and line not in said_lines:
                    said_lines.add(line)  # once per model: the embedded fallback is a warning, never silent
                    note(line)
            ds = dataset.load(cfg, tokenizers[which])
            tokenized[key] = ds
            if (spec.path, spec.task, spec.data_format) not in said:
                said.add((spec.path, spec.task, spec.data_format))
                read = rows.FileSummary(ds.path, ds.meta["rows"], ds.meta["layouts"], ds.meta["unused_keys"])
                for line in read.lines():
                    note(f"data: {line}")
                if not ds.cache_hit:
                    note(f"data: tokenized in {ds.meta['tokenize_s']:.1f} s")
            note(f"data: {checks.drop_line(ds)}")
        ds = tokenized[key]
        problem = checks.drop_problem(ds, max_drop)
        if problem:
            raise DataError(problem, where=f"{ds.path} (run {cfg.run_id})",
                            fix=f"{checks.seq_len_advice(ds.meta)}, or raise --max-drop")
        checks.check_enough(ds, cfg.total_steps * cfg.global_batch, cfg.repeat_data,
                          f"{cfg.total_steps} steps x global batch {cfg.global_batch} (run {cfg.run_id})")
        out[cfg.run_id] = {"data_rows": ds.meta["rows"], "data_kept": len(ds),  # core.record.to_row's names
                           "data_dropped": ds.meta["dropped_too_long"], "data_truncated": ds.meta["truncated"]}
    if not tokenizes and configs:
        note("note: the training stack is not installed here: rows are checked; the first run's ranks tokenize "
              "them into the cache (once per host) and later runs reuse it")
    return out
