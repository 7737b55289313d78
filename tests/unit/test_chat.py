"""Loss masks under real chat templates that are not prefix-stable (issue 18): Qwen3's (an empty think
block on the last answer only), Llama 3.1's (date lines in the system turn, trimmed contents),
Gemma 3's (the system prompt folded into the first user turn), with the real tokenizers and their
special tokens; multi-turn with a system prompt; compared token by token with expectations built
by hand: the text written out piece by piece, each piece marked learned or not.

And the templates that refuse a conversation (Gemma's: no system turn; Mistral's and Gemma's:
roles must alternate) give an error naming the row and the fix."""

from __future__ import annotations

import numpy as np
import pytest

from stackbench.core.errors import DataError
from stackbench.trainer.data import tokenize
from stackbench.trainer.data.chat import Template, learned_mask
from stackbench.trainer.data.rows import Row
from tests.support import real_tokenizers

SYSTEM, Q1, A1, Q2, A2 = "Be brief.", "What is 2 + 2?", "2 + 2 = 4.", "And 3 + 3?", "3 + 3 = 6."
CONVO = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": Q1}, {"role": "assistant", "content": A1},
         {"role": "user", "content": Q2}, {"role": "assistant", "content": A2}]
LEARN, SKIP = True, False


@pytest.fixture(scope="module")
def qwen3():
    return real_tokenizers.load("qwen3")


@pytest.fixture(scope="module")
def llama31():
    return real_tokenizers.load("llama3_1", template="llama3_1")


@pytest.fixture(scope="module")
def gemma3():
    return real_tokenizers.load("gemma3")


def expected(tokenizer, pieces: list[tuple[bool, str]]) -> tuple[str, list[int], list[bool]]:
    """The hand-built text, and per token whether it is learned: each piece tokenized on its own
    (the test checks the whole text tokenizes to the same ids, so no token spans two pieces)."""
    ids, learned = [], []
    for learn, text in pieces:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        learned += [learn] * len(piece)
    return "".join(t for _, t in pieces), ids, learned


def masks(tokenizer, messages, last_only=False):
    text, spans = Template(tokenizer).spans(messages, "test:1", last_only)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return text, enc["input_ids"], learned_mask(enc["offset_mapping"], spans).tolist()


def check(tokenizer, messages, pieces, last_only=False):
    text, ids, learned = masks(tokenizer, messages, last_only)
    want_text, want_ids, want_learned = expected(tokenizer, pieces)
    assert text == want_text
    assert ids == want_ids
    assert learned == want_learned, [(tokenizer.decode([i]), a, b)
                                     for i, a, b in zip(ids, learned, want_learned) if a != b]


