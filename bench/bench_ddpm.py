"""Benchmark rows for the ddpm_tutorial default config and the data readers.

    python bench/bench_ddpm.py                 # all rows
    python bench/bench_ddpm.py --rows train    # one row
    python bench/bench_ddpm.py --compare torch --torch_python /path/to/venv/bin/python   # and PyTorch + diffusers

Each row runs in its own process so peak RSS is that row's own (harness: bench/bench_common.py).
Prints a markdown table: ms/step and images/s for training steps (noise, add_noise, UNet2DModel,
epsilon MSE, AdamW 1e-4) of run_train_ddpm.sh's UNet (16/32/64/128 channels, one channel
(--grayscale), 32x32, batch 8 per process; the main job runs two such processes), of train_unconditional.py's default UNet
(32/64/128 + attention, batch 32), of the tutorial's 128 px GPU layout at batch 2, and images/s
decoded by the laion reader (digits parts) and the image-folder reader (faces, 32x32).  With
``--compare torch`` every UNet row is also timed as the same diffusers ``UNet2DModel`` config
(bench/torch_mirrors.py).  Not a test: numbers depend on the machine (cores, vendor, other load).
"""
import argparse
import os
import sys
import time

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "ddpm_tutorial"))
from bench_common import add_bench_arguments, add_real_batch_argument, real_batch, bench_fast_ops, check_bench_arguments, config_dict, emit, run_rows, time_steps  # noqa: E402


def row_train(steps=10, warmup=2, batch=8, block_out_channels=(16, 32, 64, 128), attention_levels=(), layers_per_block=1, resolution=None, channels=1):
    """One training step of a ``build_unet`` UNet; the defaults are run_train_ddpm.sh's (4 levels, one channel: --grayscale)."""
    import paddle
    import paddle.nn.functional as F
    from denoising_diffusion import build_unet
    from ppdiffusers import DDPMScheduler

    import train_unconditional

    resolution = resolution or train_unconditional.parse_args([]).resolution
    unet = build_unet(resolution, block_out_channels, attention_levels, layers_per_block, channels=channels)
    bench_fast_ops(unet)  # as train_unconditional.py does on CPU (--fast_ops)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    opt = paddle.optimizer.AdamW(learning_rate=1e-4, parameters=unet.parameters())
    x = paddle.rand([batch, channels, resolution, resolution]) * 2 - 1

    def step():
        noise = paddle.randn(x.shape)
        t = paddle.randint(0, 1000, [batch], dtype="int64")
        loss = F.mse_loss(unet(scheduler.add_noise(x, noise, t), t).sample, noise)
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss)

    timing = time_steps(step, warmup, steps)
    params = sum(int(p.numel()) for p in unet.parameters())
    return dict(timing, row=f"ddpm train step (UNet2DModel {params / 1e6:.2f}M, {resolution}px, {channels} ch, batch {batch})", params=params, batch=batch,
                images_per_s=batch * 1000.0 / timing["ms_per_step"],
                torch=dict(kind="unet2d", config=config_dict(unet.config), batch=batch, resolution=resolution, warmup=warmup, steps=steps))


def row_laion():
    import paddle

    from common.demo_data import ensure_demo_data
    from common.images import pil_to_tensor_array
    from common.laion import LaionDataset

    root = ensure_demo_data()
    ds = LaionDataset(os.path.join(root, "laion_digits", "filelist", "digits.filelist.list"), process_fn=lambda im, c: {"pixel_values": pil_to_tensor_array(im)}, infinite=False)
    loader = paddle.io.DataLoader(ds, batch_size=64, num_workers=0)
    t0, n = time.time(), 0
    for batch in loader:
        n += batch["pixel_values"].shape[0]
    sec = time.time() - t0
    return {"row": "laion reader (digits parts, PNG base64 decode, 1 process)", "ms_per_step": float("nan"), "images_per_s": n / sec, "batch": 64,
            "torch_note": "data reader, no model"}


def row_folder():
    import paddle

    from common.demo_data import ensure_demo_data
    from common.images import ImageFolderDataset, ImageTransform

    root = ensure_demo_data()
    ds = ImageFolderDataset(os.path.join(root, "faces"), ImageTransform(32, center_crop=True, random_flip=True))
    loader = paddle.io.DataLoader(ds, batch_size=32, num_workers=0)
    t0, n = time.time(), 0
    for _ in range(3):
        for batch in loader:
            n += batch["pixel_values"].shape[0]
    sec = time.time() - t0
    return {"row": "image-folder reader (faces -> 32x32, flip, 1 process)", "ms_per_step": float("nan"), "images_per_s": n / sec, "batch": 32,
            "torch_note": "data reader, no model"}


def row_train_script_default():
    args = __import__("train_unconditional").parse_args([])
    return row_train(batch=args.train_batch_size, block_out_channels=args.block_out_channels, attention_levels=args.attention_levels, layers_per_block=args.layers_per_block,
                     channels=3)


def row_tutorial128():
    """The tutorial's GPU layout (README: 128 px, 128/128/256/256/512/512, attention at level 4, 2 layers per block) at batch 2."""
    return row_train(steps=2, warmup=1, batch=real_batch(2), block_out_channels=(128, 128, 256, 256, 512, 512), attention_levels=(4,), layers_per_block=2, resolution=128,
                     channels=3)


ROWS = {"train": row_train, "train_script_default": row_train_script_default, "tutorial128": row_tutorial128, "laion": row_laion, "folder": row_folder}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    add_bench_arguments(p)
    add_real_batch_argument(p, "tutorial128")
    args = p.parse_args()
    check_bench_arguments(p, args)
    if args.child:
        from common.cpu_env import apply_cpu_env

        apply_cpu_env(verbose=False)
        emit(ROWS[args.child]())
        return
    run_rows(__file__, args.rows, args)


if __name__ == "__main__":
    main()
