"""Expert-layer shapes of published models and of the seed crate's benchmark."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class MoEShape:
    name: str
    hidden: int  # H
    intermediate: int  # I (per expert)
    experts: int  # E
    top_k: int  # k
    moe_type: str = "qwen3"
    activation: str = "silu"

    def flops(self, tokens: int) -> int:
        """Matmul FLOPs of one forward with T tokens (2 per multiply-add)."""
        matrices = 3 if self.moe_type == "qwen3" else 2
        return 2 * tokens * self.top_k * self.hidden * self.intermediate * matrices

    def expert_bytes(self, itemsize: int) -> int:
        """Weight bytes of one expert."""
        matrices = 3 if self.moe_type == "qwen3" else 2
        return matrices * self.hidden * self.intermediate * itemsize


SHAPES = {
    s.name: s
    for s in [
        MoEShape("seed_nomic", 768, 3072, 8, 2, moe_type="nomic", activation="gelu"),
        MoEShape("seed_qwen3", 768, 3072, 8, 2),
        MoEShape("qwen3_30b_a3b", 2048, 768, 128, 8),
        MoEShape("mixtral_8x7b", 4096, 14336, 8, 2),
        MoEShape("olmoe", 2048, 1024, 64, 8),
        MoEShape("deepseek_v3", 7168, 2048, 256, 8),
    ]
}
