"""Speed and size of the U-ViT latent diffusion training step (ldm_uvit/).

One optimisation step = latent sampling from the moments + noise-prediction loss + backward +
AdamW update, on random features of the config's shapes.  Rows: U-ViT-S/2 (deep) at batch 1
(the upstream model, 256x256 images = 32x32x4 latents, 77 CLIP tokens) and the demo config at
batch 1 and at the demo's batch 64.  Also prints the parameter count against the paper's
(Bao et al. 2023, U-ViT-S/2 (Deep): 58M).

    python bench/bench_ldm_uvit.py [--steps 3] [--warmup 1]
"""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)  # repo root, for common/
sys.path.insert(0, os.path.join(ROOT, "ldm_uvit"))
from common.cpu_env import apply_cpu_env  # noqa: E402

apply_cpu_env()  # must run before paddle is imported

import argparse  # noqa: E402
import time  # noqa: E402

import paddle  # noqa: E402

from common.logging_utils import peak_memory_mb  # noqa: E402
from uvit_diffusion import UViTLatentDiffusion  # noqa: E402
from uvit_trainer import build_unet, load_unet_config  # noqa: E402

PAPER_PARAMS_M = {"uvit_t2i_small_deep": 58.0}
ROWS = [("uvit_t2i_small_deep", 1), ("uvit_t2i_demo", 1), ("uvit_t2i_demo", 64)]


def bench(config_name, batch, steps, warmup):
    config = load_unet_config(f"config/{config_name}.json")
    paddle.seed(0)
    unet = build_unet(config)
    model = UViTLatentDiffusion(unet, scale_factor=0.18215)
    opt = paddle.optimizer.AdamW(learning_rate=2e-4, parameters=unet.parameters(), weight_decay=0.03, beta1=0.9, beta2=0.9)
    s, c = config["sample_size"], config["in_channels"]
    moments = paddle.randn([batch, 2 * c, s, s])
    context = paddle.randn([batch, config["num_text_tokens"], config["clip_dim"]])
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = model(moments, context)["loss"]
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    params = sum(int(p.numel()) for p in unet.parameters()) / 1e6
    return params, 1000 * sum(times) / len(times), min(times) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per row")
    args = parser.parse_args()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"threads OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}  paddle {paddle.__version__}  device {paddle.device.get_device()}  load average {load}")
    print(f"{'config':<22}{'batch':>6}{'params (M)':>12}{'paper (M)':>11}{'ms/step':>11}{'min ms':>10}{'imgs/s':>9}{'peak MiB*':>10}")
    for name, batch in ROWS:
        params, ms, best = bench(name, batch, args.steps, args.warmup)
        paper = PAPER_PARAMS_M.get(name)
        print(f"{name:<22}{batch:>6}{params:>12.2f}{(f'{paper:.0f}' if paper else '-'):>11}{ms:>11.1f}{best:>10.1f}{1000 * batch / ms:>9.1f}{peak_memory_mb():>10.0f}")
    print("* peak memory of the process so far (RSS on CPU), so each row includes the rows above it")


if __name__ == "__main__":
    main()
