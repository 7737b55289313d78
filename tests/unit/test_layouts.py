"""Every dataset layout users have (issue 18, first part), read into the one form, with small
fixtures written for this project: JSON arrays, ShareGPT, Alpaca with history, Dolly, ms-swift
query/response, TRL preference rows (explicit and implicit prompt), {"text"}, CSV; a BOM and CRLF;
KTO rows refused with the reason; unused keys listed once per file."""

from __future__ import annotations

import json

import pytest

from stackbench.core.errors import DataError
from stackbench.trainer.data import rows as rows_mod

QA = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]


def _read(tmp_path, rows, task="sft", name="d.jsonl", text=None):
    path = tmp_path / name
    path.write_text(text if text is not None else "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    got, summary = rows_mod.read_rows(path, task)
    return got, summary.lines()


@pytest.mark.parametrize("row, messages", [
    ({"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}, QA),
    ({"conversation": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"},
                       {"from": "gpt", "value": "A"}]},
     [{"role": "system", "content": "S"}, *QA]),
    ({"instruction": "Q", "input": "", "output": "A", "history": [["q0", "a0"]], "system": "S"},
     [{"role": "system", "content": "S"}, {"role": "user", "content": "q0"}, {"role": "assistant", "content": "a0"},
      *QA]),
    ({"instruction": "Q", "context": "C", "response": "A", "category": "open_qa"},
     [{"role": "user", "content": "Q\n\nC"}, {"role": "assistant", "content": "A"}]),
    ({"query": "Q", "response": "A", "history": []}, QA),
])
def test_sft_layouts_become_messages(tmp_path, row, messages):
    (got,), _ = _read(tmp_path, [row])
    assert got.messages == messages


def test_ms_swift_conversation_pairs_with_a_system_key(tmp_path):
    # ms-swift's own custom-dataset rows: human/assistant pairs, a top-level system first (its
    # MessagesPreprocessor.sharegpt_to_messages); a ShareGPT row's own first system turn wins over the key
    rows = [{"system": "00000", "conversation": [{"human": "11111", "assistant": "22222"}]},
            {"conversation": [{"human": "aaaaa", "assistant": "bbbbb"}]},
            {"conversation": [{"human": "mmmmm", "assistant": "nnnnn"}, {"human": "oooo", "assistant": "pppp"}]},
            {"system_prompt": "S", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
            {"system": "ignored", "conversations": [{"role": "system", "content": "S"}, *QA]}]
    got, notes = _read(tmp_path, rows)
    assert [r.messages for r in got] == [
        [{"role": "system", "content": "00000"}, {"role": "user", "content": "11111"},
         {"role": "assistant", "content": "22222"}],
        [{"role": "user", "content": "aaaaa"}, {"role": "assistant", "content": "bbbbb"}],
        [{"role": "user", "content": "mmmmm"}, {"role": "assistant", "content": "nnnnn"},
         {"role": "user", "content": "oooo"}, {"role": "assistant", "content": "pppp"}],
        [{"role": "system", "content": "S"}, *QA], [{"role": "system", "content": "S"}, *QA]]
    assert "sharegpt (5)" in notes[0] and not any("not used" in n for n in notes)
    with pytest.raises(DataError, match=r"conversation\[1\] needs \"human\" and \"assistant\"") as e:
        _read(tmp_path, [{"conversation": [{"human": "q", "assistant": "a"}, {"human": "q2"}]}])
    assert e.value.where.endswith(":1")


def test_preference_rows_explicit_and_implicit_prompt(tmp_path):
    explicit = {"prompt": "Q", "chosen": "A", "rejected": "B"}
    implicit = {"chosen": [*QA], "rejected": [QA[0], {"role": "assistant", "content": "B"}]}
    rows, notes = _read(tmp_path, [explicit, implicit], task="dpo")
    assert all(r.messages == QA and r.rejected == "B" for r in rows) and "preference" in notes[0]
    with pytest.raises(DataError, match="share every turn"):
        _read(tmp_path, [{"chosen": QA, "rejected": [{"role": "user", "content": "other"}, QA[1]]}], task="dpo")


def test_pretraining_rows_text_and_ms_swift_response(tmp_path):
    rows, _ = _read(tmp_path, [{"text": "a document"}, {"response": "another"}], task="pt")
    assert [r.messages[0]["content"] for r in rows] == ["a document", "another"]


def test_a_json_array_with_a_bom_and_crlf_and_a_csv(tmp_path):
    text = "\ufeff[\r\n" + json.dumps({"instruction": "Q", "input": "", "output": "A"}) + "\r\n]\r\n"
    (row,), notes = _read(tmp_path, None, name="alpaca_data.json", text=text)
    assert row.messages == QA and "alpaca" in notes[0]
    jsonl = "\ufeff" + json.dumps({"messages": QA}) + "\r\n" + json.dumps({"messages": QA}) + "\r\n"
    assert len(_read(tmp_path, None, text=jsonl)[0]) == 2
    (row,), _ = _read(tmp_path, None, name="d.csv", text="instruction,input,output\nQ,,A\n")
    assert row.messages == QA


def test_kto_rows_are_refused_and_unused_keys_listed_once(tmp_path):
    with pytest.raises(DataError, match="KTO") as e:
        _read(tmp_path, [{"messages": QA, "label": False}])
    assert e.value.where.endswith(":1")
    _, notes = _read(tmp_path, [{"messages": QA, "id": 1, "source": "x"}, {"messages": QA, "id": 2}])
    assert "keys not used" in notes[-1] and notes[-1].endswith(": id, source")


def test_data_format_forces_a_layout_and_names_what_a_row_lacks(tmp_path):
    from stackbench.core.config import DATA_FORMATS
    from stackbench.trainer.data import layouts

    assert set(DATA_FORMATS) - {"auto"} == set(layouts.LAYOUTS)  # one list of layouts
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"instruction": "Q", "output": "A", "text": "ignored"}) + "\n", encoding="utf-8")
    rows, summary = rows_mod.read_rows(path, "sft", data_format="alpaca")
    assert rows[0].messages == QA and summary.unused_keys == ["text"]
    with pytest.raises(DataError) as e:
        rows_mod.read_rows(path, "sft", data_format="sharegpt")
    assert "--data-format sharegpt" in e.value.what and e.value.where.endswith(":1")


def test_data_per_task_in_the_matrix():
    from stackbench.bench.matrix import expand
    from stackbench.core.errors import ConfigError

    configs, _ = expand(task=["sft", "dpo", "pt"], data=["sft=a.jsonl", "dpo=b.json"], zero_stage=[2])
    assert {(c.task, c.data) for c in configs} == {("sft", "a.jsonl"), ("dpo", "b.json"), ("pt", "")}
    configs, _ = expand(task=["sft", "dpo"], data=["sft=a.jsonl", "shared.jsonl"], zero_stage=[2])
    assert {(c.task, c.data) for c in configs} == {("sft", "a.jsonl"), ("dpo", "shared.jsonl")}
    with pytest.raises(ConfigError, match="runs no pt"):
        expand(task=["sft"], data=["pt=c.jsonl"])
    with pytest.raises(ConfigError, match="is not a task"):
        expand(task=["sft"], data=["kto=c.jsonl"])
