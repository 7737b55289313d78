"""Writes the shipped sample sets (sft.jsonl, dpo.jsonl, pt.jsonl) from the facts below.

Deterministic: `python -m trainer.assets.make_samples` rewrites byte-identical files. The sets are
small on purpose (a benchmark needs shapes, not knowledge) but real: multi-turn chats with system
prompts, preference pairs whose rejected answer is consistently worse (evasive or wrong), and
plain prose for continued pre-training.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).parent / "samples"

CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
            ("Canada", "Ottawa"), ("Egypt", "Cairo"), ("Norway", "Oslo"), ("Chile", "Santiago"),
            ("India", "New Delhi"), ("Spain", "Madrid"), ("Ghana", "Accra"), ("Poland", "Warsaw"),
            ("Vietnam", "Hanoi"), ("Austria", "Vienna"), ("Cuba", "Havana"), ("Ireland", "Dublin")]
ELEMENTS = [("hydrogen", "H", 1), ("helium", "He", 2), ("carbon", "C", 6), ("nitrogen", "N", 7),
            ("oxygen", "O", 8), ("sodium", "Na", 11), ("iron", "Fe", 26), ("copper", "Cu", 29),
            ("silver", "Ag", 47), ("gold", "Au", 79), ("neon", "Ne", 10), ("zinc", "Zn", 30)]
SYSTEMS = ["You are a concise assistant. Answer in one sentence.",
           "You are a helpful tutor. Show the key step, then the answer.",
           "You answer questions about geography, chemistry and arithmetic."]
EVASIVE = ["I am not sure about that.", "That is hard to say.", "I would rather not guess."]
TOPICS = ["Gradient accumulation adds the gradients of several micro-batches before one optimizer step, "
          "so a small device can train with a large effective batch.",
          "ZeRO stage one partitions the optimizer states across data-parallel ranks; stage two also "
          "partitions the gradients; stage three partitions the parameters themselves.",
          "Activation checkpointing stores only the inputs of each layer and recomputes the rest during "
          "the backward pass, trading about a third more compute for much less memory.",
          "A collective operation such as all-reduce needs every rank to take part; one missing rank "
          "makes all the others wait until a timeout.",
          "Mixed precision keeps a master copy of the weights in fp32 while the forward and backward "
          "passes run in bf16 on tensor cores.",
          "The attention kernel reads queries, keys and values once from memory when it is fused, which "
          "makes long sequences affordable.",
          "Tokens per second counts only the tokens that carry information; padding is measured apart.",
          "A learning rate that is too high makes the loss spike; one that is too low wastes compute."]


def arithmetic(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    op, val = rng.choice([("+", a + b), ("-", a - b), ("*", a * b)])
    wrong = val + rng.choice([-10, -2, -1, 1, 3, 7])
    return f"What is {a} {op} {b}?", f"{a} {op} {b} = {val}.", f"{a} {op} {b} = {wrong}."


def capital(rng: random.Random) -> tuple[str, str, str]:
    country, city = rng.choice(CAPITALS)
    other = rng.choice([c for _, c in CAPITALS if c != city])
    return (f"What is the capital of {country}?", f"The capital of {country} is {city}.",
            f"The capital of {country} is {other}.")


def element(rng: random.Random) -> tuple[str, str, str]:
    name, sym, z = rng.choice(ELEMENTS)
    return (f"What is the chemical symbol and atomic number of {name}?",
            f"The symbol of {name} is {sym} and its atomic number is {z}.",
            f"The symbol of {name} is {sym.lower()}x and its atomic number is {z + 3}.")


def qa(rng: random.Random) -> tuple[str, str, str]:
    return rng.choice([arithmetic, capital, element])(rng)


def sft_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        msgs = [{"role": "system", "content": rng.choice(SYSTEMS)}] if i % 3 else []
        for _ in range(1 + (i % 4 == 0) + (i % 8 == 0)):  # a quarter two turns, an eighth three
            q, a, _ = qa(rng)
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        rows.append({"messages": msgs})
    for i in range(n // 8):  # alpaca-style rows, as many users have them
        q, a, _ = qa(rng)
        rows.append({"instruction": "Answer the question.", "input": q, "output": a})
    return rows


def dpo_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        q, good, bad = qa(rng)
        msgs = [{"role": "system", "content": rng.choice(SYSTEMS)}] if i % 2 else []
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": good}]
        rows.append({"messages": msgs, "rejected_response": rng.choice(EVASIVE) if i % 3 == 0 else bad})
    return rows


def pt_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        facts = [f"The capital of {c} is {k}." for c, k in rng.sample(CAPITALS, 3)]
        facts += [f"{n_.capitalize()} has the symbol {s} and atomic number {z}." for n_, s, z in rng.sample(ELEMENTS, 2)]
        rng.shuffle(facts)
        rows.append({"messages": [{"role": "assistant", "content": TOPICS[i % len(TOPICS)] + " " + " ".join(facts)}]})
    return rows


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, make in (("sft", sft_rows), ("dpo", dpo_rows), ("pt", pt_rows)):
        rows = make(random.Random(name), 96)
        (OUT / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"{OUT / name}.jsonl: {len(rows)} rows")


if __name__ == "__main__":
    main()
