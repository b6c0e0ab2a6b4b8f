"""Fastest Paddle path per hot op (issue 17 item 2): fwd+bwd ms of each Paddle alternative at a demo shape,
and the same op in PyTorch (``--compare torch``: this file run by the torch interpreter, ``--torch_child``;
torch never enters the Paddle process).

    python bench/bench_ops.py [--rows GROUP ...] [--compare torch --torch_python PY]
    python bench/bench_ops.py --rows demo_ddpm demo_sd demo_dit demo_vae demo_uvit   # before/after of whole demo steps
    python bench/bench_ops.py --profile ddpm sd dit vae uvit [--fast_ops False]      # paddle.profiler hot ops per demo step

Groups (``--rows``; the default runs the first seven):

* ``attention`` (B8 L256 H4 D32, the issue's shape): manual matmul softmax in [B, H, L, D] and [B*H, L, D]
  layouts, ``F.scaled_dot_product_attention`` ([B, L, H, D]), ``paddle.incubate.nn.memory_efficient_attention``
  (reported with its error when it does not run on CPU).
* ``optimizer``: AdamW step on the run_train_ddpm.sh UNet's parameters, default vs ``use_multi_tensor=True``.
* ``to_static``: the DDPM demo loss eager vs ``paddle.jit.to_static(full_graph=True)`` (CINN only if compiled in).
* ``bias_add``: conv bias as paddle adds it (``[1, C, 1, 1]``) vs ``[C, 1, 1]`` vs ``expand``; the broadcast adds of
  the demo models (time embedding ``[B, C, 1, 1]``, Linear bias on ``[B, L, C]``, DiT adaLN ``[B, 1, C]``).
* ``norm_act``: GroupNorm + SiLU and LayerNorm, paddle's ops vs compositions (mean/var, layer_norm per group,
  group_norm for LayerNorm) at the demo shapes.
* ``conv``: 3x3 conv NCHW vs NHWC vs unfold + matmul; ``Downsample2D``'s pad + conv vs the conv's own
  asymmetric padding; ``Upsample2D``'s nearest interpolate vs reshape + expand; 1x1 conv vs matmul.
* ``attention_demo``: the ppdiffusers ``Attention`` at the SD / DiT demo shapes with each processor
  (``AttnProcessor``, the CPU default; ``AttnProcessor2_5``; paddle SDPA; manual matmul softmax) and U-ViT's
  attention, each with paddle's stride kernels on and off.
* ``demo_ddpm`` / ``demo_sd`` / ``demo_dit`` / ``demo_vae`` / ``demo_uvit``: one demo training step (the bench
  rows' configs) in ONE process, stock paddle vs ``common.fast_ops`` (and each half of it), switched round-robin
  before every timed step, so machine load hits every configuration alike.
* ``threads``: the DDPM demo step as 1 process x 2 threads (batch 16) vs 2 processes x 1 thread (batch 8 each, at
  the same time; no gradient all-reduce): images/s.  It uses both cores.

One process per group; ms = median of the timed calls (bench_common.time_steps; sub-millisecond ops: at least
20 timed calls after 3 warm-up calls).  Micro groups run with paddle's defaults (stride kernels on) unless a
row says otherwise.
"""
import argparse
import json
import os
import sys

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "ddpm_tutorial"))
from bench_common import add_bench_arguments, check_bench_arguments, emit, load_text, run_child, time_steps  # noqa: E402

B, L, H, D = 8, 256, 4, 32


def _paddle_attention(warmup, steps):
    import paddle
    import paddle.nn.functional as F

    out = {}
    q0 = paddle.randn([B, H, L, D])

    def fb(fn, *xs):
        xs = [x.detach() for x in xs]
        for x in xs:
            x.stop_gradient = False

        def step():
            y = fn(*xs)
            y.sum().backward()
            float(y.mean())
        return time_steps(step, warmup, steps)["ms_per_step"]

    def bhld(q, k, v):
        return paddle.matmul(F.softmax(paddle.matmul(q, k, transpose_y=True) * D ** -0.5, axis=-1), v)

    out["matmul softmax [B,H,L,D]"] = fb(bhld, q0, q0, q0)
    q1 = q0.reshape([B * H, L, D])
    out["bmm softmax [B*H,L,D]"] = fb(lambda q, k, v: paddle.bmm(F.softmax(paddle.bmm(q, k.transpose([0, 2, 1])) * D ** -0.5, axis=-1), v), q1, q1, q1)
    q2 = q0.transpose([0, 2, 1, 3])
    for name, fn in [("F.scaled_dot_product_attention [B,L,H,D]", lambda q, k, v: F.scaled_dot_product_attention(q, k, v)),
                     ("incubate memory_efficient_attention [B,L,H,D]", None)]:
        try:
            if fn is None:
                from paddle.incubate.nn.memory_efficient_attention import memory_efficient_attention
                fn = lambda q, k, v: memory_efficient_attention(q, k, v)  # noqa: E731
            out[name] = fb(fn, q2, q2, q2)
        except Exception as e:  # not on CPU: keep the error
            out[name] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    return out


def _ddpm_unet():
    from denoising_diffusion import build_unet

    return build_unet(32, (16, 32, 64), (), 1)


def _paddle_optimizer(warmup, steps):
    import paddle

    out = {}
    for name, kw in [("AdamW default", {}), ("AdamW use_multi_tensor=True", {"use_multi_tensor": True})]:
        unet = _ddpm_unet()
        x = paddle.rand([8, 3, 32, 32])
        unet(x, paddle.zeros([8], "int64")).sample.mean().backward()
        try:
            opt = paddle.optimizer.AdamW(learning_rate=1e-4, parameters=unet.parameters(), weight_decay=0.01, **kw)
            out[name] = time_steps(lambda: (opt.step(), float(unet.parameters()[0].sum())), warmup, steps)["ms_per_step"]
        except Exception as e:
            out[name] = f"error: {type(e).__name__}: {str(e)[:120]}"
    return out


