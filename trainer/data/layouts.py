"""The dataset layouts users have, detected per row and turned into one form: a list of
{"role", "content"} messages (and, for DPO, the rejected final assistant turn).

  messages             {"messages": [{"role", "content"}, ...]}            (OpenAI / TRL / ms-swift)
  sharegpt             {"conversations" | "conversation": [{"from", "value"}, ...]}  human/gpt/system
                       ({"role", "content"} turns too), or ms-swift's pairs [{"human", "assistant"}, ...];
                       "system" / "system_prompt"?: the system turn, first (a first system turn wins), as
                       ms-swift's MessagesPreprocessor reads them
  alpaca               {"instruction", "input"?, "output", "system"?, "history"?: [[q, a], ...]}
  dolly                {"instruction", "context"?, "response", "category"?}
  swift                {"query", "response", "history"?: [[q, a], ...], "system"?}; pt: {"response"}
  preference           {"prompt", "chosen", "rejected"}: strings (explicit prompt) or message lists
                       (implicit prompt: chosen and rejected are whole conversations)
  text                 {"text"} (continued pre-training)

Keys a layout does not use are collected (said once per file); keys whose meaning would be lost
are refused: KTO's "label" (a good or bad answer: SFT would learn the bad ones), tool calls.
"""

from __future__ import annotations

from typing import Any

from stackbench.core.errors import DataError

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bing": "assistant", "bard": "assistant", "model": "assistant", "bot": "assistant",
                  "system": "system"}
PAIR_KEYS = {"user": ("human", "user"), "assistant": ("assistant", "gpt", "bot")}  # ms-swift's pair turns
USED = {
    "messages": {"messages", "rejected_response"},
    "sharegpt": {"conversations", "conversation", "system", "system_prompt", "rejected_response"},
    "alpaca": {"instruction", "input", "output", "system", "history", "rejected_response"},
    "dolly": {"instruction", "context", "response", "category"},
    "swift": {"query", "response", "history", "system", "rejected_response"},
    "preference": {"prompt", "chosen", "rejected", "system"},
    "text": {"text"},
}
LAYOUTS = tuple(USED)
REQUIRED = {"messages": {"messages"}, "sharegpt": set(), "alpaca": {"instruction", "output"},
            "dolly": {"instruction", "response"}, "swift": {"response"}, "preference": {"chosen", "rejected"},
            "text": {"text"}}
REFUSED = {"label": "a KTO row (\"label\" marks the answer good or bad): SFT and DPO would learn the bad ones",
           "tools": "tool definitions: the tasks here train on plain text turns", "tool_calls": "tool calls: the tasks "
           "here train on plain text turns"}


def detect(obj: dict) -> str:
    if "messages" in obj:
        return "messages"
    if "conversations" in obj or "conversation" in obj:
        return "sharegpt"
    if "chosen" in obj and "rejected" in obj:
        return "preference"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if "instruction" in obj and "response" in obj:
        return "dolly"
    if "query" in obj or "response" in obj:
        return "swift"
    if "text" in obj:
        return "text"
    raise DataError(f"row has none of the known layouts' keys (found {', '.join(sorted(obj)) or 'none'})",
                    fix='use {"messages": [...]}, ShareGPT "conversations", Alpaca "instruction"/"output", '
                        '"prompt"/"chosen"/"rejected", ms-swift "query"/"response", or "text"')


