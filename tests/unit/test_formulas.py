"""FLOPs and MFU against numbers computed by hand from the published architectures."""

import pytest

from stackbench.core import formulas

# Qwen3-8B: L=36, h=4096, 32 heads x 128, 8 KV heads, MLP 12288, vocab 151936, untied.
#   per layer: q 4096*4096 + k 4096*1024 + v 4096*1024 + o 4096*4096 = 41,943,040
#              mlp 3 * 4096 * 12288 = 150,994,944; norms 2*4096 + q/k norm 2*128 = 8,448
#   -> 192,946,432 per layer, x36 = 6,946,071,552; final norm 4096; lm_head 151936*4096 = 622,329,856
#   N (no input embedding, lm_head in) = 6,946,071,552 + 4,096 + 622,329,856 = 7,568,405,504
QWEN3_8B_N = 7_568_405_504
# Qwen3-14B: L=40, h=5120, 40 heads x 128, 8 KV heads, MLP 17408, vocab 151936, untied.
#   q 5120*5120 + k 5120*1024 + v 5120*1024 + o 5120*5120 = 62,914,560; mlp 3*5120*17408 = 267,386,880
#   norms 2*5120 + 2*128 = 10,496 -> 330,311,936 per layer, x40 = 13,212,477,440
#   + final norm 5120 + lm_head 151936*5120 = 777,912,320 -> N = 13,990,394,880
QWEN3_14B_N = 13_990_394_880
QWEN3_8B_ATTN = formulas.AttentionShape.uniform(36, 32, 128)
QWEN3_14B_ATTN = formulas.AttentionShape.uniform(40, 40, 128)


@pytest.mark.parametrize("preset, n, layers, heads", [("qwen3-8b", QWEN3_8B_N, 36, 32),
                                                      ("qwen3-14b", QWEN3_14B_N, 40, 40)])
def test_flops_params_of_presets_match_hand_count(preset, n, layers, heads):
    from stackbench.trainer import models

    shape = models.shape(models.resolve(preset))
    assert shape.flops_params == n
    assert (shape.layers, shape.heads, shape.head_dim) == (layers, heads, 128)


def test_train_flops_per_token_qwen3_8b_at_4096():
    # 6N = 45,410,433,024; 12*L*H*Q*T = 12*36*32*128*4096 = 7,247,757,312
    assert formulas.train_flops_per_token(QWEN3_8B_N, QWEN3_8B_ATTN, 4096) == 45_410_433_024 + 7_247_757_312


def test_train_flops_per_token_qwen3_14b_at_2048():
    # 6N = 83,942,369,280; 12*40*40*128*2048 = 5,033,164,800
    assert formulas.train_flops_per_token(QWEN3_14B_N, QWEN3_14B_ATTN, 2048) == 83_942_369_280 + 5_033_164_800


@pytest.mark.parametrize("preset, seq_len, by_hand", [
    # DeepSeek-V3, MLA: 128 heads, query/key 128 nope + 64 rope = 192, value 128; 61 full layers
    #   6 * 128 * (192 + 128) * 61 * 4096 = 61,404,610,560
    ("deepseek-v3", 4096, 61_404_610_560),
    # gpt-oss-120b: 64 heads x 64; 18 full layers (T keys) + 18 sliding (min(T, 128) keys)
    #   6 * 64 * 128 * (18 * 4096 + 18 * 128) = 3,737,124,864
    ("gpt-oss-120b", 4096, 3_737_124_864),
    # Llama-4-Scout: 40 heads x 128; 12 full layers + 36 chunked (8192-token chunks)
    #   at T = 16384: 6 * 40 * 256 * (12 * 16384 + 36 * 8192) = 30,198,988,800
    ("llama-4-scout", 16384, 30_198_988_800),
])
def test_attention_flops_per_architecture_by_hand(preset, seq_len, by_hand):
    from stackbench.trainer import models

    shape = models.shape(models.resolve(preset))
    assert formulas.attention_flops_per_token(shape.attention, seq_len) == by_hand
    assert shape.attention_note == ""  # counted exactly, not approximated


def test_linear_attention_layers_are_counted_as_approximate():
    from stackbench.trainer import models

    shape = models.shape(models.resolve("qwen3-next-80b-a3b"))
    assert shape.attention_windows.count(0) == 36 and shape.attention_windows.count(None) == 12
    assert "36 of 48 layers" in shape.attention_note and "approximate" in shape.attention_note
    # only the 12 softmax layers: 6 * 16 heads * (256 + 256) * 12 * 4096
    assert formulas.attention_flops_per_token(shape.attention, 4096) == 6 * 16 * 512 * 12 * 4096


def test_dpo_adds_the_reference_forward_and_recompute_only_counts_as_hardware():
    train = formulas.train_flops_per_token(QWEN3_8B_N, QWEN3_8B_ATTN, 4096)
    fwd = formulas.forward_flops_per_token(QWEN3_8B_N, QWEN3_8B_ATTN, 4096)
    assert fwd * 3 == train
    model, hw = formulas.task_flops_per_token("dpo", QWEN3_8B_N, QWEN3_8B_ATTN, 4096, recompute=True)
    assert model == train + fwd and hw == train + 2 * fwd
    assert formulas.task_flops_per_token("sft", QWEN3_8B_N, QWEN3_8B_ATTN, 4096) == (train, train)


def test_mfu_on_h100_by_hand():
    # Qwen3-8B SFT at 4096: 52,658,190,336 FLOPs/token; 7,000 tokens/s per GPU
    # -> 368.6 TFLOP/s achieved / 989.4 peak = 0.37256...
    fpt = formulas.train_flops_per_token(QWEN3_8B_N, QWEN3_8B_ATTN, 4096)
    mfu = formulas.utilization(fpt, 7000, formulas.peak_flops("NVIDIA H100 80GB HBM3", "bf16"))
    assert mfu == pytest.approx(52_658_190_336 * 7000 / 989.4e12)
    assert round(mfu, 4) == 0.3726


@pytest.mark.parametrize("name, dtype, peak", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4e12), ("NVIDIA H100 PCIe", "bf16", 756e12),
    ("NVIDIA H200", "bf16", 989.4e12), ("NVIDIA A100-SXM4-80GB", "fp16", 312e12),
    ("NVIDIA H100 80GB HBM3", "fp32", None),            # fp32 peak depends on TF32: no guess
    ("Intel(R) Xeon(R) Platinum 8481C", "fp32", None),  # CPU
    ("NVIDIA GeForce GTX 1080", "bf16", None),          # not in the table
    (None, "bf16", None),
])
def test_peak_table_answers_or_says_unknown(name, dtype, peak):
    assert formulas.peak_flops(name, dtype) == peak
    assert formulas.utilization(1e9, 1e3, formulas.peak_flops(name, dtype)) == (None if peak is None else 1e12 / peak)