def _paddle_to_static(warmup, steps):
    import paddle
    import paddle.nn.functional as F
    from ppdiffusers import DDPMScheduler

    out = {}
    unet = _ddpm_unet()
    sched = DDPMScheduler(num_train_timesteps=1000)
    x = paddle.rand([8, 3, 32, 32]) * 2 - 1

    def loss_fn(x, noise, t):
        return F.mse_loss(unet(sched.add_noise(x, noise, t), t).sample, noise)

    def run(fn):
        def step():
            noise = paddle.randn(x.shape)
            t = paddle.randint(0, 1000, [8], dtype="int64")
            loss = fn(x, noise, t)
            loss.backward()
            unet.clear_gradients()
            float(loss)
        return time_steps(step, warmup, steps)["ms_per_step"]

    out["eager loss fwd+bwd"] = run(loss_fn)
    try:
        out["to_static(full_graph=True) loss fwd+bwd"] = run(paddle.jit.to_static(loss_fn, full_graph=True))
    except Exception as e:
        out["to_static(full_graph=True) loss fwd+bwd"] = f"error: {type(e).__name__}: {str(e)[:120]}"
    out["CINN"] = "compiled in" if paddle.is_compiled_with_cinn() else "not compiled into this CPU wheel"
    return out


# ------------------------------------------------------------------------------------------ micro groups
def _micro(warmup, steps):
    """Warm-up and timed calls of one sub-millisecond op: at least 3 and 20 (a median of more calls)."""
    return max(warmup, 3), max(steps, 20)


def _paddle_fb(warmup, steps):
    """``fb(fn, *xs)``: median ms of ``fn(*xs)`` forward + ``backward`` (all inputs need grad); errors are returned as text."""
    import paddle

    warmup, steps = _micro(warmup, steps)

    def fb(fn, *xs):
        xs = [x.detach() for x in xs]
        for x in xs:
            x.stop_gradient = False

        def step():
            y = fn(*xs)
            y.backward(paddle.ones_like(y))
            for x in xs:
                x.clear_gradient(False)
        try:
            return time_steps(step, warmup, steps)["ms_per_step"]
        except Exception as e:  # a path that does not run here: keep the error
            return f"error: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    return fb


def _torch_fb(warmup, steps):
    import torch

    warmup, steps = _micro(warmup, steps)

    def fb(fn, *xs):
        xs = [x.detach().requires_grad_(True) for x in xs]

        def step():
            y = fn(*xs)
            y.backward(torch.ones_like(y))
            for x in xs:
                x.grad = None
        return time_steps(step, warmup, steps)["ms_per_step"]
    return fb


CONV_SHAPES = [(8, 16, 32), (8, 32, 32), (32, 32, 8)]  # (N, C, H=W): DDPM demo level 0 (batch 8), VAE demo level 0, SD demo UNet level 0 (batch 32)
LINEAR_SHAPES = [(32, 16, 128, 512), (64, 25, 128, 384)]  # (B, L, C_in, C_out): DiT/SiT demo MLP fc1, U-ViT demo qkv (batch 64, 25 tokens)
GN_SHAPES = [(8, 16, 32, 16), (8, 32, 32, 16), (32, 32, 8, 16)]  # (N, C, H=W, groups): DDPM demo, VAE demo, SD demo UNet
LN_SHAPES = [(32, 16, 128, False), (64, 25, 128, True), (32, 64, 32, True)]  # (B, L, C, affine): DiT demo (no affine), U-ViT demo, SD demo transformer


def _paddle_bias_add(warmup, steps):
    import paddle
    import paddle.nn.functional as F

    from common.fast_ops import _linear_function

    fb, out = _paddle_fb(warmup, steps), {}
    for n, c, h in CONV_SHAPES:
        x, w, b = paddle.randn([n, c, h, h]), paddle.randn([c, c, 3, 3]) * 0.1, paddle.randn([c])
        tag = f"conv3x3 [{n},{c},{h},{h}]"
        out[f"{tag}: F.conv2d(x, w, b) (nn.Conv2D: bias as [1,C,1,1])"] = fb(lambda x, w, b: F.conv2d(x, w, b, padding=1), x, w, b)
        out[f"{tag}: F.conv2d(x, w) + b.reshape([C,1,1]) (fast_ops conv_bias)"] = fb(lambda x, w, b: F.conv2d(x, w, padding=1) + b.reshape([-1, 1, 1]), x, w, b)
        out[f"{tag}: F.conv2d(x, w) + b.reshape([1,C,1,1]).expand(shape)"] = fb(lambda x, w, b: (lambda y: y + b.reshape([1, -1, 1, 1]).expand(y.shape))(F.conv2d(x, w, padding=1)), x, w, b)
        out[f"{tag}: F.conv2d(x, w) only (no bias)"] = fb(lambda x, w: F.conv2d(x, w, padding=1), x, w)
    n, c, h = CONV_SHAPES[0]
    x, b, t = paddle.randn([n, c, h, h]), paddle.randn([c]), paddle.randn([n, c, 1, 1])
    tag = f"add onto [{n},{c},{h},{h}]"
    out[f"{tag}: + [1,C,1,1]"] = fb(lambda x, b: x + b.reshape([1, -1, 1, 1]), x, b)
    out[f"{tag}: + [C,1,1]"] = fb(lambda x, b: x + b.reshape([-1, 1, 1]), x, b)
    out[f"{tag}: + [1,C,1,1].expand"] = fb(lambda x, b: x + b.reshape([1, -1, 1, 1]).expand(x.shape), x, b)
    out[f"{tag}: + temb [B,C,1,1] (ResnetBlock2D)"] = fb(lambda x, t: x + t, x, t)
    out[f"{tag}: * [1,C,1,1] (same slow path for multiply)"] = fb(lambda x, b: x * b.reshape([1, -1, 1, 1]), x, b)
    out[f"{tag}: + same shape (reference)"] = fb(lambda x, y: x + y, x, x)
    for bb, ll, ci, co in LINEAR_SHAPES:
        x, w, b = paddle.randn([bb, ll, ci]), paddle.randn([ci, co]) * 0.1, paddle.randn([co])
        tag = f"linear [{bb},{ll},{ci}]x[{ci},{co}]"
        out[f"{tag}: F.linear (matmul + add [C])"] = fb(F.linear, x, w, b)
        out[f"{tag}: matmul + b.expand(shape)"] = fb(lambda x, w, b: (lambda y: y + b.expand(y.shape))(paddle.matmul(x, w)), x, w, b)
        out[f"{tag}: PyLayer, bias grad = ones @ dy (fast_ops linear_bias_grad)"] = fb(_linear_function().apply, x, w, b)
        out[f"{tag}: matmul only (no bias)"] = fb(paddle.matmul, x, w)
    bb, ll, cc = 32, 16, 128
    hx, sh, sc = paddle.randn([bb, ll, cc]), paddle.randn([bb, cc]), paddle.randn([bb, cc])
    tag = f"DiT modulate [{bb},{ll},{cc}] by [{bb},{cc}]"
    out[f"{tag}: x * (1 + s[:, None]) + b[:, None]"] = fb(lambda x, s, b: x * (1 + s[:, None]) + b[:, None], hx, sc, sh)
    out[f"{tag}: with expand (fast_ops project, DiT)"] = fb(lambda x, s, b: x * (1 + s[:, None]).expand(x.shape) + b[:, None].expand(x.shape), hx, sc, sh)
    return out


