"""Speed and memory of one AutoencoderKL training step (generator step + discriminator step when on).

Rows (each measured in its own process so peak RSS belongs to that row):

* ``demo``       -- config/vae_demo.json, 32 px, batch 8, no LPIPS, no GAN (run_train_vae_demo.sh)
* ``demo+gan``   -- the same with the PatchGAN on (adaptive weight + discriminator step)
* ``f8f16``      -- config/vae.json (f8 encoder / f16 decoder, 75M params), 256 px input -> 512 px
                    target, batch 1, no LPIPS, GAN on; only with ``--f8f16`` (slow on CPU)

Usage: ``python bench/bench_autoencoder.py [--steps 10] [--f8f16]``
"""
import argparse
import json
import os
import subprocess
import sys
import time

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO_ROOT)
from common.cpu_env import apply_cpu_env  # noqa: E402

apply_cpu_env(verbose=False)

ROWS = {
    "demo": dict(config="vae_demo.json", batch=8, resolution=32, input_size=None, gan=False),
    "demo+gan": dict(config="vae_demo.json", batch=8, resolution=32, input_size=None, gan=True),
    "f8f16": dict(config="vae.json", batch=1, resolution=512, input_size=256, gan=True),
}


def run_row(name, steps, warmup=2):
    import paddle

    sys.path.insert(0, os.path.join(REPO_ROOT, "autoencoder"))
    from ppdiffusers import AutoencoderKL

    from common.logging_utils import peak_memory_mb
    from vae_losses import LPIPSWithDiscriminator
    from vae_model import VAEWithPosterior, read_vae_config, resize_to

    row = ROWS[name]
    paddle.seed(0)
    vae = AutoencoderKL.from_config(read_vae_config(os.path.join(REPO_ROOT, "autoencoder", "config", row["config"])))
    model = VAEWithPosterior(vae)
    loss_fn = LPIPSWithDiscriminator(disc_start=0 if row["gan"] else 10**9, perceptual_weight=0)
    opt_ae = paddle.optimizer.Adam(1e-4, parameters=list(vae.parameters()) + [loss_fn.logvar], beta1=0.5, beta2=0.9)
    opt_d = paddle.optimizer.Adam(1e-4, parameters=loss_fn.discriminator.parameters(), beta1=0.5, beta2=0.9)
    x = paddle.rand([row["batch"], 3, row["resolution"], row["resolution"]]) * 2 - 1
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        enc_in = resize_to(x, (row["input_size"],) * 2) if row["input_size"] else x
        rec, mean, logvar = model(enc_in)
        loss, _ = loss_fn.generator_loss(x, rec, mean, logvar, 0, last_layer=vae.decoder.conv_out.weight)
        opt_ae.clear_grad()
        loss.backward()
        opt_ae.step()
        if loss_fn.disc_active(0):
            d_loss, _ = loss_fn.discriminator_loss(x, rec, 0)
            opt_d.clear_grad()
            d_loss.backward()
            opt_d.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    params = sum(int(p.numel()) for p in vae.parameters()) / 1e6
    return {"row": name, "params_M": params, "batch": row["batch"], "ms_per_step": 1000 * sum(times) / len(times), "peak_rss_mb": peak_memory_mb(), "threads": os.environ.get("OMP_NUM_THREADS")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row (after 2 warm-up steps)")
    parser.add_argument("--f8f16", action="store_true", help="also time config/vae.json at 256 -> 512 (1 step)")
    parser.add_argument("--row", choices=sorted(ROWS), help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()
    if args.row:
        print(json.dumps(run_row(args.row, args.steps if args.row != "f8f16" else 1, warmup=2 if args.row != "f8f16" else 1)))
        return
    names = ["demo", "demo+gan"] + (["f8f16"] if args.f8f16 else [])
    results = []
    for name in names:
        out = subprocess.run([sys.executable, __file__, "--row", name, "--steps", str(args.steps)], capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'row':<10} {'params(M)':>9} {'batch':>5} {'ms/step':>9} {'peak RSS (MB)':>13} {'threads':>7}")
    for r in results:
        print(f"{r['row']:<10} {r['params_M']:>9.2f} {r['batch']:>5} {r['ms_per_step']:>9.1f} {r['peak_rss_mb']:>13.0f} {str(r['threads']):>7}")


if __name__ == "__main__":
    main()
