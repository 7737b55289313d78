"""Label masking against hand-built conversations; every bad-input case names file:line and a fix."""

import json

import pytest

from tests.conftest import write_jsonl
from trainer import data
from core.errors import DataError

CONVO = [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "What is 2 + 2?"},
         {"role": "assistant", "content": "2 + 2 = 4."},
         {"role": "user", "content": "And 3 + 3?"},
         {"role": "assistant", "content": "3 + 3 = 6."}]


def learned_text(tokenizer, ids, labels):
    return tokenizer.decode([t for t, l in zip(ids, labels) if l != data.IGNORE])


def test_sft_learns_every_assistant_turn_and_nothing_else(tokenizer):
    text, spans = data.render_with_spans(tokenizer, CONVO, last_only=False)
    ids, labels = data.encode_with_labels(tokenizer, text, spans)
    assert learned_text(tokenizer, ids, labels) == "2 + 2 = 4.<|im_end|>\n3 + 3 = 6.<|im_end|>\n"
    # the system prompt, user turns and role headers carry no loss
    masked = tokenizer.decode([t for t, l in zip(ids, labels) if l == data.IGNORE])
    assert masked == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n"
                      "<|im_start|>assistant\n<|im_start|>user\nAnd 3 + 3?<|im_end|>\n<|im_start|>assistant\n")
    assert len(ids) == len(labels)


def test_dpo_learns_only_the_final_turn(tokenizer):
    text, spans = data.render_with_spans(tokenizer, CONVO, last_only=True)
    ids, labels = data.encode_with_labels(tokenizer, text, spans)
    assert learned_text(tokenizer, ids, labels) == "3 + 3 = 6.<|im_end|>\n"


def test_dpo_pair_shares_the_prompt_and_differs_in_the_answer(tmp_path, tokenizer):
    row = {"messages": CONVO, "rejected_response": "I am not sure."}
    ds = data.load(str(write_jsonl(tmp_path / "d.jsonl", [json.dumps(row)])), tokenizer, "dpo", 256, "drop", False)
    s = ds.samples[0]
    assert learned_text(tokenizer, s.rejected_ids, s.rejected_labels) == "I am not sure.<|im_end|>\n"
    prompt = [t for t, l in zip(s.input_ids, s.labels) if l == data.IGNORE]
    assert prompt == [t for t, l in zip(s.rejected_ids, s.rejected_labels) if l == data.IGNORE]


def test_pt_learns_every_token_and_packs_without_padding(tmp_path, tokenizer):
    rows = [json.dumps({"messages": [{"role": "assistant", "content": f"Document {i} says hello world."}]})
            for i in range(20)]
    path = str(write_jsonl(tmp_path / "pt.jsonl", rows))
    plain = data.load(path, tokenizer, "pt", 64, "drop", False)
    assert all(s.labels == s.input_ids and s.input_ids[-1] == tokenizer.eos_token_id for s in plain.samples)
    packed = data.load(path, tokenizer, "pt", 16, "drop", True)
    stream = [t for s in plain.samples for t in s.input_ids]
    assert [t for s in packed.samples for t in s.input_ids] == stream[: len(packed.samples) * 16]
    assert all(len(s.input_ids) == 16 for s in packed.samples)


def test_alpaca_rows_become_messages():
    row = data.parse_row({"instruction": "Add.", "input": "2 + 2", "output": "4", "system": "Be exact."}, "sft", "f:1")
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
     "without \"rejected_response\""),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}', "pt",
     "assistant messages only"),
    ('{"text": "hello"}', "sft", "continued pre-training data"),
])
def test_bad_rows_name_file_and_line(tmp_path, line, task, expect):
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                       "rejected_response": "b"})
    if task == "pt":
        good = json.dumps({"messages": [{"role": "assistant", "content": "text"}]})
    path = write_jsonl(tmp_path / "bad.jsonl", [good, "", line])
    with pytest.raises(DataError) as e:
        data.read_rows(path, task)
    msg = e.value.render()
    assert f"{path}:3" in msg and expect in msg


def test_too_long_samples_are_dropped_or_truncated_and_counted(tmp_path, tokenizer):
    long = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "word " * 200}]}
    short = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = str(write_jsonl(tmp_path / "d.jsonl", [json.dumps(long), json.dumps(short)]))
    dropped = data.load(path, tokenizer, "sft", 64, "drop", False)
    assert (len(dropped.samples), dropped.dropped_too_long, dropped.truncated) == (1, 1, 0)
    cut = data.load(path, tokenizer, "sft", 64, "truncate", False)
    assert (len(cut.samples), cut.dropped_too_long, cut.truncated) == (2, 0, 1)
    assert len(cut.samples[0].input_ids) == 64


def test_too_small_dataset_says_what_is_needed(tokenizer):
    ds = data.load("", tokenizer, "sft", 256, "drop", False)
    with pytest.raises(DataError) as e:
        data.check_enough(ds, 10_000, False, "100 steps x global batch 100")
    assert "need 10000" in e.value.render() and "--repeat-data" in e.value.render()
    data.check_enough(ds, 10_000, True, "")  # cycling is allowed when asked for


def test_micro_batches_partition_each_global_batch_across_ranks(tokenizer):
    ds = data.load("", tokenizer, "sft", 256, "drop", False)
    first = {}
    for rank in range(2):
        it = data.micro_batches(ds, rank=rank, world=2, micro_batch=2, grad_accum=2, pad_id=0, seq_len=256,
                                padding="fixed")
        first[rank] = [next(it).input_ids for _ in range(2)]  # one optimizer step = 2 micro-batches
    rows = [tuple(r.tolist()) for rank in range(2) for b in first[rank] for r in b]
    expected = {tuple(data.collate([s], 0, 256, "fixed").input_ids[0].tolist()) for s in ds.samples[:8]}
    assert set(rows) == expected and len(rows) == 8
    b = data.collate(ds.samples[:2], 0, 256, "fixed")
    assert b.padded_tokens == 512 and b.real_tokens == sum(len(s.input_ids) for s in ds.samples[:2])
