"""Writes the shipped sample sets (sft.jsonl, dpo.jsonl, pt.jsonl) from the facts below, in
English, Japanese and Chinese (the languages our users train in; the embedded tokenizer is
trained on these sets, trainer/embedded.py).

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


# the same facts in Japanese and Chinese: (country, capital) and (element) names in each language
CAPITALS_JA = ["フランス/パリ", "日本/東京", "ケニア/ナイロビ", "ペルー/リマ", "カナダ/オタワ", "エジプト/カイロ",
               "ノルウェー/オスロ", "チリ/サンティアゴ", "インド/ニューデリー", "スペイン/マドリード", "ガーナ/アクラ",
               "ポーランド/ワルシャワ", "ベトナム/ハノイ", "オーストリア/ウィーン", "キューバ/ハバナ",
               "アイルランド/ダブリン"]
CAPITALS_ZH = ["法国/巴黎", "日本/东京", "肯尼亚/内罗毕", "秘鲁/利马", "加拿大/渥太华", "埃及/开罗", "挪威/奥斯陆",
               "智利/圣地亚哥", "印度/新德里", "西班牙/马德里", "加纳/阿克拉", "波兰/华沙", "越南/河内",
               "奥地利/维也纳", "古巴/哈瓦那", "爱尔兰/都柏林"]
ELEMENTS_JA = ["水素", "ヘリウム", "炭素", "窒素", "酸素", "ナトリウム", "鉄", "銅", "銀", "金", "ネオン", "亜鉛"]
ELEMENTS_ZH = ["氢", "氦", "碳", "氮", "氧", "钠", "铁", "铜", "银", "金", "氖", "锌"]
PHRASES = {
    "ja": {"capital": ("{c}の首都はどこですか？", "{c}の首都は{k}です。"),
           "element": ("{n}の元素記号と原子番号は何ですか？", "{n}の元素記号は{s}で、原子番号は{z}です。"),
           "arithmetic": ("{q}はいくつですか？", "{q} = {v} です。"),
           "systems": ["あなたは簡潔なアシスタントです。一文で答えてください。",
                       "あなたは親切な先生です。要点を示してから答えてください。"],
           "evasive": ["よくわかりません。", "それは何とも言えません。"],
           "topics": ["勾配累積は、複数のマイクロバッチの勾配を足し合わせてから一回の最適化ステップを行うので、"
                      "小さなデバイスでも大きな実効バッチで学習できます。",
                      "ZeRO のステージ1はオプティマイザの状態をデータ並列のランクに分割し、ステージ2は勾配も、"
                      "ステージ3はパラメータそのものも分割します。",
                      "活性化チェックポイントは各層の入力だけを保存し、残りを逆伝播の間に再計算するので、計算量は"
                      "約三分の一増えますが、メモリは大きく減ります。",
                      "集団通信はすべてのランクの参加を必要とし、一つのランクが欠けると他のランクはタイムアウトまで"
                      "待ち続けます。"]},
    "zh": {"capital": ("{c}的首都是哪里？", "{c}的首都是{k}。"),
           "element": ("{n}的元素符号和原子序数是什么？", "{n}的元素符号是{s}，原子序数是{z}。"),
           "arithmetic": ("{q}等于多少？", "{q}等于{v}。"),
           "systems": ["你是一个简洁的助手，请用一句话回答。", "你是一位耐心的老师，先说明关键步骤，再给出答案。"],
           "evasive": ["我不太确定。", "这很难说。"],
           "topics": ["梯度累积会先把多个微批次的梯度相加，再执行一次优化器更新，"
                      "因此小显存的设备也能用大的有效批次训练。",
                      "ZeRO 第一阶段把优化器状态切分到各个数据并行进程上，"
                      "第二阶段还切分梯度，第三阶段连参数本身也切分。",
                      "激活检查点只保存每一层的输入，在反向传播时重新计算其余部分，"
                      "多花大约三分之一的计算，换来大量的显存节省。",
                      "集合通信需要所有进程都参与，只要少了一个进程，其他进程就会一直等到超时。"]},
}


def qa_in(lang: str, rng: random.Random) -> tuple[str, str, str]:
    """A question, its answer and a wrong answer in Japanese or Chinese."""
    p = PHRASES[lang]
    kind = rng.choice(["capital", "element", "arithmetic"])
    ask, say = p[kind]
    if kind == "capital":
        pairs = [x.split("/") for x in (CAPITALS_JA if lang == "ja" else CAPITALS_ZH)]
        (c, k), (_, other) = rng.sample(pairs, 2)
        return ask.format(c=c), say.format(c=c, k=k), say.format(c=c, k=other)
    if kind == "element":
        i = rng.randrange(len(ELEMENTS))
        n = (ELEMENTS_JA if lang == "ja" else ELEMENTS_ZH)[i]
        _, s, z = ELEMENTS[i]
        return ask.format(n=n), say.format(n=n, s=s, z=z), say.format(n=n, s=s.lower() + "x", z=z + 3)
    q, a, wrong = arithmetic(rng)
    expr = q.removeprefix("What is ").removesuffix("?")
    return ask.format(q=expr), say.format(q=expr, v=a.split("= ")[1].rstrip(".")), \
        say.format(q=expr, v=wrong.split("= ")[1].rstrip("."))


LANGS = ("en", "en", "ja", "zh")  # row i's language: LANGS[i % 4]


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


def qa(rng: random.Random, lang: str = "en") -> tuple[str, str, str]:
    return rng.choice([arithmetic, capital, element])(rng) if lang == "en" else qa_in(lang, rng)


def systems(lang: str) -> list[str]:
    return SYSTEMS if lang == "en" else PHRASES[lang]["systems"]


def sft_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        lang = LANGS[i % 4]
        msgs = [{"role": "system", "content": rng.choice(systems(lang))}] if i % 3 else []
        for _ in range(1 + (i % 8 == 0) + (i % 16 == 0)):  # an eighth two turns, a sixteenth three
            q, a, _ = qa(rng, lang)
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        rows.append({"messages": msgs})
    for i in range(n // 8):  # alpaca-style rows, as many users have them
        q, a, _ = qa(rng)
        rows.append({"instruction": "Answer the question.", "input": q, "output": a})
    return rows


def dpo_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        lang = LANGS[i % 4]
        q, good, bad = qa(rng, lang)
        msgs = [{"role": "system", "content": rng.choice(systems(lang))}] if i % 2 else []
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": good}]
        evasive = EVASIVE if lang == "en" else PHRASES[lang]["evasive"]
        rows.append({"messages": msgs, "rejected_response": rng.choice(evasive) if i % 3 else bad})
    return rows


def pt_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        lang = LANGS[i % 4]
        if lang != "en":
            facts = [qa_in(lang, rng)[1] for _ in range(4)]
            topics = PHRASES[lang]["topics"]
            rows.append({"messages": [{"role": "assistant", "content": topics[i % len(topics)] + "".join(facts)}]})
            continue
        facts = [f"The capital of {c} is {k}." for c, k in rng.sample(CAPITALS, 3)]
        facts += [f"{n_.capitalize()} has the symbol {s} and atomic number {z}."
                  for n_, s, z in rng.sample(ELEMENTS, 2)]
        rng.shuffle(facts)
        rows.append({"messages": [{"role": "assistant", "content": TOPICS[i % len(TOPICS)] + " " + " ".join(facts)}]})
    return rows


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, make in (("sft", sft_rows), ("dpo", dpo_rows), ("pt", pt_rows)):
        rows = make(random.Random(name), 96)
        (OUT / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                           encoding="utf-8")
        print(f"{OUT / name}.jsonl: {len(rows)} rows")


if __name__ == "__main__":
    main()