def test_qwen3_learns_each_answer_and_its_im_end_line_but_not_the_empty_think_block(qwen3):
    check(qwen3, CONVO, [
        (SKIP, f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{Q1}<|im_end|>\n<|im_start|>assistant\n"),
        (LEARN, f"{A1}<|im_end|>\n"),
        (SKIP, f"<|im_start|>user\n{Q2}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"),
        (LEARN, f"{A2}<|im_end|>\n"),
    ])


def test_qwen3_reasoning_is_learned_where_the_template_keeps_it(qwen3):
    """Qwen3's template drops an earlier turn's reasoning and keeps the last one's: the learned
    tokens follow what is rendered (the earlier answer alone; the last reasoning and answer)."""
    thought = [*CONVO[:2], {"role": "assistant", "content": "<think>\nadd\n</think>\n\n" + A1}, CONVO[3],
               {"role": "assistant", "content": "<think>\nadd again\n</think>\n\n" + A2}]
    check(qwen3, thought, [
        (SKIP, f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{Q1}<|im_end|>\n<|im_start|>assistant\n"),
        (LEARN, f"{A1}<|im_end|>\n"),
        (SKIP, f"<|im_start|>user\n{Q2}<|im_end|>\n<|im_start|>assistant\n<think>\n"),
        (LEARN, f"add again\n</think>\n\n{A2}<|im_end|>\n"),
    ])


def test_qwen3_dpo_learns_the_final_answer_only(qwen3):
    check(qwen3, CONVO, [
        (SKIP, f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{Q1}<|im_end|>\n<|im_start|>assistant\n"
               f"{A1}<|im_end|>\n<|im_start|>user\n{Q2}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"),
        (LEARN, f"{A2}<|im_end|>\n"),
    ], last_only=True)


def test_llama31_skips_the_date_header_and_learns_trimmed_answers_with_eot(llama31):
    padded = [dict(m, content=f" {m['content']}\n") if m["role"] == "assistant" else m for m in CONVO]  # | trim

    def header(role):
        return f"<|start_header_id|>{role}<|end_header_id|>\n\n"

    check(llama31, padded, [
        (SKIP, "<|begin_of_text|>" + header("system") + "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024"
               f"\n\n{SYSTEM}<|eot_id|>" + header("user") + f"{Q1}<|eot_id|>" + header("assistant")),
        (LEARN, f"{A1}<|eot_id|>"),
        (SKIP, header("user") + f"{Q2}<|eot_id|>" + header("assistant")),
        (LEARN, f"{A2}<|eot_id|>"),
    ])


def test_gemma3_folds_the_system_prompt_and_learns_end_of_turn(gemma3):
    check(gemma3, CONVO, [
        (SKIP, f"<bos><start_of_turn>user\n{SYSTEM}\n\n{Q1}<end_of_turn>\n<start_of_turn>model\n"),
        (LEARN, f"{A1}<end_of_turn>\n"),
        (SKIP, f"<start_of_turn>user\n{Q2}<end_of_turn>\n<start_of_turn>model\n"),
        (LEARN, f"{A2}<end_of_turn>\n"),
    ])


@pytest.mark.parametrize("template, messages, fix", [
    ("gemma", CONVO, "takes no system turn"),
    ("mistral", [CONVO[1], CONVO[3], CONVO[2]], "alternating"),
    (None, [CONVO[1], CONVO[3], CONVO[2]], "alternating"),  # Gemma 3's own template
])
def test_templates_that_refuse_a_conversation_name_the_row_and_the_fix(gemma3, template, messages, fix):
    tok = real_tokenizers.load("gemma3", template=template) if template else gemma3
    with pytest.raises(DataError) as e:
        Template(tok).spans(messages, "mine.jsonl:7", last_only=False)
    assert e.value.where == "mine.jsonl:7" and fix in e.value.fix and "refuses" in e.value.what


def test_generation_markers_are_used_where_the_template_has_them(tokenizer):
    """A ChatML template with {% generation %} around each answer: transformers' own assistant mask
    is taken, and it agrees with the marker method on the same conversation."""
    import copy

    marked = copy.deepcopy(tokenizer)
    marked.chat_template = (
        "{%- for message in messages %}{%- if message['role'] == 'assistant' %}"
        "{{- '<|im_start|>assistant\\n' }}{% generation %}"
        "{{- message['content'] + '<|im_end|>\\n' }}{% endgeneration %}"
        "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endif %}{%- endfor %}")
    template = Template(marked)
    assert template.has_generation
    ids, learned = template.encode(CONVO, "test:1", last_only=False)
    plain_text, plain_ids, plain_learned = masks(tokenizer, CONVO)
    assert ids == plain_ids and learned == plain_learned
    _, last = template.encode(CONVO, "test:1", last_only=True)
    assert marked.decode([i for i, m in zip(ids, last) if m]) == f"{A2}<|im_end|>\n"


def test_a_whole_qwen3_dataset_tokenizes_with_these_masks(qwen3):
    rows = [Row(messages=CONVO, rejected=None, where="f:1"), Row(messages=CONVO[1:3], rejected=None, where="f:2")]
    (first,), (second,) = tokenize._encode_chunk(rows, qwen3, "sft")
    _, ids, learned = masks(qwen3, CONVO)
    assert first[0].tolist() == ids and first[1].tolist() == learned
    # a single turn is the last: no think block learned
    assert qwen3.decode(second[0][second[1]]) == f"{A1}<|im_end|>\n"
    assert np.count_nonzero(second[1]) == len(qwen3(f"{A1}<|im_end|>\n", add_special_tokens=False)["input_ids"])
