"""DiT backbone (Peebles & Xie, "Scalable Diffusion Models with Transformers", 2023), also used by SiT.

The network follows the paper's design: patchify -> N transformer blocks with adaLN-Zero
conditioning on ``t_emb + y_emb`` (one timestep embedder and one class embedder shared by all
blocks) -> adaptive final layer -> unpatchify.  It is assembled from ppdiffusers building blocks
(``PatchEmbed`` with fixed 2-D sin-cos positions, ``Timesteps``/``TimestepEmbedding``,
``LabelEmbedding``, ``Attention``, ``FeedForward``) and names its sub-layers like ppdiffusers'
``Transformer2DModel`` (``norm_type="ada_norm_zero"``), so that
``tools/convert_dit_to_ppdiffusers.py`` can export it to a ``DiTPipeline`` by copying weights
(the shared embedders are copied into every block, which is how ppdiffusers stores DiT).

Given the same weights it computes the function of facebookresearch/DiT ``models.DiT`` (checked
in a torch venv against the official code, see tests/test_class_conditional.py).  One switch
exists for the export: the official timestep embedding uses frequencies ``10000^(-i/128)``
(``downscale_freq_shift=0``, the default) while ppdiffusers' ``Transformer2DModel`` hard-codes
``10000^(-i/127)`` (shift 1).  A model trained with ``"downscale_freq_shift": 1`` in its config
(the DiT demo config) exports to ``DiTPipeline`` exactly; a shift-0 model exports with an
error that ``tools/convert_dit_to_ppdiffusers.py`` measures and prints.

Inputs/outputs (all float32):
    x: ``(N, in_channels, input_size, input_size)`` noisy latents.
    t: ``(N,)`` timesteps; integers 0..999 for DiT, floats in [0, 1] for SiT (used as given).
    y: ``(N,)`` int64 class ids in ``[0, num_classes)``; ``num_classes`` means "no class" (CFG).
    returns ``(N, out_channels, input_size, input_size)`` with ``out_channels = 2*in_channels``
    when ``learn_sigma`` (first half: eps/velocity prediction, second half: variance interpolation
    ``v`` of Improved DDPM eq. 15), else ``in_channels``.
"""

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from ppdiffusers.models.attention import FeedForward
from ppdiffusers.models.attention_processor import Attention
from ppdiffusers.models.embeddings import LabelEmbedding, PatchEmbed, TimestepEmbedding, Timesteps

from common.arg_checks import read_json_config

__all__ = ["DiT", "CONFIG_KEYS", "load_model_config", "model_kwargs", "count_parameters"]

# every key a model config JSON may hold (anything else is an error, to catch typos)
CONFIG_KEYS = {
    "model_type": "DiT or SiT (which objective the config is meant for)",
    "input_size": "latent side length (image side / VAE factor)",
    "patch_size": "patch side in latent pixels",
    "in_channels": "latent channels",
    "hidden_size": "transformer width",
    "depth": "number of blocks",
    "num_heads": "attention heads",
    "mlp_ratio": "MLP width / hidden_size",
    "class_dropout_prob": "probability to drop the label during training (classifier-free guidance)",
    "num_classes": "number of classes (embedding table has one more row for 'no class')",
    "learn_sigma": "also predict the variance interpolation (doubles the output channels)",
    "downscale_freq_shift": "timestep-embedding frequency shift: 0 = official DiT/SiT timestep_embedding (default), "
                            "1 = ppdiffusers Transformer2DModel, which DiTPipeline runs (exact export)",
    "paper_params": "parameter count reported in the paper (documentation only)",
}
_REQUIRED = ["input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads"]
_DEFAULTS = {"model_type": "DiT", "mlp_ratio": 4.0, "class_dropout_prob": 0.1, "num_classes": 1000, "learn_sigma": True,
             "downscale_freq_shift": 0}


