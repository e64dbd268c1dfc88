"""Plain numpy (float64) forward passes of published MoE blocks, written from the models' Hugging Face
code and reading their checkpoint names and layouts: the ground truth for jax_moe.nn.

Linear weights are [out, in]: y = x @ W.T.
"""

import numpy as np


def silu(v):
    return v / (1 + np.exp(-v))


def gelu_tanh(v):
    return 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3)))


def softmax(v):
    e = np.exp(v - v.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def topk(v, k):
    """Indices of the k largest per row, ties to the lower index (torch.topk on distinct values)."""
    return np.argsort(-v, axis=-1, kind="stable")[:, :k]


def swiglu(x, gate, up, down):
    return (silu(x @ gate.T) * (x @ up.T)) @ down.T


def qwen_like(sd, x, E, k, *, p="", norm_topk_prob, shared=None, shared_gate=False):
    """Qwen3-MoE, Qwen2-MoE and OLMoE sparse blocks (softmax in fp32, top-k, optional renorm)."""
    probs = softmax(x @ sd[f"{p}mlp.gate.weight"].T)
    ids = topk(probs, k)
    w = np.take_along_axis(probs, ids, 1)
    if norm_topk_prob:
        w = w / w.sum(1, keepdims=True)
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(k):
            e = ids[t, j]
            q = f"{p}mlp.experts.{e}."
            out[t] += w[t, j] * swiglu(x[t], sd[q + "gate_proj.weight"], sd[q + "up_proj.weight"], sd[q + "down_proj.weight"])
    if shared:
        q = f"{p}mlp.{shared}."
        s = swiglu(x, sd[q + "gate_proj.weight"], sd[q + "up_proj.weight"], sd[q + "down_proj.weight"])
        if shared_gate:
            s = s * (1 / (1 + np.exp(-(x @ sd[f"{p}mlp.shared_expert_gate.weight"].T))))
        out += s
    return out


def mixtral(sd, x, E, k, p=""):
    logits = x @ sd[f"{p}block_sparse_moe.gate.weight"].T
    probs = softmax(logits)
    ids = topk(probs, k)
    w = np.take_along_axis(probs, ids, 1)
    w = w / w.sum(1, keepdims=True)
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(k):
            q = f"{p}block_sparse_moe.experts.{ids[t, j]}."
            out[t] += w[t, j] * swiglu(x[t], sd[q + "w1.weight"], sd[q + "w3.weight"], sd[q + "w2.weight"])
    return out


def deepseek_v3(sd, x, E, k, *, n_group, topk_group, scaling, p=""):
    scores = 1 / (1 + np.exp(-(x @ sd[f"{p}mlp.gate.weight"].T)))
    biased = scores + sd[f"{p}mlp.gate.e_score_correction_bias"]
    T = x.shape[0]
    group_scores = np.sort(biased.reshape(T, n_group, -1), axis=-1)[:, :, -2:].sum(-1)
    groups = topk(group_scores, topk_group)
    mask = np.zeros((T, n_group), bool)
    np.put_along_axis(mask, groups, True, 1)
    allowed = np.repeat(mask, E // n_group, axis=1)
    ids = topk(np.where(allowed, biased, -np.inf), k)
    w = np.take_along_axis(scores, ids, 1)
    w = w / (w.sum(1, keepdims=True) + 1e-20) * scaling
    out = np.zeros_like(x)
    for t in range(T):
        for j in range(k):
            q = f"{p}mlp.experts.{ids[t, j]}."
            out[t] += w[t, j] * swiglu(x[t], sd[q + "gate_proj.weight"], sd[q + "up_proj.weight"], sd[q + "down_proj.weight"])
    q = f"{p}mlp.shared_experts."
    return out + swiglu(x, sd[q + "gate_proj.weight"], sd[q + "up_proj.weight"], sd[q + "down_proj.weight"])


def nomic(sd, x, E, k, p=""):
    probs = softmax(x @ sd[f"{p}mlp.router.layer.weight"].T)
    ids = topk(probs, k)
    w = np.take_along_axis(probs, ids, 1)
    H = x.shape[1]
    w1 = sd[f"{p}mlp.experts.mlp.w1"].reshape(E, -1, H)
    w2 = sd[f"{p}mlp.experts.mlp.w2"].reshape(E, -1, H)
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(k):
            e = ids[t, j]
            out[t] += w[t, j] * (gelu_tanh(x[t] @ w1[e].T) @ w2[e])
    return out + sd[f"{p}mlp.experts.bias"]
