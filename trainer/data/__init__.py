"""A dataset file -> the ranks' micro-batches, one module per step:

  rows.py      a file (JSONL, JSON array, CSV, Parquet) -> validated rows, each error at file:line
  layouts.py   the row layouts users have (messages, sharegpt, alpaca, ...) -> one form
  chat.py      any chat template -> the rendered text and which characters carry loss
  cache.py     where the tokenized samples live: the key (file, tokenizer, settings, this code)
  tokenize.py  rows -> token ids and loss masks, by forked workers for big files
  dataset.py   the memory-mapped samples: built once per host, read by every rank
  checks.py    what a run is told: enough samples, rows dropped, the seq-len that keeps them
  batches.py   a rank's micro-batches, padded or packed

Import the module that defines a name; this file re-exports nothing.
"""
