"""Train a small decoder block with jax-moe's MoE layer (flax.nnx + optax, one jax.jit step).

    python examples/train_moe.py                       # CPU-sized, about a minute
    python examples/train_moe.py --size gpu            # a realistic block on a GPU
    python examples/train_moe.py --steps 5 --size tiny # a smoke test

Synthetic data with structure to learn: each sequence walks a fixed random successor table,
with a few random jumps, so next-token loss falls from log(vocab) towards the jump entropy.
Prints loss and tokens/s; saves the loss curve as a PNG (when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jax_moe.nn import MoE, MoEConfig

SIZES = {
    # vocab, hidden, heads, experts, top_k, expert intermediate, batch, sequence
    "tiny": (64, 32, 2, 4, 2, 32, 4, 16),
    "cpu": (256, 128, 4, 8, 2, 128, 16, 64),
    "gpu": (4096, 1024, 16, 64, 8, 512, 32, 512),
}


class DecoderBlock(nnx.Module):
    """Embedding -> causal self-attention -> MoE feed-forward (pre-norm, residual) -> logits."""

    def __init__(self, vocab: int, moe: MoEConfig, heads: int, *, rngs: nnx.Rngs):
        H = moe.hidden_size
        self.embed = nnx.Embed(vocab, H, rngs=rngs)
        self.attention_norm = nnx.RMSNorm(H, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(heads, H, dtype=moe.dtype, decode=False, rngs=rngs)
        self.moe_norm = nnx.RMSNorm(H, rngs=rngs)
        self.moe = MoE(moe, rngs=rngs)
        self.head = nnx.Linear(H, vocab, use_bias=False, rngs=rngs)

    def __call__(self, tokens: jax.Array):
        x = self.embed(tokens)
        mask = nnx.make_causal_mask(tokens)
        x = x + self.attention(self.attention_norm(x), mask=mask)
        y, aux = self.moe(self.moe_norm(x), return_aux=True)
        x = x + y.astype(x.dtype)
        return self.head(x.astype(jnp.float32)), aux


def synthetic_batches(vocab: int, batch: int, seq: int, seed: int = 0):
    """Sequences following a fixed successor table, with 10% random jumps."""
    rng = np.random.default_rng(seed)
    successor = rng.permutation(vocab)
    while True:
        tokens = np.empty((batch, seq + 1), np.int32)
        tokens[:, 0] = rng.integers(0, vocab, batch)
        for t in range(seq):
            jump = rng.random(batch) < 0.1
            tokens[:, t + 1] = np.where(jump, rng.integers(0, vocab, batch), successor[tokens[:, t]])
        yield jnp.asarray(tokens)


@nnx.jit
def train_step(model: DecoderBlock, optimizer: nnx.Optimizer, tokens: jax.Array):
    def loss_fn(model):
        logits, aux = model(tokens[:, :-1])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
        return ce + 0.01 * aux.load_balancing_loss + 1e-3 * aux.router_z_loss, (ce, aux)

    (_, (ce, aux)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return ce, aux.tokens_per_expert


def progress(step: int, total: int, loss: float, tokens_per_s: float, width: int = 30) -> str:
    done = int(width * step / total)
    return f"\r[{'#' * done}{'.' * (width - done)}] step {step}/{total}  loss {loss:.4f}  {tokens_per_s:,.0f} tok/s"


def main(argv=None) -> list[float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out", default="loss_curve.png", help="loss-curve PNG ('' for none)")
    args = parser.parse_args(argv)

    vocab, hidden, heads, experts, top_k, intermediate, batch, seq = SIZES[args.size]
    moe = MoEConfig.qwen3_moe(hidden_size=hidden, intermediate_size=intermediate, num_experts=experts,
                              top_k=top_k, dtype=jnp.dtype(args.dtype), initializer_range=hidden**-0.5)
    model = DecoderBlock(vocab, moe, heads, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adamw(args.lr), wrt=nnx.Param)
    batches = synthetic_batches(vocab, batch, seq)
    print(f"{args.size}: vocab {vocab}, hidden {hidden}, {experts} experts top-{top_k}, batch {batch}x{seq}, "
          f"{args.dtype} on {jax.devices()[0].device_kind}")

    losses, start, counted = [], None, 0
    for step in range(1, args.steps + 1):
        loss, tokens_per_expert = train_step(model, optimizer, next(batches))
        losses.append(float(loss))  # a host sync per step: fine for a demo
        if step == 1:
            start = time.perf_counter()  # leave compilation out of the rate
        else:
            counted += batch * seq
        if step % max(1, args.steps // 50) == 0 or step == args.steps:
            rate = counted / max(time.perf_counter() - start, 1e-9)
            print(progress(step, args.steps, losses[-1], rate), end="", flush=True)
    print(f"\nfinal loss {losses[-1]:.4f} (start {losses[0]:.4f}, uniform {np.log(vocab):.4f}); "
          f"tokens per expert in the last batch: {np.asarray(tokens_per_expert).tolist()}")

    if args.out:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib not installed: no loss curve")
        else:
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.plot(range(1, len(losses) + 1), losses)
            ax.set(xlabel="step", ylabel="cross-entropy", title=f"jax-moe decoder block ({args.size})")
            fig.savefig(args.out, dpi=100)
            print(f"loss curve: {args.out}")
    return losses


if __name__ == "__main__":
    main(sys.argv[1:])
