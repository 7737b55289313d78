"""Label masking against hand-built conversations; every bad-input case names file:line and a fix;
the tokenized cache; packing that keeps samples apart."""

import json

import pytest

from stackbench.core.errors import DataError
from stackbench.trainer.data import batches, checks, dataset, rows, tokenize
from stackbench.trainer.data.chat import Template, learned_mask
from tests.conftest import write_jsonl


def tokenized(path, tokenizer, task="sft", seq_len=256, too_long="drop", packing=False):
    from stackbench.core.config import RunConfig

    return dataset.load(RunConfig(task=task, data=str(path), seq_len=seq_len, too_long=too_long, packing=packing),
                        tokenizer)


def encode(tokenizer, messages, last_only):
    text, spans = Template(tokenizer).spans(messages, "test", last_only)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    learned = learned_mask(enc["offset_mapping"], spans)
    return enc["input_ids"], [t if m else dataset.IGNORE for t, m in zip(enc["input_ids"], learned)]

CONVO = [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "What is 2 + 2?"},
         {"role": "assistant", "content": "2 + 2 = 4."},
         {"role": "user", "content": "And 3 + 3?"},
         {"role": "assistant", "content": "3 + 3 = 6."}]


def learned_text(tokenizer, ids, labels):
    return tokenizer.decode([t for t, label in zip(ids, labels) if label != dataset.IGNORE])


def test_sft_learns_every_assistant_turn_and_nothing_else(tokenizer):
    ids, labels = encode(tokenizer, CONVO, last_only=False)
    assert learned_text(tokenizer, ids, labels) == "2 + 2 = 4.<|im_end|>\n3 + 3 = 6.<|im_end|>\n"
    # the system prompt, user turns and role headers carry no loss
    masked = tokenizer.decode([t for t, label in zip(ids, labels) if label == dataset.IGNORE])
    assert masked == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n"
                      "<|im_start|>assistant\n<|im_start|>user\nAnd 3 + 3?<|im_end|>\n<|im_start|>assistant\n")
    assert len(ids) == len(labels)


def test_dpo_learns_only_the_final_turn(tokenizer):
    ids, labels = encode(tokenizer, CONVO, last_only=True)
    assert learned_text(tokenizer, ids, labels) == "3 + 3 = 6.<|im_end|>\n"


def test_dpo_pair_shares_the_prompt_and_differs_in_the_answer(tmp_path, tokenizer):
    row = {"messages": CONVO, "rejected_response": "I am not sure."}
    ds = tokenized(write_jsonl(tmp_path / "d.jsonl", [json.dumps(row)]), tokenizer, "dpo")
    s = ds.sample(0)
    assert learned_text(tokenizer, s.rejected_ids, s.rejected_labels) == "I am not sure.<|im_end|>\n"
    prompt = [t for t, label in zip(s.input_ids, s.labels) if label == dataset.IGNORE]
    assert prompt == [t for t, label in zip(s.rejected_ids, s.rejected_labels) if label == dataset.IGNORE]


def test_pt_learns_every_token_and_packs_without_padding(tmp_path, tokenizer):
    rows = [json.dumps({"messages": [{"role": "assistant", "content": f"Document {i} says hello world."}]})
            for i in range(20)]
    path = str(write_jsonl(tmp_path / "pt.jsonl", rows))
    plain = tokenized(path, tokenizer, "pt", 64)
    samples = [plain.sample(i) for i in range(len(plain))]
    assert all(s.labels == s.input_ids and s.input_ids[-1] == tokenizer.eos_token_id for s in samples)
    packed = tokenized(path, tokenizer, "pt", 16, packing=True)
    blocks = [packed.sample(i) for i in range(len(packed))]
    stream = [t for s in samples for t in s.input_ids]
    assert [t for s in blocks for t in s.input_ids] == stream[: len(blocks) * 16]
    assert all(len(s.input_ids) == 16 for s in blocks)


def test_alpaca_rows_become_messages():
    row = rows.parse_row({"instruction": "Add.", "input": "2 + 2", "output": "4", "system": "Be exact."}, "sft", "f:1")
    assert row.messages == [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "Add.\n\n2 + 2"},
                            {"role": "assistant", "content": "4"}]


