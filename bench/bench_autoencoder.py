"""Speed and memory of one AutoencoderKL training step (generator step + discriminator step when on).

Rows (each measured in its own process so peak RSS belongs to that row):

* ``demo``       -- config/vae_demo.json, 32 px, batch 8, no LPIPS, no GAN (run_train_vae_demo.sh)
* ``demo+gan``   -- the same with the PatchGAN on (adaptive weight + discriminator step)
* ``f8f16``      -- config/vae.json (f8 encoder / f16 decoder, 75M params), 256 px input -> 512 px
                    target, batch 1 (``--real_batch``), LPIPS (weight 1, as train_vae.py) and GAN on;
                    only with ``--f8f16`` (slow on CPU).  LPIPS' VGG16 trunk gets random weights here
                    (the ImageNet file cannot be fetched offline; the cost is the same), its heads are
                    paddle-lpips' learned ones

With ``--compare torch`` every row is also timed in PyTorch: diffusers ``Encoder``/``Decoder`` with the
same channel lists, the same L1 (+ LPIPS) + KL + log-variance loss, PatchGAN, adaptive weight and Adam
(bench/torch_mirrors.py).  Harness: bench/bench_common.py.

Usage: ``python bench/bench_autoencoder.py [--steps 10] [--f8f16] [--compare torch --torch_python PY]``
"""
import argparse
import os
import sys
import tempfile

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO_ROOT)
from common.cpu_env import apply_cpu_env

apply_cpu_env(verbose=False)

from bench_common import add_bench_arguments, add_real_batch_argument, real_batch, bench_fast_ops, check_bench_arguments, config_dict, emit, run_rows, time_steps  # noqa: E402

DISC = dict(input_nc=3, ndf=64, n_layers=3)  # the PatchGAN train_vae.py builds (LPIPSWithDiscriminator defaults)
ROWS = {
    "demo": dict(config="vae_demo.json", batch=8, resolution=32, input_size=None, gan=False, lpips=False),
    "demo+gan": dict(config="vae_demo.json", batch=8, resolution=32, input_size=None, gan=True, lpips=False),
    "f8f16": dict(config="vae.json", batch=1, resolution=512, input_size=256, gan=True, lpips=True),
}


def _random_vgg16_file(folder):
    """Write a ``vgg16.pdparams``-shaped file of randomly initialised paddle.vision VGG16 ``features.*`` weights (for
    LPIPS' trunk: the timing does not depend on the values) into ``folder``; returns its path."""
    import paddle
    from paddle.vision.models import vgg16

    path = os.path.join(folder, "vgg16_random.pdparams")
    features = vgg16(pretrained=False, with_pool=False, num_classes=0).features
    paddle.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def run_row(name, steps, warmup=2):
    import paddle

    sys.path.insert(0, os.path.join(REPO_ROOT, "autoencoder"))
    from ppdiffusers import AutoencoderKL

    from vae_losses import LPIPSWithDiscriminator
    from vae_model import VAEWithPosterior, read_vae_config, resize_to

    row = ROWS[name]
    if name == "f8f16":
        row = dict(row, batch=real_batch(row["batch"]))  # --real_batch
    paddle.seed(0)
    vae = AutoencoderKL.from_config(read_vae_config(os.path.join(REPO_ROOT, "autoencoder", "config", row["config"])))
    model = VAEWithPosterior(vae)
    with tempfile.TemporaryDirectory(prefix="bench_vgg16_") as folder:  # LPIPS reads the trunk file once, here
        loss_fn = LPIPSWithDiscriminator(disc_start=0 if row["gan"] else 10**9, perceptual_weight=1.0 if row["lpips"] else 0,
                                         disc_in_channels=DISC["input_nc"], disc_ndf=DISC["ndf"], disc_num_layers=DISC["n_layers"],
                                         lpips_backbone_path=_random_vgg16_file(folder) if row["lpips"] else None)
    bench_fast_ops(model)  # as train_vae.py does on CPU (--fast_ops)
    bench_fast_ops(loss_fn)
    opt_ae = paddle.optimizer.Adam(1e-4, parameters=list(vae.parameters()) + [loss_fn.logvar], beta1=0.5, beta2=0.9)
    opt_d = paddle.optimizer.Adam(1e-4, parameters=loss_fn.discriminator.parameters(), beta1=0.5, beta2=0.9)
    x = paddle.rand([row["batch"], 3, row["resolution"], row["resolution"]]) * 2 - 1

    def step():
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
        float(loss)

    timing = time_steps(step, warmup, steps)
    params = sum(int(p.numel()) for p in vae.parameters())
    disc_params = sum(int(p.numel()) for p in loss_fn.discriminator.parameters() if not p.stop_gradient)  # BN statistics are parameters in paddle
    extras = (", LPIPS" if row["lpips"] else "") + (", GAN" if row["gan"] else "")
    return dict(timing, row=f"{name}: VAE step ({row['config']}, {row['input_size'] or row['resolution']}->{row['resolution']} px{extras})",
                params=params, params_other=disc_params if row["gan"] else None, batch=row["batch"],
                images_per_s=row["batch"] * 1000.0 / timing["ms_per_step"], threads=os.environ.get("OMP_NUM_THREADS"),
                torch=dict(kind="vae", config=config_dict(vae.config), batch=row["batch"], resolution=row["resolution"], input_size=row["input_size"],
                           gan=row["gan"], lpips=row["lpips"], disc=DISC, warmup=warmup, steps=steps))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row (after 2 warm-up steps)")
    parser.add_argument("--f8f16", action="store_true", help="also time config/vae.json at 256 -> 512 (1 step)")
    add_bench_arguments(parser)
    add_real_batch_argument(parser, "f8f16")
    args = parser.parse_args()
    check_bench_arguments(parser, args)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.child:
        big = args.child == "f8f16"
        emit(run_row(args.child, 1 if big else args.steps, warmup=1 if big else 2))
        return
    run_rows(__file__, ["demo", "demo+gan"] + (["f8f16"] if args.f8f16 else []), args, ["--steps", args.steps])


if __name__ == "__main__":
    main()
