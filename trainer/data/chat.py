"""Any Hugging Face chat template -> the rendered text and which of its characters carry loss.

What is learned of an assistant turn (SFT: every one; DPO: the final one): its content as the
template renders it, plus the special token that closes the turn when the template writes one
right after it (<|im_end|>, <|eot_id|>, <end_of_turn>, </s>): the model must learn to stop; and
the line break the template writes right after that token (ms-swift's ChatML suffix is
`<|im_end|>\\n`, LLaMA-Factory's too: the same loss as theirs). What else the template adds is
not learned: role headers, Llama 3.1's date lines in the system turn, and Qwen3's empty
`<think>\\n\\n</think>\\n\\n` block, which its template writes
before the last answer of a row without reasoning: it is the template's, not the row's, and
learning it would teach the model to skip thinking (ms-swift's `ignore_empty_think`). Reasoning
that a row does carry (`<think>...</think>` in the content) is learned where the template keeps it.

How the characters are found, in order:
  1. the template's own `{% generation %}` markers (transformers' return_assistant_tokens_mask);
  2. the template rendered once per sequence of roles with every content replaced by a unique
     marker: the real render must be exactly the text around the markers with each content (or it
     stripped, as templates that `| trim` write) in its place. This holds for templates that treat
     content as opaque text: ChatML, Qwen3's, Llama 3.x's, Mistral's, Gemma's;
  3. otherwise (a template that rewrites content, e.g. Qwen3's on reasoning rows): one render per
     turn with only that turn's content replaced; what differs from the real render is the turn.
Never a prefix assumption (rendering a conversation's beginning as a prefix of the whole), which
Qwen3's and Llama 3.1's templates break.
"""

from __future__ import annotations

import re
from typing import Any

from stackbench.core.errors import DataError

_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")
_CLOSER = re.compile(r"end|eot|eom|^</", re.I)
MARK = "\ue000{}\ue001"  # private-use code points: no template or dataset writes them


def marker(k: int) -> str:
    return MARK.format(k)


class Template:
    """The tokenizer's chat template, rendering conversations with their loss spans."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.source = tokenizer.chat_template or ""
        self.has_generation = bool(_GENERATION.search(self.source))
        specials = set(tokenizer.all_special_tokens)
        specials |= {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special}
        # the tokens that can close a turn: EOS, and special tokens named for an end (<|im_end|>,
        # <|eot_id|>, <|eom_id|>, <end_of_turn>, <|end|>, </s>), never a header or an image token
        ends = {s for s in specials if _CLOSER.search(s)} | {tokenizer.eos_token or ""}
        self.closers = sorted((s for s in ends if s), key=len, reverse=True)
        self._skeletons: dict[tuple[str, ...], list[str] | None] = {}

    def render(self, messages: list[dict], where: str) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        except Exception as e:  # jinja's TemplateError from raise_exception(), or the template's own bug
            raise template_refused(e, where) from None

    def spans(self, messages: list[dict], where: str, last_only: bool) -> tuple[str, list[tuple[int, int]]]:
        """(text, [(start, end)] character spans that carry loss)."""
        turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        turns = turns[-1:] if last_only else turns
        text = self.render(messages, where)
        found = self._by_markers(messages, turns, text, where)
        if found is None:
            found = [self._by_difference(messages, i, text, where) for i in turns]
        return text, [(a, self._close(text, b)) for a, b in found]

    def _by_markers(self, messages, turns, text, where) -> list[tuple[int, int]] | None:
        """Every content replaced by a marker: the template's own text around the contents, the same
        for every conversation of these roles (rendered once per role sequence). The real render
        must be exactly that text with each content (or it stripped) in its place, else None."""
        roles = tuple(m["role"] for m in messages)
        if roles not in self._skeletons:
            skeleton = self.render([dict(m, content=marker(i)) for i, m in enumerate(messages)], where)
            pieces = re.split("\ue000(\\d+)\ue001", skeleton)  # [s0, k0, s1, k1, ..., sn]
            ordered = [int(k) for k in pieces[1::2]] == list(range(len(messages)))
            self._skeletons[roles] = pieces[0::2] if ordered else None
        pieces = self._skeletons[roles]
        if pieces is None or not text.startswith(pieces[0]):
            return None
        pos, found = len(pieces[0]), {}
        for i, m in enumerate(messages):
            after, content = pieces[i + 1], m["content"]
            for rendered in dict.fromkeys((content, content.strip(), content.lstrip(), content.rstrip())):
                end = pos + len(rendered)
                if text.startswith(rendered, pos) and text.startswith(after, end):
                    break
            else:
                return None
            found[i] = (pos, end)
            pos = end + len(after)
        return [found[i] for i in turns] if pos == len(text) else None

    def _by_difference(self, messages, turn, text, where) -> tuple[int, int]:
        other = self.render([dict(m, content=marker(0)) if i == turn else m for i, m in enumerate(messages)], where)
        start = 0
        limit = min(len(text), len(other))
        while start < limit and text[start] == other[start]:
            start += 1
        tail = 0
        while tail < limit - start and text[-1 - tail] == other[-1 - tail]:
            tail += 1
        end = len(text) - tail
        if end <= start:
            raise DataError(f"the chat template writes nothing of assistant turn {turn}", where=where,
                            fix="check the turn's content against the template (e.g. a reasoning-only answer)")
        return start, end

    def _close(self, text: str, end: int) -> int:
        """The end of the span extended over the special token that closes the turn, if one follows,
        and the line break the template ends the turn with."""
        for s in self.closers:
            if text.startswith(s, end):
                end += len(s)
                return end + 1 if text.startswith("\n", end) else end
        return end

    def encode(self, messages: list[dict], where: str, last_only: bool):
        """(ids, learned) for templates with {% generation %} markers: transformers' own mask."""
        out = self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                 return_assistant_tokens_mask=True)
        ids, mask = list(out["input_ids"]), [bool(x) for x in out["assistant_masks"]]
        if last_only:  # keep only the last run of learned tokens (the final assistant turn)
            last = max((i for i, m in enumerate(mask) if m), default=-1)
            first = last
            while first > 0 and mask[first - 1]:
                first -= 1
            mask = [first <= i <= last for i in range(len(mask))]
        if not any(mask):
            raise DataError("the template's {% generation %} markers enclose no token of the assistant turns",
                            where=where)
        return ids, mask


def template_refused(e: Exception, where: str) -> DataError:
    message = str(e).strip() or type(e).__name__
    fix = "make the rows fit the model's template"
    if "system" in message.lower():
        fix = "this template takes no system turn: fold it into the first user turn, or remove it"
    elif "alternat" in message.lower():
        fix = "this template needs user and assistant turns alternating: merge consecutive turns of one role"
    return DataError(f"the chat template refuses this conversation: {message}", where=where, fix=fix)


def learned_mask(offsets: Any, spans: list[tuple[int, int]]):
    """A token is learned when its first character lies inside a span (numpy: one pass, no loop)."""
    import numpy as np

    starts = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)[:, 0]
    if not spans:
        return np.zeros(len(starts), dtype=bool)
    bounds = np.asarray(spans, dtype=np.int64).reshape(-1)
    return np.searchsorted(bounds, starts, side="right") % 2 == 1