@pytest.mark.parametrize("line, task, expect", [
    ('{"messages": [{"role": "user", "content": "hi"}', "sft", "not valid JSON"),
    ('[1, 2]', "sft", "expected a JSON object"),
    ('{"messages": [{"content": "hi"}]}', "sft", "no \"role\""),
    ('{"messages": [{"role": "bot", "content": "hi"}]}', "sft", "unknown role 'bot'"),
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]}', "sft",
     "empty assistant turn"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "sft", "no assistant turn"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}', "dpo",
     "needs a rejected answer"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}', "pt",
     "plain text only"),
    ('{"text": "hello"}', "sft", "continued pre-training data"),
])
def test_bad_rows_name_file_and_line(tmp_path, line, task, expect):
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                       "rejected_response": "b"})
    if task == "pt":
        good = json.dumps({"messages": [{"role": "assistant", "content": "text"}]})
    path = write_jsonl(tmp_path / "bad.jsonl", [good, "", line])
    with pytest.raises(DataError) as e:
        rows.read_rows(path, task)
    msg = e.value.render()
    assert f"{path}:3" in msg and expect in msg


def test_too_long_samples_are_dropped_or_truncated_and_counted(tmp_path, tokenizer):
    long = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "word " * 200}]}
    short = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = str(write_jsonl(tmp_path / "d.jsonl", [json.dumps(long), json.dumps(short)]))
    dropped = tokenized(path, tokenizer, "sft", 64, "drop")
    assert (len(dropped), dropped.meta["dropped_too_long"], dropped.meta["truncated"]) == (1, 1, 0)
    assert dropped.meta["longest_tokens"] > 200 and dropped.meta["longest_row"] == f"{path}:1"
    line = checks.drop_line(dropped)
    assert "2 rows read, 1 kept, 1 dropped as longer" in line and f"--seq-len {dropped.meta['seq_len_keep']}" in line
    cut = tokenized(path, tokenizer, "sft", 64, "truncate")
    assert (len(cut), cut.meta["dropped_too_long"], cut.meta["truncated"]) == (2, 0, 1)
    assert len(cut.sample(0).input_ids) == 64
    assert checks.drop_problem(dropped, 0.25) and checks.drop_problem(dropped, 0.5) is None


def test_everything_dropped_says_raise_the_seq_len_not_repeat(tmp_path, tokenizer):
    long = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "word " * 100}]}
    ds = tokenized(write_jsonl(tmp_path / "d.jsonl", [json.dumps(long)] * 3), tokenizer, "sft", 32)
    with pytest.raises(DataError) as e:
        checks.check_enough(ds, 4, True, "2 steps")
    msg = e.value.render()
    assert "0 usable samples" in msg and "raise --seq-len" in msg and "--too-long truncate" in msg
    assert "--repeat-data" not in msg


def test_the_cache_is_reused_and_keyed_by_content(tmp_path, tokenizer):
    import uuid

    row = json.dumps({"messages": CONVO, "id": uuid.uuid4().hex})  # content no earlier run has cached
    path = write_jsonl(tmp_path / "d.jsonl", [row])
    first = tokenized(path, tokenizer)
    again = tokenized(path, tokenizer)
    assert not first.cache_hit and again.cache_hit and again.dir == first.dir
    write_jsonl(path, [row] * 2)  # new content: a new cache entry
    changed = tokenized(path, tokenizer)
    assert changed.dir != first.dir and len(changed) == 2 and not changed.cache_hit
    assert tokenized(path, tokenizer, seq_len=128).dir != changed.dir


def test_too_small_dataset_says_what_is_needed(tokenizer):
    ds = tokenized(rows.default_path("sft"), tokenizer)
    with pytest.raises(DataError) as e:
        checks.check_enough(ds, 10_000, False, "100 steps x global batch 100")
    assert "need 10000" in e.value.render() and "--repeat-data" in e.value.render()
    checks.check_enough(ds, 10_000, True, "")  # cycling is allowed when asked for