def _text(obj: dict, key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise DataError(f"\"{key}\" must be a string", where=where)
    return value


def _history(obj: dict, where: str) -> list[dict[str, str]]:
    out = []
    for i, pair in enumerate(obj.get("history") or []):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise DataError(f"history[{i}] must be a [question, answer] pair of strings", where=where)
        out += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    return out


def _system(obj: dict) -> list[dict[str, str]]:
    return [{"role": "system", "content": obj["system"]}] if isinstance(obj.get("system"), str) and obj["system"] \
        else []


def to_messages(obj: dict, where: str, data_format: str = "auto") -> tuple[str, list[dict[str, Any]], Any, set[str]]:
    """(layout, messages, rejected: str | None, keys not used); data_format forces a layout."""
    for key, why in REFUSED.items():
        if key in obj:
            raise DataError(f"refused: {why}", where=where, fix="remove the key, or give data for this task")
    layout = detect(obj) if data_format == "auto" else data_format
    missing = sorted(REQUIRED[layout] - set(obj))
    if missing:
        raise DataError(f"--data-format {layout}: the row has no {', '.join(repr(k) for k in missing)} "
                        f"(found {', '.join(sorted(obj)) or 'none'})", where=where,
                        fix="give rows of that layout, or --data-format auto to detect each row's")
    rejected = obj.get("rejected_response")
    if layout == "messages":
        messages = obj["messages"]
    elif layout == "sharegpt":
        turns = obj.get("conversations", obj.get("conversation"))
        if turns is None:
            raise DataError("--data-format sharegpt: the row has no \"conversations\"", where=where)
        if not isinstance(turns, list):
            raise DataError("\"conversations\" must be a list", where=where)
        messages = _sharegpt(turns, obj, where)
    elif layout == "alpaca":
        prompt = _text(obj, "instruction", where) + (f"\n\n{obj['input']}" if obj.get("input") else "")
        messages = [*_system(obj), *_history(obj, where), {"role": "user", "content": prompt},
                    {"role": "assistant", "content": _text(obj, "output", where)}]
    elif layout == "dolly":
        prompt = _text(obj, "instruction", where) + (f"\n\n{obj['context']}" if obj.get("context") else "")
        messages = [{"role": "user", "content": prompt},
                    {"role": "assistant", "content": _text(obj, "response", where)}]
    elif layout == "swift":
        if "query" not in obj:  # ms-swift's pre-training rows: {"response": text}
            messages = [{"role": "assistant", "content": _text(obj, "response", where)}]
        else:
            messages = [*_system(obj), *_history(obj, where), {"role": "user", "content": _text(obj, "query", where)},
                        {"role": "assistant", "content": _text(obj, "response", where)}]
    elif layout == "preference":
        messages, rejected = _preference(obj, where)
    else:  # text
        messages = [{"role": "assistant", "content": _text(obj, "text", where)}]
    return layout, messages, rejected, set(obj) - USED[layout]


def _sharegpt(turns: list, obj: dict, where: str) -> list[dict[str, Any]]:
    """ShareGPT turns ({"from", "value"} or {"role", "content"}) or ms-swift's pairs ({"human",
    "assistant"}: a user and an assistant turn each) as messages, with the row's "system" (or
    "system_prompt") first unless the turns open with their own system turn (ms-swift's rule)."""
    system = next((obj[k] for k in ("system", "system_prompt") if isinstance(obj.get(k), str) and obj[k]), None)
    top = [{"role": "system", "content": system}] if system is not None else []
    if turns and isinstance(turns[0], dict) and not {"from", "role", "value", "content"} & set(turns[0]):
        messages = list(top)
        for i, t in enumerate(turns):  # ms-swift's pairs
            pair = [next((t[k] for k in PAIR_KEYS[role] if k in t), None) if isinstance(t, dict) else None
                    for role in ("user", "assistant")]
            if not all(isinstance(text, str) for text in pair):
                raise DataError(f"conversation[{i}] needs \"human\" and \"assistant\" strings (ms-swift's pairs)",
                                where=where, fix='write each turn as {"human": "...", "assistant": "..."}')
            messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
        return messages
    messages = []
    for i, t in enumerate(turns):
        role = str((t.get("from", t.get("role", "")) if isinstance(t, dict) else "")).lower()
        if role not in SHAREGPT_ROLES:
            raise DataError(f"conversations[{i}] needs \"from\" (human, gpt, system) and \"value\", or the row "
                            "ms-swift's pairs [{\"human\", \"assistant\"}, ...]", where=where)
        messages.append({"role": SHAREGPT_ROLES[role], "content": t.get("value", t.get("content"))})
    return messages if messages and messages[0]["role"] == "system" else [*top, *messages]


def _preference(obj: dict, where: str) -> tuple[list[dict[str, Any]], str]:
    chosen, rejected = obj["chosen"], obj["rejected"]
    if isinstance(chosen, str) and isinstance(rejected, str):  # explicit prompt
        prompt = obj.get("prompt")
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        if not isinstance(prompt, list) or not prompt:
            raise DataError("a preference row with string answers needs a \"prompt\"", where=where)
        return [*_system(obj), *prompt, {"role": "assistant", "content": chosen}], rejected
    if isinstance(chosen, list) and isinstance(rejected, list):  # implicit prompt, or a prompt list
        prompt = obj.get("prompt") or []
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        full_c, full_r = [*prompt, *chosen], [*prompt, *rejected]
        if not full_c or not full_r or full_c[:-1] != full_r[:-1] or full_r[-1].get("role") != "assistant":
            raise DataError("chosen and rejected must share every turn but the final assistant one", where=where,
                            fix="give the shared turns as \"prompt\" and one assistant turn in each")
        return [*_system(obj), *full_c], full_r[-1].get("content")
    raise DataError("\"chosen\" and \"rejected\" must both be strings or both message lists", where=where)