def _torch_bias_add(warmup, steps):
    import torch
    import torch.nn.functional as F

    fb, out = _torch_fb(warmup, steps), {}
    for n, c, h in CONV_SHAPES:
        x, w, b = torch.randn(n, c, h, h), torch.randn(c, c, 3, 3) * 0.1, torch.randn(c)
        out[f"conv3x3 [{n},{c},{h},{h}]: torch F.conv2d(x, w, b)"] = fb(lambda x, w, b: F.conv2d(x, w, b, padding=1), x, w, b)
    n, c, h = CONV_SHAPES[0]
    x, b, t = torch.randn(n, c, h, h), torch.randn(c), torch.randn(n, c, 1, 1)
    out[f"add onto [{n},{c},{h},{h}]: torch + [1,C,1,1]"] = fb(lambda x, b: x + b.view(1, -1, 1, 1), x, b)
    out[f"add onto [{n},{c},{h},{h}]: torch + temb [B,C,1,1]"] = fb(lambda x, t: x + t, x, t)
    for bb, ll, ci, co in LINEAR_SHAPES:
        x, w, b = torch.randn(bb, ll, ci), torch.randn(co, ci) * 0.1, torch.randn(co)
        out[f"linear [{bb},{ll},{ci}]x[{ci},{co}]: torch F.linear"] = fb(F.linear, x, w, b)
    bb, ll, cc = 32, 16, 128
    out[f"DiT modulate [{bb},{ll},{cc}] by [{bb},{cc}]: torch x * (1 + s[:, None]) + b[:, None]"] = fb(
        lambda x, s, b: x * (1 + s[:, None]) + b[:, None], torch.randn(bb, ll, cc), torch.randn(bb, cc), torch.randn(bb, cc))
    return out


