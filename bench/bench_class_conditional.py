"""Speed and size table for class_conditional/ (DiT and SiT).

    python bench/bench_class_conditional.py [--steps 10] [--batch_size 32] [--rows ...] [--compare torch]

1. ms per training step (forward + backward + AdamW + EMA) at the demo size (4x8x8 latents, i.e.
   32x32 digits through the f4 demo VAE) for a DiT-S/2-like model (config/DiT_S_patch2.json with
   input_size 8) with the DiT diffusion loss, the same backbone with the SiT transport loss, and
   the demo configs; then DiT-S/2 (batch 4) and, with ``--rows xl2_32_sit``, DiT-XL/2 (batch 1) at
   the real 4x32x32 latents.  Each row in its own process (bench/bench_common.py).  With
   ``--compare torch`` the SiT-loss rows are also timed in PyTorch: the same network assembled from
   the diffusers blocks (bench/torch_mirrors.py), same loss, AdamW and EMA.
2. parameter counts of every config under class_conditional/config/ next to the paper's figure
   (counted without allocating the weights, with paddle.LazyGuard).
"""
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "class_conditional"))  # its modules, by plain name
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import argparse
import glob

import numpy as np
import paddle
from ppdiffusers.training_utils import EMAModel

from diffusion import create_diffusion
from models import DiT, load_model_config, model_kwargs
from transport import create_transport

from bench_common import add_bench_arguments, add_real_batch_argument, real_batch, bench_fast_ops, check_bench_arguments, emit, run_rows, time_steps  # noqa: E402

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "class_conditional", "config")


def count_lazy(cfg):
    """Trainable parameter count of a config without allocating it."""
    init = DiT.initialize_weights
    DiT.initialize_weights = lambda self: None  # LazyGuard parameters cannot be written to
    try:
        with paddle.LazyGuard():
            model = DiT(**model_kwargs(cfg))
    finally:
        DiT.initialize_weights = init
    return int(sum(np.prod(p.shape) for p in model.parameters() if not p.stop_gradient))


def row_specs(batch_size, steps):
    """``{name: (label, config, objective, batch, timed steps, warm-up steps)}``; objective is ``"dit"``
    (Gaussian diffusion with learned sigma, Paddle only) or ``"sit"`` (Linear path, velocity: mirrored in PyTorch)."""
    small = dict(load_model_config(os.path.join(CONFIG_DIR, "DiT_S_patch2.json")), input_size=8)
    return {
        "s2_8_dit": ("DiT-S/2 @ 4x8x8, DiT diffusion", small, "dit", batch_size, steps, 1),
        "s2_8_sit": ("DiT-S/2 @ 4x8x8, SiT Linear/velocity", dict(small, model_type="SiT"), "sit", batch_size, steps, 1),
        "dit_demo": ("DiT_demo.json, DiT diffusion", load_model_config(os.path.join(CONFIG_DIR, "DiT_demo.json")), "dit", batch_size, steps, 1),
        "sit_demo": ("SiT_demo.json, SiT Linear/velocity", load_model_config(os.path.join(CONFIG_DIR, "SiT_demo.json")), "sit", batch_size, steps, 1),
        # real configs (latent 4x32x32 = 256 px through an f8 VAE) at a small batch, backbone step with the SiT loss
        "s2_32_sit": ("DiT-S/2 @ 4x32x32, SiT Linear/velocity", load_model_config(os.path.join(CONFIG_DIR, "DiT_S_patch2.json")), "sit", real_batch(4), 2, 1),
        "xl2_32_sit": ("DiT-XL/2 @ 4x32x32, SiT Linear/velocity", load_model_config(os.path.join(CONFIG_DIR, "DiT_XL_patch2.json")), "sit", real_batch(1), 2, 1),
    }


DEFAULT_ROWS = ["s2_8_dit", "s2_8_sit", "dit_demo", "sit_demo", "s2_32_sit"]  # xl2_32_sit needs ~14 GiB per framework (fp32 AdamW + EMA)


def run_row(label, cfg, objective_name, batch_size, steps, warmup):
    """One timed row: DiT forward + objective + backward + AdamW(1e-4) + EMA update, on random latents ``(B, C, s, s)`` and labels < 10."""
    paddle.seed(0)
    model = DiT(**model_kwargs(cfg))
    bench_fast_ops(model)  # as the training scripts do on CPU (--fast_ops)
    objective = create_diffusion("") if objective_name == "dit" else create_transport("Linear")
    opt = paddle.optimizer.AdamW(learning_rate=1e-4, parameters=model.parameters())
    ema = EMAModel(model.parameters())
    x = paddle.randn([batch_size, cfg["in_channels"], cfg["input_size"], cfg["input_size"]])
    y = paddle.randint(0, 10, [batch_size])

    def step():
        loss = objective.training_losses(model, x, {"y": y})["loss"]
        loss.backward()
        opt.step()
        opt.clear_grad()
        ema.step(model.parameters())
        float(loss)

    timing = time_steps(step, warmup, steps)
    result = dict(timing, row=label, params=count_lazy(cfg), batch=batch_size, images_per_s=batch_size * 1000.0 / timing["ms_per_step"])
    if objective_name == "sit":
        result["torch"] = dict(kind="dit", config=model_kwargs(cfg), batch=batch_size, warmup=warmup, steps=steps)
    else:
        result["torch_note"] = "the DiT Gaussian-diffusion loss (learned sigma, VLB term) is not mirrored; the SiT row of the same backbone is"
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="timed steps per demo-size row")
    p.add_argument("--batch_size", type=int, default=32, help="batch of the demo-size rows")
    p.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(row_specs(1, 1)), help="rows to run (default: all but xl2_32_sit)")
    add_bench_arguments(p)
    add_real_batch_argument(p, "s2_32_sit, xl2_32_sit")
    args = p.parse_args()
    check_bench_arguments(p, args)
    if args.steps < 1 or args.batch_size < 1:
        p.error(f"--steps and --batch_size must be >= 1, got {args.steps} and {args.batch_size}")
    specs = row_specs(args.batch_size, args.steps)
    if args.child:
        emit(run_row(*specs[args.child]))
        return
    run_rows(__file__, args.rows, args, ["--steps", args.steps, "--batch_size", args.batch_size])

    print(f"\n{'config':22s} {'ours':>10s} {'paper':>8s}")
    for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.json"))):
        cfg = load_model_config(path)
        print(f"{os.path.basename(path)[:-5]:22s} {count_lazy(cfg) / 1e6:9.2f}M {cfg.get('paper_params', '-'):>8s}")


if __name__ == "__main__":
    main()
