"""Sentences the embedded tokenizer never saw (not in the shipped samples), per language, for its
tokens-per-character test against Qwen3's real tokenizer (tests/unit/test_embedded.py)."""

HELD_OUT = {
    "en": ["It rained all morning, so I walked to the station with an umbrella.",
           "How long does one optimizer step take when this model trains on eight nodes?",
           "The new dataset holds about ten thousand questions and answers written by our team.",
           "When a run fails, read the last few lines of its log before anything else.",
           "We plan to visit the old temples of Kyoto with friends at the weekend."],
    "ja": ["今日は朝から雨が降っていたので、駅まで傘を持って歩きました。",
           "このモデルを八台のノードで学習させると、一回のステップにかかる時間はどのくらいですか。",
           "新しいデータセットには、日本語の質問と回答が約一万件含まれています。",
           "エラーが出たときは、まずログの最後の数行を確認してください。",
           "週末に友人と一緒に京都の古いお寺を訪ねる予定です。"],
    "zh": ["今天早上下雨，所以我带着伞走到了地铁站。",
           "如果用八个节点训练这个模型，每一步大概需要多长时间？",
           "新的数据集包含大约一万条中文问题和回答。",
           "出现错误时，请先查看日志的最后几行。",
           "周末我打算和朋友一起去北京参观故宫。"],
}