def _paddle_norm_act(warmup, steps):
    import paddle
    import paddle.nn.functional as F

    fb, out = _paddle_fb(warmup, steps), {}

    def gn_moments(x, w, b, g, eps=1e-5):  # reshape + mean / var ops
        n, c, h, ww = x.shape
        xg = x.reshape([n, g, -1])
        xc = xg - xg.mean(-1, keepdim=True)
        y = (xc * paddle.rsqrt((xc * xc).mean(-1, keepdim=True) + eps)).reshape([n, c, h, ww])
        return y * w.reshape([-1, 1, 1]) + b.reshape([-1, 1, 1])

    def gn_layer_norm(x, w, b, g, eps=1e-5):  # layer_norm over each group, then the channel affine
        n, c, h, ww = x.shape
        y = F.layer_norm(x.reshape([n, g, -1]), [c // g * h * ww], epsilon=eps).reshape([n, c, h, ww])
        return y * w.reshape([-1, 1, 1]) + b.reshape([-1, 1, 1])

    for n, c, h, g in GN_SHAPES:
        x, w, b = paddle.randn([n, c, h, h]), paddle.rand([c]) + 0.5, paddle.randn([c])
        tag = f"GroupNorm({g})+SiLU [{n},{c},{h},{h}]"
        out[f"{tag}: F.group_norm + F.silu (paddle ops)"] = fb(lambda x, w, b: F.silu(F.group_norm(x, g, 1e-5, w, b)), x, w, b)
        out[f"{tag}: reshape + mean/var composition + silu"] = fb(lambda x, w, b: F.silu(gn_moments(x, w, b, g)), x, w, b)
        out[f"{tag}: F.layer_norm per group + affine + silu"] = fb(lambda x, w, b: F.silu(gn_layer_norm(x, w, b, g)), x, w, b)
    for bb, ll, c, affine in LN_SHAPES:
        x, w, b = paddle.randn([bb, ll, c]), paddle.rand([c]) + 0.5, paddle.randn([c])
        tag = f"LayerNorm [{bb},{ll},{c}]{'' if affine else ' no affine'}"
        if affine:
            out[f"{tag}: F.layer_norm (paddle op)"] = fb(lambda x, w, b: F.layer_norm(x, [c], w, b, 1e-5), x, w, b)
            out[f"{tag}: mean/var composition"] = fb(lambda x, w, b: (lambda xc: xc * paddle.rsqrt((xc * xc).mean(-1, keepdim=True) + 1e-5) * w + b)(x - x.mean(-1, keepdim=True)), x, w, b)
            out[f"{tag}: F.group_norm(x.reshape([B*L, C, 1]), 1)"] = fb(lambda x, w, b: F.group_norm(x.reshape([-1, c, 1]), 1, 1e-5, w, b).reshape(x.shape), x, w, b)
        else:
            out[f"{tag}: F.layer_norm (paddle op)"] = fb(lambda x: F.layer_norm(x, [c], None, None, 1e-6), x)
            out[f"{tag}: mean/var composition"] = fb(lambda x: (lambda xc: xc * paddle.rsqrt((xc * xc).mean(-1, keepdim=True) + 1e-6))(x - x.mean(-1, keepdim=True)), x)
    return out


def _torch_norm_act(warmup, steps):
    import torch
    import torch.nn.functional as F

    fb, out = _torch_fb(warmup, steps), {}
    for n, c, h, g in GN_SHAPES:
        out[f"GroupNorm({g})+SiLU [{n},{c},{h},{h}]: torch F.group_norm + F.silu"] = fb(
            lambda x, w, b: F.silu(F.group_norm(x, g, w, b, 1e-5)), torch.randn(n, c, h, h), torch.rand(c) + 0.5, torch.randn(c))
    for bb, ll, c, affine in LN_SHAPES:
        x = torch.randn(bb, ll, c)
        name = f"LayerNorm [{bb},{ll},{c}]{'' if affine else ' no affine'}: torch F.layer_norm"
        out[name] = fb(lambda x, w, b: F.layer_norm(x, [c], w, b, 1e-5), x, torch.rand(c) + 0.5, torch.randn(c)) if affine else fb(lambda x: F.layer_norm(x, [c], eps=1e-6), x)
    return out


def _paddle_conv(warmup, steps):
    import paddle
    import paddle.nn.functional as F

    fb, out = _paddle_fb(warmup, steps), {}
    for n, c, h in CONV_SHAPES:
        x, w, b = paddle.randn([n, c, h, h]), paddle.randn([c, c, 3, 3]) * 0.1, paddle.randn([c])
        tag = f"conv3x3 [{n},{c},{h},{h}]"
        out[f"{tag}: NCHW, bias as [C,1,1] (default now)"] = fb(lambda x, w, b: F.conv2d(x, w, padding=1) + b.reshape([-1, 1, 1]), x, w, b)
        xh = paddle.transpose(x, [0, 2, 3, 1]).clone()
        out[f"{tag}: NHWC (input already NHWC), bias [C]"] = fb(lambda x, w, b: F.conv2d(x, w, padding=1, data_format="NHWC") + b, xh, w, b)
        out[f"{tag}: F.unfold + matmul"] = fb(lambda x, w, b: (paddle.matmul(w.reshape([c, -1]), F.unfold(x, 3, paddings=1)) + b.reshape([-1, 1])).reshape([n, c, h, h]), x, w, b)
    for n, c, h in [(8, 32, 32), (32, 32, 32)]:  # VAE demo encoder (batch 8) and the SD step's frozen encoder (batch 32)
        x, w, b = paddle.randn([n, c, h, h]), paddle.randn([c, c, 3, 3]) * 0.1, paddle.randn([c])
        tag = f"Downsample2D(padding=0) [{n},{c},{h},{h}]"
        out[f"{tag}: F.pad(0,1,0,1) + conv stride 2 (ppdiffusers)"] = fb(lambda x, w, b: F.conv2d(F.pad(x, (0, 1, 0, 1)), w, padding=0, stride=2) + b.reshape([-1, 1, 1]), x, w, b)
        out[f"{tag}: conv padding [0,1,0,1] stride 2 (fast_ops downsample_pad)"] = fb(lambda x, w, b: F.conv2d(x, w, padding=[0, 1, 0, 1], stride=2) + b.reshape([-1, 1, 1]), x, w, b)
    for n, c, h in [(8, 64, 8), (8, 32, 16), (32, 64, 4), (8, 64, 16)]:  # Upsample2D inputs: DDPM demo, SD demo UNet, VAE demo decoder
        x = paddle.randn([n, c, h, h])
        tag = f"Upsample2D nearest x2 [{n},{c},{h},{h}]"
        out[f"{tag}: F.interpolate (ppdiffusers)"] = fb(lambda x: F.interpolate(x, scale_factor=2.0, mode="nearest"), x)
        out[f"{tag}: reshape + expand + reshape"] = fb(lambda x: x.reshape([n, c, h, 1, h, 1]).expand([n, c, h, 2, h, 2]).reshape([n, c, 2 * h, 2 * h]), x)
    for n, ci, co, h in [(8, 16, 32, 16), (32, 64, 32, 8)]:  # ResnetBlock2D conv_shortcut (DDPM demo up path, SD demo UNet up path)
        x, w, b = paddle.randn([n, ci, h, h]), paddle.randn([co, ci, 1, 1]) * 0.1, paddle.randn([co])
        tag = f"conv1x1 [{n},{ci},{h},{h}] -> {co}"
        out[f"{tag}: F.conv2d + b[C,1,1]"] = fb(lambda x, w, b: F.conv2d(x, w) + b.reshape([-1, 1, 1]), x, w, b)
        out[f"{tag}: matmul [Co,Ci] x [N,Ci,HW]"] = fb(lambda x, w, b: (paddle.matmul(w.reshape([co, ci]), x.reshape([n, ci, h * h])) + b.reshape([-1, 1])).reshape([n, co, h, h]), x, w, b)
    return out


def _torch_conv(warmup, steps):
    import torch
    import torch.nn.functional as F

    fb, out = _torch_fb(warmup, steps), {}
    for n, c, h in CONV_SHAPES:
        out[f"conv3x3 [{n},{c},{h},{h}]: torch F.conv2d"] = fb(lambda x, w, b: F.conv2d(x, w, b, padding=1), torch.randn(n, c, h, h), torch.randn(c, c, 3, 3) * 0.1, torch.randn(c))
    for n, c, h in [(8, 32, 32), (32, 32, 32)]:
        out[f"Downsample2D(padding=0) [{n},{c},{h},{h}]: torch F.pad + conv"] = fb(
            lambda x, w, b: F.conv2d(F.pad(x, (0, 1, 0, 1)), w, b, stride=2), torch.randn(n, c, h, h), torch.randn(c, c, 3, 3) * 0.1, torch.randn(c))
    for n, c, h in [(8, 64, 8), (8, 32, 16), (32, 64, 4), (8, 64, 16)]:
        out[f"Upsample2D nearest x2 [{n},{c},{h},{h}]: torch F.interpolate"] = fb(lambda x: F.interpolate(x, scale_factor=2.0, mode="nearest"), torch.randn(n, c, h, h))
    for n, ci, co, h in [(8, 16, 32, 16), (32, 64, 32, 8)]:
        out[f"conv1x1 [{n},{ci},{h},{h}] -> {co}: torch F.conv2d"] = fb(lambda x, w, b: F.conv2d(x, w, b), torch.randn(n, ci, h, h), torch.randn(co, ci, 1, 1) * 0.1, torch.randn(co))
    return out


# (name, query_dim, heads, dim_head, bias, batch, tokens, context (tokens, dim) or None): the demo attention layers
DEMO_ATTENTION = [
    ("SD demo UNet self-attn, 8x8 latents", 32, 4, 8, False, 32, 64, None),
    ("SD demo UNet cross-attn, 16 tokens", 32, 4, 8, False, 32, 64, (16, 64)),
    ("SD demo UNet self-attn, 4x4 latents", 64, 4, 16, False, 32, 16, None),
    ("DiT/SiT demo", 128, 4, 32, True, 32, 16, None),
]


class _ManualAttnProcessor:
    """Bench-only: scale folded into q, [B, H, L, D] matmul softmax (3-D self/cross attention, no mask)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, scale=1.0, **kwargs):
        import paddle
        import paddle.nn.functional as F

        b, length, _ = hidden_states.shape
        ctx = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        h, d = attn.heads, attn.head_dim
        q = attn.to_q(hidden_states, scale).reshape([b, length, h, d]).transpose([0, 2, 1, 3]) * attn.scale
        k = attn.to_k(ctx, scale).reshape([b, -1, h, d]).transpose([0, 2, 1, 3])
        v = attn.to_v(ctx, scale).reshape([b, -1, h, d]).transpose([0, 2, 1, 3])
        o = paddle.matmul(F.softmax(paddle.matmul(q, k, transpose_y=True), axis=-1), v)
        return attn.to_out[1](attn.to_out[0](o.transpose([0, 2, 1, 3]).reshape([b, length, h * d]), scale))


class _SdpaAttnProcessor:
    """Bench-only: paddle's ``F.scaled_dot_product_attention`` on [B, L, H, D]."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, scale=1.0, **kwargs):
        import paddle.nn.functional as F

        b, length, _ = hidden_states.shape
        ctx = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        h, d = attn.heads, attn.head_dim
        q = attn.to_q(hidden_states, scale).reshape([b, length, h, d])
        k = attn.to_k(ctx, scale).reshape([b, -1, h, d])
        v = attn.to_v(ctx, scale).reshape([b, -1, h, d])
        o = F.scaled_dot_product_attention(q, k, v).reshape([b, length, h * d])
        return attn.to_out[1](attn.to_out[0](o, scale))


def _uvit_attention_split(self, x):
    """Bench-only U-ViT attention: one reshape/transpose of qkv, split, scale folded into q, no fp32 casts."""
    import paddle
    import paddle.nn.functional as F

    b, length, c = x.shape
    h, d = self.num_heads, self.head_size
    q, k, v = self.qkv(x).reshape([b, length, 3 * h, d]).transpose([0, 2, 1, 3]).split(3, axis=1)
    o = paddle.matmul(F.softmax(paddle.matmul(q * self.scale, k, transpose_y=True), axis=-1), v)
    return self.proj_drop(self.proj(o.transpose([0, 2, 1, 3]).reshape([b, length, c])))


def _paddle_attention_demo(warmup, steps):
    import types

    import paddle
    from ppdiffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_5
    from ppdiffusers.models.uvit_t2i import Attention as UViTAttention

    fb, out = _paddle_fb(warmup, steps), {}
    out["default processor of ppdiffusers Attention on CPU"] = type(Attention(8, heads=1, dim_head=8).processor).__name__
    for stride in (True, False):
        paddle.set_flags({"FLAGS_use_stride_kernel": stride})
        flag = f"stride kernels {'on (paddle default)' if stride else 'off (fast_ops)'}"
        for name, qd, heads, dh, bias, b, length, ctx in DEMO_ATTENTION:
            paddle.seed(0)
            attn = Attention(qd, cross_attention_dim=ctx[1] if ctx else None, heads=heads, dim_head=dh, bias=bias)
            x = paddle.randn([b, length, qd])
            args = (x, paddle.randn([b, ctx[0], ctx[1]])) if ctx else (x,)
            tag = f"{name} (B{b} L{length} H{heads} D{dh}{f' ctx {ctx[0]}x{ctx[1]}' if ctx else ''}), {flag}"
            for pname, proc in [("AttnProcessor", AttnProcessor()), ("AttnProcessor2_5 (= XFormersAttnProcessor)", AttnProcessor2_5()),
                                ("F.scaled_dot_product_attention", _SdpaAttnProcessor()), ("manual matmul softmax, scale on q", _ManualAttnProcessor())]:
                attn.set_processor(proc)
                out[f"{tag}: {pname}"] = fb(lambda *a: attn(*a), *args)
        paddle.seed(0)
        uattn = UViTAttention(128, num_heads=4)
        x = paddle.randn([64, 25, 128])
        tag = f"U-ViT demo attention (B64 L25 H4 D32), {flag}"
        out[f"{tag}: ppdiffusers uvit_t2i.Attention"] = fb(lambda x: uattn(x), x)
        uattn.forward = types.MethodType(_uvit_attention_split, uattn)
        out[f"{tag}: one qkv transpose + split, no fp32 casts"] = fb(lambda x: uattn(x), x)
        del uattn.forward
    paddle.set_flags({"FLAGS_use_stride_kernel": True})
    return out


def _torch_attention_demo(warmup, steps):
    import torch
    from diffusers.models.attention_processor import Attention

    fb, out = _torch_fb(warmup, steps), {}
    for name, qd, heads, dh, bias, b, length, ctx in DEMO_ATTENTION:
        torch.manual_seed(0)
        attn = Attention(qd, cross_attention_dim=ctx[1] if ctx else None, heads=heads, dim_head=dh, bias=bias)
        x = torch.randn(b, length, qd)
        args = (x, torch.randn(b, ctx[0], ctx[1])) if ctx else (x,)
        out[f"{name} (B{b} L{length} H{heads} D{dh}): torch {type(attn.processor).__name__}"] = fb(lambda *a: attn(*a), *args)
    return out


# ------------------------------------------------------------------------------------------ demo training steps
def _demo_step(kind, ddpm_batch=8):
    """``(model, step)`` of one demo's training step, built as the bench rows build it (bench_ddpm ``train``, bench_stable_diffusion
    ``demo``, bench_class_conditional ``sit_demo``, bench_autoencoder ``demo``, bench_ldm_uvit ``demo_b64``); ``model`` is what
    the training script hands to ``common.fast_ops.apply_fast_ops`` (for SD: UNet, VAE and text encoder in one layer)."""
    import paddle
    import paddle.nn.functional as F

    paddle.seed(0)
    if kind == "ddpm":
        from ppdiffusers import DDPMScheduler

        unet, sched = _ddpm_unet(), DDPMScheduler(num_train_timesteps=1000)
        opt = paddle.optimizer.AdamW(learning_rate=1e-4, parameters=unet.parameters())
        x = paddle.rand([ddpm_batch, 3, 32, 32]) * 2 - 1

        def step():
            noise, t = paddle.randn(x.shape), paddle.randint(0, 1000, [ddpm_batch], dtype="int64")
            loss = F.mse_loss(unet(sched.add_noise(x, noise, t), t).sample, noise)
            loss.backward()
            opt.step()
            opt.clear_grad()
            return float(loss)
        return unet, step
    if kind == "sd":
        sys.path.insert(0, os.path.join(REPO_ROOT, "stable_diffusion"))
        from ppdiffusers.transformers import CLIPTextConfig, CLIPTextModel
        from sd_model import StableDiffusionModel
        from sd_pipeline_utils import load_unet, make_training_scheduler

        from common.vae import load_vae

        cfg_dir = os.path.join(REPO_ROOT, "stable_diffusion", "config")
        with open(os.path.join(cfg_dir, "text_encoder_demo.json")) as f:
            conf = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
        model = StableDiffusionModel(load_vae("random")[0], CLIPTextModel(CLIPTextConfig(**conf, vocab_size=805)),
                                     load_unet(os.path.join(cfg_dir, "unet_demo.json")), make_training_scheduler("epsilon"))
        opt = paddle.optimizer.AdamW(learning_rate=1e-4, parameters=[p for p in model.parameters() if not p.stop_gradient])
        pixels, ids = paddle.rand([32, 3, 32, 32]) * 2 - 1, paddle.randint(0, 805, [32, 16])

        def step():
            loss = model(input_ids=ids, pixel_values=pixels)
            loss.backward()
            opt.step()
            opt.clear_grad()
            return float(loss)
        return model, step
    if kind == "dit":
        sys.path.insert(0, os.path.join(REPO_ROOT, "class_conditional"))
        from models import DiT, load_model_config, model_kwargs
        from ppdiffusers.training_utils import EMAModel
        from transport import create_transport

        model = DiT(**model_kwargs(load_model_config(os.path.join(REPO_ROOT, "class_conditional", "config", "SiT_demo.json"))))
        objective = create_transport("Linear")
        opt, ema = paddle.optimizer.AdamW(learning_rate=1e-4, parameters=model.parameters()), EMAModel(model.parameters())
        x, y = paddle.randn([32, 4, 8, 8]), paddle.randint(0, 10, [32])

        def step():
            loss = objective.training_losses(model, x, {"y": y})["loss"]
            loss.backward()
            opt.step()
            opt.clear_grad()
            ema.step(model.parameters())
            return float(loss)
        return model, step
    if kind == "vae":
        sys.path.insert(0, os.path.join(REPO_ROOT, "autoencoder"))
        from ppdiffusers import AutoencoderKL
        from vae_losses import LPIPSWithDiscriminator
        from vae_model import VAEWithPosterior, read_vae_config

        vae = AutoencoderKL.from_config(read_vae_config(os.path.join(REPO_ROOT, "autoencoder", "config", "vae_demo.json")))
        model = VAEWithPosterior(vae)
        loss_fn = LPIPSWithDiscriminator(disc_start=10**9, perceptual_weight=0, disc_in_channels=3, disc_ndf=64, disc_num_layers=3)
        opt = paddle.optimizer.Adam(1e-4, parameters=list(vae.parameters()) + [loss_fn.logvar], beta1=0.5, beta2=0.9)
        x = paddle.rand([8, 3, 32, 32]) * 2 - 1

        def step():
            rec, mean, logvar = model(x)
            loss, _ = loss_fn.generator_loss(x, rec, mean, logvar, 0, last_layer=vae.decoder.conv_out.weight)
            opt.clear_grad()
            loss.backward()
            opt.step()
            return float(loss)
        return vae, step
    if kind == "uvit":
        sys.path.insert(0, os.path.join(REPO_ROOT, "ldm_uvit"))
        from uvit_diffusion import UViTLatentDiffusion
        from uvit_trainer import build_unet, load_unet_config

        config = load_unet_config("config/uvit_t2i_demo.json")
        unet = build_unet(config)
        model = UViTLatentDiffusion(unet, scale_factor=0.18215)
        opt = paddle.optimizer.AdamW(learning_rate=2e-4, parameters=unet.parameters(), weight_decay=0.03, beta1=0.9, beta2=0.9)
        s, c = config["sample_size"], config["in_channels"]
        moments, context = paddle.randn([64, 2 * c, s, s]), paddle.randn([64, config["num_text_tokens"], config["clip_dim"]])

        def step():
            loss = model(moments, context)["loss"]
            loss.backward()
            opt.step()
            opt.clear_grad()
            return float(loss)
        return unet, step
    raise ValueError(f"unknown demo {kind!r}")


DEMO_LABELS = {"ddpm": "DDPM demo UNet (run_train_ddpm.sh), batch 8, 32 px", "sd": "SD demo step (unet_demo + demo CLIP + demo VAE), batch 32",
               "dit": "SiT_demo.json step + EMA, batch 32", "vae": "VAE demo step (L1 + KL), batch 8, 32 px", "uvit": "U-ViT demo step, batch 64"}


def _paddle_demo(kind, warmup, steps):
    """Interleaved A/B of one demo training step in ONE process: the same model and data, the configurations switched
    round-robin before every step (one untimed step after each switch), so a change in machine load hits all of them."""
    import statistics
    import time

    import paddle

    from common.fast_ops import FAST_OPS, apply_fast_ops, remove_fast_ops

    model, step = _demo_step(kind)
    configs = {"stock paddle (before)": None, "all fast ops (after, the CPU default)": FAST_OPS}
    configs.update({f"all but {op}": tuple(o for o in FAST_OPS if o != op) for op in FAST_OPS})
    counts = {}

    def switch(ops):
        remove_fast_ops(model)
        paddle.set_flags({"FLAGS_use_stride_kernel": True})
        if ops:
            counts.update({k: v for k, v in apply_fast_ops(model, True, ops).items() if v and k != "enabled"})

    times = {k: [] for k in configs}
    losses = {}
    for name, ops in configs.items():  # warm-up
        switch(ops)
        for _ in range(max(warmup, 1)):
            losses[name] = step()
    names = list(configs)
    for i in range(steps):
        for name in (names if i % 2 == 0 else names[::-1]):
            switch(configs[name])
            step()
            t0 = time.perf_counter()
            step()
            times[name].append(1000.0 * (time.perf_counter() - t0))
    switch(None)
    out = {f"{DEMO_LABELS[kind]}: {k}": statistics.median(v) for k, v in times.items()}
    out[f"{DEMO_LABELS[kind]}: layers swapped"] = ", ".join(f"{k} {v}" for k, v in counts.items())
    return out


def _paddle_profile(kind, top, fast):
    """paddle.profiler op table (CPU total per op over 5 steps after 3 warm-up steps) of one demo step: the ``top`` ops
    as ``{op: "ms per step (share %)"}``."""
    import glob
    import shutil
    import tempfile

    import paddle.profiler as profiler

    model, step = _demo_step(kind)
    if fast:
        from common.fast_ops import apply_fast_ops

        apply_fast_ops(model, True)
    for _ in range(3):
        step()
    folder = tempfile.mkdtemp(prefix="bench_ops_profile_")
    try:
        prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU], on_trace_ready=profiler.export_chrome_tracing(folder))
        prof.start()
        for _ in range(5):
            step()
            prof.step()
        prof.stop()
        with open(glob.glob(os.path.join(folder, "*.json"))[0]) as f:
            events = json.load(f)["traceEvents"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    per_op, total = {}, 0.0
    for e in events:
        if e.get("ph") != "X":
            continue
        if e.get("cat") == "ProfileStep":
            total += e["dur"] / 1000.0
        elif e.get("cat") == "Operator":
            name = e["name"].split("[")[0].replace(" dygraph", "")
            per_op[name] = per_op.get(name, 0.0) + e["dur"] / 1000.0
    steps = 5 if total else 1
    rows = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
    return {"step ms (profiled)": total / steps, **{op: f"{ms / steps:.1f} ms/step ({100 * ms / total:.0f}%)" for op, ms in rows}}


# ------------------------------------------------------------------------------------------ process / thread split
def _threads_worker(warmup, steps, batch):
    """One DDPM demo training process (``batch`` images per step, fast ops as the script applies them): its images/s."""
    from common.fast_ops import apply_fast_ops

    unet, step = _demo_step("ddpm", batch)
    apply_fast_ops(unet, True)
    t = time_steps(step, warmup, steps)
    return {"ms_per_step": t["ms_per_step"], "images_per_s": batch * 1000.0 / t["ms_per_step"]}


def _threads(args):
    """1 process x 2 threads (batch 16 in one process = the global batch of two batch-8 processes) vs 2 processes x 1 thread
    (batch 8 each, run at the same time, no gradient all-reduce): images/s of the DDPM demo step."""
    import subprocess

    out = {}
    flags = ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    env2 = dict(os.environ, OMP_NUM_THREADS="2")
    for batch in (16, 8):
        r = run_child_env([sys.executable, __file__, "--child", f"threads_x2_b{batch}", *flags], args.timeout, env2)
        out[f"1 process x 2 threads, batch {batch}: images/s"] = r.get("images_per_s", r.get("error"))
    env1 = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, __file__, "--child", "threads_x1_b8", *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=REPO_ROOT, env=env1) for _ in range(2)]
    results = []
    for p in procs:
        so, se = p.communicate(timeout=args.timeout)
        lines = [x for x in so.splitlines() if x.startswith("BENCH ")]
        results.append(json.loads(lines[-1][6:])["ops"] if lines else {"error": se.strip().splitlines()[-1:]})
    ips = [r.get("images_per_s") for r in results]
    out["2 processes x 1 thread, batch 8 each (no all-reduce): images/s"] = sum(ips) if all(isinstance(v, float) for v in ips) else str(results)
    return out


