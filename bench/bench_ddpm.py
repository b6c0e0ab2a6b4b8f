"""Benchmark rows for the ddpm_tutorial default config and the data readers.

    python bench/bench_ddpm.py                 # all rows
    python bench/bench_ddpm.py --rows train    # one row

Each row runs in its own process so peak RSS is that row's own.  Prints a markdown table:
ms/step and images/s for training steps of run_train_ddpm.sh's UNet (16/32/64 channels, 32x32,
batch 8 per process; the main job runs two such processes), of train_unconditional.py's default
UNet (32/64/128 + attention, batch 32), and images/s decoded by the laion reader (digits parts) and the image-folder reader (faces, 32x32).
Not a test: numbers depend on the machine (cores, vendor, other load).
"""
import argparse
import json
import os
import subprocess
import sys
import time

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "ddpm_tutorial"))


def row_train(steps=10, warmup=2, batch=8, block_out_channels=(16, 32, 64), attention_levels=(), layers_per_block=1):
    import paddle
    import paddle.nn.functional as F
    from denoising_diffusion import build_unet
    from ppdiffusers import DDPMScheduler

    import train_unconditional

    args = train_unconditional.parse_args([])
    unet = build_unet(args.resolution, block_out_channels, attention_levels, layers_per_block)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    opt = paddle.optimizer.AdamW(learning_rate=1e-4, parameters=unet.parameters())
    x = paddle.rand([batch, 3, args.resolution, args.resolution]) * 2 - 1
    times = []
    for i in range(warmup + steps):
        t0 = time.time()
        noise = paddle.randn(x.shape)
        t = paddle.randint(0, 1000, [batch], dtype="int64")
        loss = F.mse_loss(unet(scheduler.add_noise(x, noise, t), t).sample, noise)
        loss.backward()
        opt.step()
        opt.clear_grad()
        if i >= warmup:
            times.append(time.time() - t0)
    ms = 1000 * sum(times) / len(times)
    params = sum(p.numel().item() for p in unet.parameters()) / 1e6
    return {"row": f"ddpm train step (UNet2DModel {params:.2f}M, {args.resolution}px, batch {batch})", "ms_per_step": ms, "images_per_s": batch / (ms / 1000)}


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
    return {"row": "laion reader (digits parts, PNG base64 decode, 1 process)", "ms_per_step": float("nan"), "images_per_s": n / sec}


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
    return {"row": "image-folder reader (faces -> 32x32, flip, 1 process)", "ms_per_step": float("nan"), "images_per_s": n / sec}


def row_train_script_default():
    args = __import__("train_unconditional").parse_args([])
    return row_train(batch=args.train_batch_size, block_out_channels=args.block_out_channels, attention_levels=args.attention_levels, layers_per_block=args.layers_per_block)


ROWS = {"train": row_train, "train_script_default": row_train_script_default, "laion": row_laion, "folder": row_folder}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        from common.cpu_env import apply_cpu_env

        apply_cpu_env(verbose=False)
        import resource

        result = ROWS[args.child]()
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("BENCH " + json.dumps(result))
        return
    from common.cpu_env import cpu_env_settings, cpu_vendor

    print(f"cpu: {cpu_vendor()} x {os.cpu_count()} cores; settings: {cpu_env_settings()[0] or 'from environment'}")
    print("| row | ms/step | images/s | peak RSS (MiB) |\n|---|---|---|---|")
    for name in args.rows:
        out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True, cwd=REPO_ROOT)
        line = [l for l in out.stdout.splitlines() if l.startswith("BENCH ")]
        if not line:
            print(f"| {name} | failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode} | | |")
            continue
        r = json.loads(line[0][6:])
        print(f"| {r['row']} | {r['ms_per_step']:.0f} | {r['images_per_s']:.1f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