def load_model_config(config_file):
    """Read and validate a model config JSON (see :data:`CONFIG_KEYS`).

    Returns a dict with defaults filled in.

    Raises:
        FileNotFoundError: ``config_file`` does not exist.
        ValueError: unknown key, missing required key, or inconsistent sizes (named in the message).
    """
    cfg = read_json_config(config_file, "--config_file")  # names the file, line and column of a syntax error
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"{config_file}: unknown config key(s) {unknown}; allowed keys: {sorted(CONFIG_KEYS)}")
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ValueError(f"{config_file}: missing required key(s) {missing}")
    out = dict(_DEFAULTS)
    out.update(cfg)
    if out["model_type"] not in ("DiT", "SiT"):
        raise ValueError(f"{config_file}: model_type must be 'DiT' or 'SiT', got {out['model_type']!r}")
    if out["input_size"] % out["patch_size"]:
        raise ValueError(f"{config_file}: input_size {out['input_size']} is not divisible by patch_size {out['patch_size']}")
    if out["downscale_freq_shift"] not in (0, 1):
        raise ValueError(f"{config_file}: downscale_freq_shift must be 0 (official DiT) or 1 (ppdiffusers), got {out['downscale_freq_shift']!r}")
    if out["hidden_size"] % out["num_heads"]:
        raise ValueError(f"{config_file}: hidden_size {out['hidden_size']} is not divisible by num_heads {out['num_heads']}")
    return out


def per_token(v, x, fast=False):
    """A per-sample vector ``v`` ``(N, D)`` as ``(N, 1, D)`` for tokens ``x`` ``(N, T, D)``; with ``fast``
    expanded to ``x``'s shape.  Same numbers: paddle's CPU broadcast of a same-rank ``(N, 1, D)``
    operand takes a slow generic path (``h * (1 + s[:, None]) + b[:, None]`` at ``(32, 16, 128)``:
    fwd+bwd 1.36 ms, 0.31 ms with ``expand``; bench/bench_ops.py ``--rows bias_add``)."""
    v = v[:, None]
    return v.expand(x.shape) if fast else v


def modulate(x, shift, scale, fast=False):
    """adaLN modulation ``x * (1 + scale) + shift`` of tokens ``x`` ``(N, T, D)`` by ``(N, D)``
    vectors (:func:`per_token` broadcasting)."""
    return x * per_token(1 + scale, x, fast) + per_token(shift, x, fast)


