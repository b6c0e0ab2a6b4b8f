"""Speed and size table for class_conditional/ (DiT and SiT).

    python bench/bench_class_conditional.py [--steps 10] [--batch_size 32]

1. ms per training step (forward + backward + AdamW + EMA) at the demo size (4x8x8 latents, i.e.
   32x32 digits through the f4 demo VAE) for a DiT-S/2-like model (config/DiT_S_patch2.json with
   input_size 8) with the DiT diffusion loss, the same backbone with the SiT transport loss, and
   the demo configs.
2. parameter counts of every config under class_conditional/config/ next to the paper's figure
   (counted without allocating the weights, with paddle.LazyGuard).
"""
import argparse
import glob
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))  # repo root, for common/
from common.cpu_env import apply_cpu_env  # noqa: E402

apply_cpu_env()  # must run before paddle is imported

import numpy as np  # noqa: E402
import paddle  # noqa: E402
from ppdiffusers.training_utils import EMAModel  # noqa: E402

from class_conditional.diffusion import create_diffusion  # noqa: E402
from class_conditional.models import DiT, load_model_config  # noqa: E402
from class_conditional.models.dit import model_kwargs  # noqa: E402
from class_conditional.transport import create_transport  # noqa: E402

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "class_conditional", "config")


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


def time_steps(cfg, objective, batch_size, steps):
    paddle.seed(0)
    model = DiT(**model_kwargs(cfg))
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

    step()  # warm-up
    t0 = time.time()
    for _ in range(steps):
        step()
    return (time.time() - t0) / steps * 1000.0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="timed steps per row")
    p.add_argument("--batch_size", type=int, default=32)
    args = p.parse_args()

    small = dict(load_model_config(os.path.join(CONFIG_DIR, "DiT_S_patch2.json")), input_size=8)
    rows = [
        ("DiT-S/2 @ 4x8x8, DiT diffusion", small, create_diffusion("")),
        ("DiT-S/2 @ 4x8x8, SiT Linear/velocity", dict(small, model_type="SiT"), create_transport("Linear")),
        ("DiT_demo.json, DiT diffusion", load_model_config(os.path.join(CONFIG_DIR, "DiT_demo.json")), create_diffusion("")),
        ("SiT_demo.json, SiT Linear/velocity", load_model_config(os.path.join(CONFIG_DIR, "SiT_demo.json")), create_transport("Linear")),
    ]
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, batch {args.batch_size}, {args.steps} timed steps")
    print(f"{'model / objective':42s} {'params':>10s} {'ms/step':>9s} {'img/s':>7s}")
    for name, cfg, objective in rows:
        ms = time_steps(cfg, objective, args.batch_size, args.steps)
        print(f"{name:42s} {count_lazy(cfg) / 1e6:9.2f}M {ms:9.1f} {args.batch_size / ms * 1000:7.1f}")

    print(f"\n{'config':22s} {'ours':>10s} {'paper':>8s}")
    for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.json"))):
        cfg = load_model_config(path)
        print(f"{os.path.basename(path)[:-5]:22s} {count_lazy(cfg) / 1e6:9.2f}M {cfg.get('paper_params', '-'):>8s}")


if __name__ == "__main__":
    main()
