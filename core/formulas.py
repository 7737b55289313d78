"""FLOPs, MFU and the peak-throughput table: pure functions, unit-tested against hand-computed numbers.

FLOPs per token (PaLM, arXiv 2204.02311 appendix B; torchtitan `models/utils.py`):
  (1) a matmul of an [m,k] by a [k,n] matrix costs 2mkn FLOPs: per token, 2 FLOPs per weight;
  (2) the backward pass costs twice the forward (gradients w.r.t. inputs and weights): 6 per weight;
  (3) attention scores QK^T and their product with V add 2 * 2 * T * (heads * head_dim) per layer
      per token in the forward pass, so 12 * L * H * Q * T for forward + backward. As in PaLM and
      torchtitan the causal mask is not discounted (the kernels' real saving is not counted). Per
      architecture (AttentionShape): MLA's query/key and value widths differ (DeepSeek: 192 and
      128), and a layer with a sliding window (gpt-oss) or chunked attention (Llama 4) of W tokens
      counts min(T, W) keys; layers without softmax attention (linear attention, Mamba) count none
      and the model's shape says the figure is approximate.
  N excludes the input embedding (a lookup, no FLOPs) and includes the output projection; MoE
  counts only the active parameters (top-k experts).
DPO: the policy trains (6N + 12LHQT per token) and the frozen reference runs forward only
(2N + 4LHQT) on the same chosen + rejected tokens.
HFU adds the recomputed forward pass when activation checkpointing is on (2N + 4LHQT per token).
"""

from __future__ import annotations

from dataclasses import dataclass

# Dense (no sparsity) peak FLOP/s by device-name substring and dtype, first match wins: more
# specific names first. fp32 training is left out on purpose: its peak depends on whether TF32 is
# allowed, so an fp32 run gets no MFU rather than a guessed one.
PEAK_FLOPS = [
    # H100 SXM5 datasheet: 989.4 TFLOP/s bf16/fp16 dense (1979 with sparsity)
    # https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet
    ("H100 PCIe", {"bf16": 756e12, "fp16": 756e12}),  # same datasheet, PCIe column
    ("H100 NVL", {"bf16": 835e12, "fp16": 835e12}),   # same datasheet, NVL column
    ("H100", {"bf16": 989.4e12, "fp16": 989.4e12}),
    ("H800", {"bf16": 989.4e12, "fp16": 989.4e12}),   # H100 SXM compute, cut interconnect
    # H200 datasheet: 989 TFLOP/s bf16 dense (same compute as H100 SXM, more and faster HBM)
    # https://www.nvidia.com/en-us/data-center/h200/
    ("H200", {"bf16": 989.4e12, "fp16": 989.4e12}),
    # A100 datasheet: 312 TFLOP/s bf16/fp16 dense
    # https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf
    ("A100", {"bf16": 312e12, "fp16": 312e12}),
    # L40S datasheet: 362.05 TFLOP/s bf16/fp16 dense
    # https://resources.nvidia.com/en-us-l40s/l40s-datasheet-28413
    ("L40S", {"bf16": 362.05e12, "fp16": 362.05e12}),
]


def peak_flops(device_name: str | None, dtype: str) -> float | None:
    """The device's dense peak for dtype, or None when unknown (CPU, unlisted GPU, fp32)."""
    if not device_name:
        return None
    for key, by_dtype in PEAK_FLOPS:
        if key.lower() in device_name.lower():
            return by_dtype.get(dtype)
    return None


@dataclass(frozen=True, slots=True)
class AttentionShape:
    """What attention-score FLOPs depend on. windows: per layer, None for full causal attention over
    the sequence, N for a sliding window or a chunk of N tokens (gpt-oss, Llama 4: a token attends
    to at most N), 0 for a layer without softmax attention (linear attention, Mamba: not counted)."""

    heads: int
    qk_dim: int                      # per head: the query / key width (MLA: nope + rope parts)
    v_dim: int                       # per head: the value width
    windows: tuple[int | None, ...]

    @classmethod
    def uniform(cls, layers: int, heads: int, head_dim: int) -> "AttentionShape":
        return cls(heads, head_dim, head_dim, (None,) * layers)

    def context(self, seq_len: int) -> int:
        """Keys each token's query meets, summed over the layers."""
        return sum(seq_len if w is None else min(seq_len, w) for w in self.windows)


def attention_flops_per_token(attn: AttentionShape, seq_len: int) -> int:
    """Forward + backward attention-score FLOPs per token (step 3 above, per layer): QK^T costs
    2 * H * d_qk and PV 2 * H * d_v per key, times 3 for the backward: 6 * H * (d_qk + d_v) * keys;
    12 * L * H * Q * T when every layer is full and d_qk = d_v = Q."""
    return 6 * attn.heads * (attn.qk_dim + attn.v_dim) * attn.context(seq_len)


def train_flops_per_token(flops_params: int, attn: AttentionShape, seq_len: int) -> int:
    """Model FLOPs per trained token: 6N + attention."""
    return 6 * flops_params + attention_flops_per_token(attn, seq_len)


def forward_flops_per_token(flops_params: int, attn: AttentionShape, seq_len: int) -> int:
    """One forward pass: a third of training."""
    return train_flops_per_token(flops_params, attn, seq_len) // 3


def task_flops_per_token(task: str, flops_params: int, attn: AttentionShape, seq_len: int,
                         recompute: bool = False) -> tuple[int, int]:
    """(model FLOPs, hardware FLOPs) per token fed, for a task. Hardware adds recomputation."""
    model = train_flops_per_token(flops_params, attn, seq_len)
    if task == "dpo":
        model += forward_flops_per_token(flops_params, attn, seq_len)  # the frozen reference model's forward
    hardware = model + (forward_flops_per_token(flops_params, attn, seq_len) if recompute else 0)
    return model, hardware


def utilization(flops_per_token: float, tokens_per_s_per_device: float, peak: float | None) -> float | None:
    """Achieved FLOP/s per device over the peak (MFU with model FLOPs, HFU with hardware FLOPs)."""
    if not peak:
        return None
    return flops_per_token * tokens_per_s_per_device / peak