class DiTBlock(nn.Layer):
    """adaLN-Zero transformer block (DiT paper, Fig. 3): the conditioning vector ``c`` gives
    shift/scale/gate for the attention and the MLP branch; gates start at zero."""

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0):
        super().__init__()
        no_affine = dict(weight_attr=False, bias_attr=False)
        self.norm1 = nn.LayerNorm(hidden_size, epsilon=1e-6, **no_affine)
        self.adaLN_modulation = nn.Linear(hidden_size, 6 * hidden_size)
        self.attn1 = Attention(query_dim=hidden_size, heads=num_heads, dim_head=hidden_size // num_heads, bias=True)
        self.norm3 = nn.LayerNorm(hidden_size, epsilon=1e-6, **no_affine)
        self.ff = FeedForward(hidden_size, mult=mlp_ratio, activation_fn="gelu-approximate")

        self.fast_broadcast = False

    def set_fast_ops(self, enabled):
        """``common.fast_ops`` hook: broadcast shift/scale/gate with ``expand`` (see :func:`modulate`)."""
        self.fast_broadcast = bool(enabled)

    def forward(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(F.silu(c)).chunk(6, axis=1)
        fast = self.fast_broadcast
        h = modulate(self.norm1(x), shift_msa, scale_msa, fast)
        x = x + per_token(gate_msa, x, fast) * self.attn1(h)
        h = modulate(self.norm3(x), shift_mlp, scale_mlp, fast)
        return x + per_token(gate_mlp, x, fast) * self.ff(h)


class DiT(nn.Layer):
    """Class-conditional latent transformer; arguments are the config keys (see :data:`CONFIG_KEYS`)."""

    def __init__(self, input_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28, num_heads=16,
                 mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=1000, learn_sigma=True, downscale_freq_shift=0):
        super().__init__()
        self.input_size, self.patch_size, self.in_channels = input_size, patch_size, in_channels
        self.hidden_size, self.depth, self.num_heads, self.mlp_ratio = hidden_size, depth, num_heads, mlp_ratio
        self.num_classes, self.class_dropout_prob, self.learn_sigma = num_classes, class_dropout_prob, learn_sigma
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.gradient_checkpointing = False
        self.fast_broadcast = False  # common.fast_ops: see set_fast_ops

        self.pos_embed = PatchEmbed(height=input_size, width=input_size, patch_size=patch_size, in_channels=in_channels,
                                    embed_dim=hidden_size, interpolation_scale=max(input_size // 64, 1))
        # official DiT TimestepEmbedder.timestep_embedding: [cos, sin] of t * 10000^(-i/128), i < 128,
        # i.e. shift 0; ppdiffusers' Transformer2DModel (and so DiTPipeline) hard-codes shift 1 (i/127)
        self.downscale_freq_shift = downscale_freq_shift
        self.time_proj = Timesteps(num_channels=256, flip_sin_to_cos=True, downscale_freq_shift=downscale_freq_shift)
        self.timestep_embedder = TimestepEmbedding(in_channels=256, time_embed_dim=hidden_size)
        self.class_embedder = LabelEmbedding(num_classes, hidden_size, class_dropout_prob)
        self.transformer_blocks = nn.LayerList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm_out = nn.LayerNorm(hidden_size, epsilon=1e-6, weight_attr=False, bias_attr=False)
        self.proj_out_1 = nn.Linear(hidden_size, 2 * hidden_size)
        self.proj_out_2 = nn.Linear(hidden_size, patch_size * patch_size * self.out_channels)
        self.initialize_weights()

    def initialize_weights(self):
        """DiT init (facebookresearch/DiT ``DiT.initialize_weights``): xavier-uniform linears with
        zero bias, N(0, 0.02) embeddings, and zero adaLN / output layers so every block starts as
        the identity and the output is 0.  The official attention has one fused ``qkv`` Linear
        (D -> 3D), so its xavier bound is ``sqrt(6 / 4D)``; the separate ``to_q``/``to_k``/``to_v``
        here are drawn from that same distribution (std ``sqrt(1 / 2D)``), not per-matrix xavier."""
        xavier, zeros, normal = nn.initializer.XavierUniform(), nn.initializer.Constant(0.0), nn.initializer.Normal(std=0.02)
        for layer in self.sublayers():
            if isinstance(layer, nn.Linear):
                xavier(layer.weight)
                if layer.bias is not None:
                    zeros(layer.bias)
        d = self.hidden_size
        qkv_bound = (6.0 / (d + 3 * d)) ** 0.5
        for block in self.transformer_blocks:
            for proj in (block.attn1.to_q, block.attn1.to_k, block.attn1.to_v):
                proj.weight.set_value(paddle.uniform(proj.weight.shape, min=-qkv_bound, max=qkv_bound))
        w = self.pos_embed.proj.weight  # conv (D, C, p, p) initialised like a linear on the flattened patch
        fan_in, fan_out = w.shape[1] * w.shape[2] * w.shape[3], w.shape[0]
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        w.set_value(paddle.uniform(w.shape, min=-bound, max=bound))
        zeros(self.pos_embed.proj.bias)
        normal(self.class_embedder.embedding_table.weight)
        normal(self.timestep_embedder.linear_1.weight)
        normal(self.timestep_embedder.linear_2.weight)
        for block in self.transformer_blocks:
            zeros(block.adaLN_modulation.weight)
            zeros(block.adaLN_modulation.bias)
        for layer in (self.proj_out_1, self.proj_out_2):
            zeros(layer.weight)
            zeros(layer.bias)

    def set_fast_ops(self, enabled):
        """``common.fast_ops`` hook: the final adaLN modulation broadcasts with ``expand`` (:func:`modulate`)."""
        self.fast_broadcast = bool(enabled)

    def enable_gradient_checkpointing(self):
        """``--recompute``: recompute each block's activations in the backward pass."""
        self.gradient_checkpointing = True

    def enable_xformers_memory_efficient_attention(self):
        """Memory-efficient attention needs a GPU kernel; raises on CPU so the caller can fall back."""
        if not paddle.is_compiled_with_cuda():
            raise RuntimeError("memory-efficient attention needs a CUDA build of paddle")
        for block in self.transformer_blocks:
            block.attn1.set_use_memory_efficient_attention_xformers(True)

    def condition(self, t, y):
        """Conditioning vector ``c = t_emb + y_emb`` of shape ``(N, hidden_size)``; labels are dropped
        to ``num_classes`` with ``class_dropout_prob`` in training mode (once, for all blocks)."""
        t = t.reshape([-1]).astype("float32")
        return self.timestep_embedder(self.time_proj(t)) + self.class_embedder(y.reshape([-1]).astype("int64"))

    def unpatchify(self, x):
        """``(N, T, p*p*C)`` tokens -> ``(N, C, H, W)`` image."""
        p, c = self.patch_size, self.out_channels
        h = w = int(round(x.shape[1] ** 0.5))
        x = x.reshape([-1, h, w, p, p, c]).transpose([0, 5, 1, 3, 2, 4])
        return x.reshape([-1, c, h * p, w * p])

    def forward(self, x, t, y):
        """See module docstring for shapes. Raises ValueError on a wrong latent shape."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] != self.input_size or x.shape[3] != self.input_size:
            raise ValueError(f"DiT expects latents of shape (N, {self.in_channels}, {self.input_size}, {self.input_size}), got {list(x.shape)}")
        h = self.pos_embed(x)
        c = self.condition(t, y)
        for block in self.transformer_blocks:
            if self.gradient_checkpointing and self.training and not h.stop_gradient:
                from paddle.distributed.fleet.utils import recompute

                h = recompute(block, h, c)
            else:
                h = block(h, c)
        shift, scale = self.proj_out_1(F.silu(c)).chunk(2, axis=1)
        h = modulate(self.norm_out(h), shift, scale, self.fast_broadcast)
        return self.unpatchify(self.proj_out_2(h))

    def forward_with_cfg(self, x, t, y, cfg_scale, cfg_channels=3):
        """Classifier-free guidance (Ho & Salimans 2022) as in the official ``forward_with_cfg``.

        The batch ``(2N, C, s, s)`` holds the same latents twice, first half with real labels,
        second half with the null label ``num_classes``.  The first ``cfg_channels`` output
        channels are mixed as ``uncond + cfg_scale * (cond - uncond)`` and copied to both halves;
        the other channels (and the learned-variance channels) are kept as predicted.

        ``cfg_channels=3`` is the official DiT/SiT default, which their code keeps "for exact
        reproducibility" of the paper's numbers even though the latents have 4 channels;
        ``cfg_channels=None`` guides all ``in_channels`` (the standard approach, and what
        ppdiffusers' ``DiTPipeline`` does).

        Raises:
            ValueError: ``cfg_channels`` outside ``[1, in_channels]``.
        """
        k = self.in_channels if cfg_channels is None else int(cfg_channels)
        if not 1 <= k <= self.in_channels:
            raise ValueError(f"cfg_channels must be in [1, {self.in_channels}] or None, got {cfg_channels!r}")
        half = x[: x.shape[0] // 2]
        out = self.forward(paddle.concat([half, half], axis=0), t, y)
        eps, rest = out[:, :k], out[:, k:]
        cond, uncond = eps.chunk(2, axis=0)
        guided = uncond + cfg_scale * (cond - uncond)
        return paddle.concat([paddle.concat([guided, guided], axis=0), rest], axis=1)


def model_kwargs(cfg):
    """Constructor arguments of :class:`DiT` from a validated config dict."""
    return {k: v for k, v in cfg.items() if k not in ("model_type", "paper_params")}


def count_parameters(model):
    """Number of trainable scalars (fixed positional embeddings excluded)."""
    return int(sum(p.numel().item() if hasattr(p.numel(), "item") else p.numel() for p in model.parameters() if not p.stop_gradient))
