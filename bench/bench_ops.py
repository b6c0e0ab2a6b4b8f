"""Fastest Paddle path per hot op (issue 17 item 2): fwd+bwd ms of each Paddle alternative at a demo shape,
and the same op in PyTorch (``--compare torch``: this file run by the torch interpreter, ``--torch_child``;
torch never enters the Paddle process).

    python bench/bench_ops.py --rows attention optimizer to_static [--compare torch --torch_python PY]

Groups (``--rows``): ``attention`` (B8 L256 H4 D32, the issue's shape): manual matmul softmax in
[B, H, L, D] and [B*H, L, D] layouts, ``F.scaled_dot_product_attention`` ([B, L, H, D]),
``paddle.incubate.nn.memory_efficient_attention`` (reported with its error when it does not run on CPU);
``optimizer``: AdamW step on the run_train_ddpm.sh UNet's parameters, default vs ``use_multi_tensor=True``;
``to_static``: the DDPM demo loss eager vs ``paddle.jit.to_static(full_graph=True)`` (CINN only if compiled in).
One process per group; ms = median of the timed calls (bench_common.time_steps).
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


def _torch_child(group, warmup, steps):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if group == "attention":
        q = torch.randn(B, H, L, D, requires_grad=True)

        def step():
            y = F.scaled_dot_product_attention(q, q, q)
            y.sum().backward()
            float(y.mean())
        return {"torch sdpa [B,H,L,D]": time_steps(step, warmup, steps)["ms_per_step"]}
    from diffusers import UNet2DModel

    unet = UNet2DModel(sample_size=32, block_out_channels=(16, 32, 64), layers_per_block=1,
                       down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3, norm_num_groups=8)
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


GROUPS = {"attention": _paddle_attention, "optimizer": _paddle_optimizer, "to_static": _paddle_to_static}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--torch_child", default=None, help=argparse.SUPPRESS)
    add_bench_arguments(p)
    args = p.parse_args()
    check_bench_arguments(p, args)
    if args.torch_child:
        emit({"ops": _torch_child(args.torch_child, args.warmup, args.steps)})
        return
    if args.child:
        emit({"ops": GROUPS[args.child](args.warmup, args.steps)})
        return
    from bench_common import torch_status

    torch_ok = False
    if args.compare == "torch":
        torch_ok, status = torch_status(args.torch_python)
        print(f"compare: {status}" if torch_ok else f"compare: torch not importable by {args.torch_python}: {status}")
    print(f"{load_text()} at start")
    print("| group | path | ms fwd+bwd (or per step) |")
    print("|---|---|---|")
    flags = ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    for g in args.rows:
        r = run_child([sys.executable, __file__, "--child", g, *flags], args.timeout)
        rows = dict(r.get("ops", {"failed": r.get("error")}))
        if torch_ok:
            t = run_child([args.torch_python, __file__, "--torch_child", g, *flags], args.timeout)
            rows.update(t.get("ops", {"torch failed": t.get("error")}))
        for k, v in rows.items():
            print(f"| {g} | {k} | {v:.1f} |" if isinstance(v, float) else f"| {g} | {k} | {json.dumps(v)} |")
    print(f"{load_text()} at end")


if __name__ == "__main__":
    main()