def test_micro_batches_partition_each_global_batch_across_ranks(tokenizer):
    ds = tokenized(rows.default_path("sft"), tokenizer)
    first = {}
    for rank in range(2):
        it = batches.micro_batches(ds, rank=rank, world=2, micro_batch=2, grad_accum=2, pad_id=0, seq_len=256,
                                   padding="fixed")
        first[rank] = [next(it).input_ids for _ in range(2)]  # one optimizer step = 2 micro-batches
    fed = [tuple(r.tolist()) for rank in range(2) for b in first[rank] for r in b]
    samples = [ds.sample(i) for i in range(8)]
    expected = {tuple(batches.collate([s], 0, 256, "fixed").input_ids[0].tolist()) for s in samples}
    assert set(fed) == expected and len(fed) == 8
    b = batches.collate(samples[:2], 0, 256, "fixed")
    assert b.padded_tokens == 512 and b.real_tokens == sum(len(s.input_ids) for s in samples[:2])


def test_packed_micro_batches_keep_the_samples_apart(tokenizer):
    import torch

    ds = tokenized(rows.default_path("sft"), tokenizer)
    samples = [ds.sample(i) for i in range(6)]
    b = batches.collate_packed(samples, 0, 256, "fixed")
    assert b.input_ids.shape[0] < 6 and b.sequences == 6 and b.real_tokens == sum(len(s.input_ids) for s in samples)
    for r in range(b.input_ids.shape[0]):
        seq = b.sequence_ids[r]
        for k in seq.unique().tolist():
            if k < 0:
                continue
            where = (seq == k).nonzero().flatten()
            assert b.position_ids[r, where].tolist() == list(range(len(where)))  # positions restart per sample
            assert b.input_ids[r, where].tolist() == samples[k].input_ids
            allowed = b.attention_mask[r, 0, where] == 0  # a token of sample k attends to sample k only, causally
            n = len(where)
            assert (allowed[:, where].equal(torch.ones(n, n, dtype=torch.bool).tril())
                    and allowed.sum() == n * (n + 1) // 2)


def test_a_big_file_is_tokenized_by_workers_and_a_bad_row_still_names_its_line(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(tokenize, "PARALLEL_ROWS", 10)  # the forked workers' path, on a small file
    lines = [json.dumps({"messages": CONVO[1:3], "n": i}) for i in range(40)]
    path = write_jsonl(tmp_path / "d.jsonl", lines)
    parallel = tokenized(path, tokenizer)
    monkeypatch.setattr(tokenize, "PARALLEL_ROWS", 10**9)
    write_jsonl(tmp_path / "same.jsonl", lines + [lines[0]])  # other content: its own cache entry, in-process
    serial = tokenized(tmp_path / "same.jsonl", tokenizer)
    assert len(parallel) == 40 and [parallel.sample(i) for i in range(40)] == [serial.sample(i) for i in range(40)]
    monkeypatch.setattr(tokenize, "PARALLEL_ROWS", 10)
    write_jsonl(path, lines[:33] + ['{"messages": [}'] + lines[33:])
    with pytest.raises(DataError) as e:
        tokenized(path, tokenizer)
    assert e.value.where == f"{path}:34" and "not valid JSON" in e.value.what and e.value.fix


def test_packed_dpo_pairs_give_each_sequence_its_unpacked_log_probability(tokenizer):
    """The tiny model on the CPU, no DeepSpeed: per-sequence log p of chosen and rejected answers
    from packed rows (block-diagonal mask, positions restarting) equal the unpacked rows' to 1e-4."""
    import torch
    from transformers import AutoModelForCausalLM

    from stackbench.trainer import embedded
    from stackbench.trainer.backends.native import forward_args, sequence_logps

    model = AutoModelForCausalLM.from_pretrained(embedded.materialize(), attn_implementation="sdpa").eval()
    ds = tokenized(rows.default_path("dpo"), tokenizer, "dpo")
    samples = [ds.sample(i) for i in range(4)]
    plain = batches.collate(samples, tokenizer.pad_token_id, 256, "fixed")
    packed = batches.collate_packed(samples, tokenizer.pad_token_id, 256, "fixed")
    assert packed.input_ids.shape[0] < plain.input_ids.shape[0]  # 8 sequences in fewer rows
    with torch.no_grad():
        want, want_n = sequence_logps(model(**forward_args(plain)).logits, plain.labels)
        got, got_n = sequence_logps(model(**forward_args(packed)).logits, packed.labels,
                                    sequence_ids=packed.sequence_ids, sequences=8)
    assert got_n.tolist() == want_n.tolist() and torch.allclose(got, want, rtol=1e-4, atol=1e-4), (got, want)
