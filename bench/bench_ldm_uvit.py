"""Speed and size of the U-ViT latent diffusion training step (ldm_uvit/).

One optimisation step = latent sampling from the moments + noise-prediction loss + backward +
AdamW update, on random features of the config's shapes.  Rows: U-ViT-S/2 (deep) at batch 1
(the upstream model, 256x256 images = 32x32x4 latents, 77 CLIP tokens) and the demo config at
batch 1 and at the demo's batch 64.  Also prints the parameter count against the paper's
(Bao et al. 2023, U-ViT-S/2 (Deep): 58M).

    python bench/bench_ldm_uvit.py [--steps 3] [--warmup 1] [--rows demo_b64 ...]

Each row runs in its own process (bench/bench_common.py), so peak RSS is the row's own.
``--compare torch`` is accepted for symmetry with the other bench scripts but U-ViT has no
diffusers mirror, so the rows stay Paddle-only.
"""
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ldm_uvit"))  # its modules, by plain name
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import argparse

import paddle

from uvit_diffusion import UViTLatentDiffusion
from uvit_trainer import build_unet, load_unet_config

from bench_common import add_bench_arguments, add_real_batch_argument, real_batch, bench_fast_ops, check_bench_arguments, emit, run_rows, time_steps

PAPER_PARAMS_M = {"uvit_t2i_small_deep": 58.0}
ROWS = {"small_deep_b1": ("uvit_t2i_small_deep", 1), "demo_b1": ("uvit_t2i_demo", 1), "demo_b64": ("uvit_t2i_demo", 64)}


def bench(config_name, batch, steps, warmup):
    config = load_unet_config(f"config/{config_name}.json")
    paddle.seed(0)
    unet = build_unet(config)
    model = UViTLatentDiffusion(unet, scale_factor=0.18215)
    bench_fast_ops(model)  # as the training script does on CPU (--fast_ops)
    opt = paddle.optimizer.AdamW(learning_rate=2e-4, parameters=unet.parameters(), weight_decay=0.03, beta1=0.9, beta2=0.9)
    s, c = config["sample_size"], config["in_channels"]
    moments = paddle.randn([batch, 2 * c, s, s])
    context = paddle.randn([batch, config["num_text_tokens"], config["clip_dim"]])

    def step():
        loss = model(moments, context)["loss"]
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss)

    timing = time_steps(step, warmup, steps)
    params = sum(int(p.numel()) for p in unet.parameters())
    return dict(timing, row=f"{config_name}, batch {batch}", params=params, batch=batch, images_per_s=batch * 1000.0 / timing["ms_per_step"],
                torch_note="U-ViT stays Paddle-only (no diffusers mirror of UViTT2IModel)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per row")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    add_bench_arguments(parser)
    add_real_batch_argument(parser, "small_deep_b1")
    args = parser.parse_args()
    check_bench_arguments(parser, args)
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"--steps must be >= 1 and --warmup >= 0, got {args.steps} and {args.warmup}")
    if args.child:
        config_name, batch = ROWS[args.child]
        emit(bench(config_name, real_batch(batch) if args.child == "small_deep_b1" else batch, args.steps, args.warmup))  # --real_batch
        return
    print(f"paddle {paddle.__version__}, device {paddle.device.get_device()}")
    run_rows(__file__, args.rows, args, ["--steps", args.steps, "--warmup", args.warmup])
    for name, paper in PAPER_PARAMS_M.items():
        print(f"paper parameter count of {name}: {paper:.0f}M (compare the params column)")


if __name__ == "__main__":
    main()