def run_child_env(cmd, timeout, env):
    """``bench_common.run_child`` with an environment."""
    import subprocess

    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [x for x in out.stdout.splitlines() if x.startswith("BENCH ")]
    if out.returncode == 0 and lines:
        return json.loads(lines[-1][6:])["ops"]
    return {"error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1][-300:]}


def _torch_child(group, warmup, steps):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    micro = {"bias_add": _torch_bias_add, "norm_act": _torch_norm_act, "conv": _torch_conv, "attention_demo": _torch_attention_demo}
    if group in micro:
        return micro[group](warmup, steps)
    if group == "attention":
        q = torch.randn(B, H, L, D, requires_grad=True)

        def step():
            y = F.scaled_dot_product_attention(q, q, q)
            y.sum().backward()
            float(y.mean())
        return {"torch sdpa [B,H,L,D]": time_steps(step, warmup, steps)["ms_per_step"]}
    if group not in ("optimizer", "to_static"):
        return {}
    from diffusers import UNet2DModel

    # the DDPM demo UNet: build_unet(32, (16, 32, 64), (), 1) has norm_num_groups = min(32, 16) = 16
    unet = UNet2DModel(sample_size=32, block_out_channels=(16, 32, 64), layers_per_block=1,
                       down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3, norm_num_groups=16)
    x = torch.rand(8, 3, 32, 32)
    if group == "optimizer":
        unet(x, torch.zeros(8, dtype=torch.long)).sample.mean().backward()
        opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=0.01)
        return {"torch AdamW (foreach default)": time_steps(lambda: (opt.step(), float(next(unet.parameters()).sum())), warmup, steps)["ms_per_step"]}

    def step():
        noise = torch.randn_like(x)
        t = torch.randint(0, 1000, (8,))
        loss = F.mse_loss(unet(x + noise, t).sample, noise)
        loss.backward()
        unet.zero_grad()
        float(loss)
    return {"torch eager loss fwd+bwd": time_steps(step, warmup, steps)["ms_per_step"]}


GROUPS = {"attention": _paddle_attention, "optimizer": _paddle_optimizer, "to_static": _paddle_to_static,
          "bias_add": _paddle_bias_add, "norm_act": _paddle_norm_act, "conv": _paddle_conv, "attention_demo": _paddle_attention_demo}
for _kind in DEMO_LABELS:
    GROUPS[f"demo_{_kind}"] = (lambda k: lambda warmup, steps: _paddle_demo(k, warmup, steps))(_kind)
DEFAULT_GROUPS = ["attention", "optimizer", "to_static", "bias_add", "norm_act", "conv", "attention_demo"]
ALL_GROUPS = list(GROUPS) + ["threads"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", default=None, choices=ALL_GROUPS, help=f"groups (default: {' '.join(DEFAULT_GROUPS)})")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--profile", nargs="+", default=None, choices=list(DEMO_LABELS),
                   help="instead of the groups: paddle.profiler op table of these demo steps (each in its own process)")
    p.add_argument("--profile_top", type=int, default=12, help="ops per --profile table (--fast_ops False: profile stock paddle)")
    p.add_argument("--torch_child", default=None, help=argparse.SUPPRESS)
    add_bench_arguments(p)
    args = p.parse_args()
    check_bench_arguments(p, args)
    from common.cpu_env import apply_cpu_env  # MKL_DEBUG_CPU_TYPE on AMD, as every entry script; children inherit it

    apply_cpu_env(verbose=False)
    if args.steps < 1 or args.warmup < 0:
        p.error(f"--steps must be >= 1 and --warmup >= 0, got {args.steps} and {args.warmup}")
    if args.torch_child:
        emit({"ops": _torch_child(args.torch_child, args.warmup, args.steps)})
        return
    if args.child:
        if args.child.startswith("threads_x"):
            emit({"ops": _threads_worker(args.warmup, args.steps, int(args.child.rsplit("_b", 1)[1]))})
        elif args.child.startswith("profile_"):
            emit({"ops": _paddle_profile(args.child[len("profile_"):], args.profile_top, args.fast_ops)})
        else:
            emit({"ops": GROUPS[args.child](args.warmup, args.steps)})
        return
    from bench_common import torch_status

    print(f"{load_text()} at start")
    if args.profile:
        for kind in args.profile:
            r = run_child([sys.executable, __file__, "--child", f"profile_{kind}", "--profile_top", str(args.profile_top),
                           "--fast_ops", str(args.fast_ops)], args.timeout)
            print(f"\n{DEMO_LABELS[kind]}, {'fast ops' if args.fast_ops else 'stock paddle'}:\n\n| op | CPU time |\n|---|---|")
            for k, v in r.get("ops", {"failed": r.get("error")}).items():
                print(f"| {k} | {v:.1f} |" if isinstance(v, float) else f"| {k} | {v} |")
        print(f"\n{load_text()} at end")
        return
    torch_ok = False
    if args.compare == "torch":
        torch_ok, status = torch_status(args.torch_python)
        print(f"compare: {status}" if torch_ok else f"compare: torch not importable by {args.torch_python}: {status}")
    print("| group | path | ms fwd+bwd (or per step) |")
    print("|---|---|---|")
    flags = ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    for g in args.rows or DEFAULT_GROUPS:
        rows = _threads(args) if g == "threads" else None
        if rows is None:
            r = run_child([sys.executable, __file__, "--child", g, *flags], args.timeout)
            rows = dict(r.get("ops", {"failed": r.get("error")}))
        if torch_ok and g in ("attention", "optimizer", "to_static", "bias_add", "norm_act", "conv", "attention_demo"):
            t = run_child([args.torch_python, __file__, "--torch_child", g, *flags], args.timeout)
            rows.update(t.get("ops", {"torch failed": t.get("error")}))
        for k, v in rows.items():
            print(f"| {g} | {k} | {v:.3f} |" if isinstance(v, float) else f"| {g} | {k} | {json.dumps(v)} |", flush=True)
    print(f"{load_text()} at end")


if __name__ == "__main__":
    main()
