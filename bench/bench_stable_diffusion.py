"""Speed and memory of one Stable Diffusion training step (VAE encode + text encoder + UNet
forward/backward + AdamW update), on this machine's CPU (or GPU if paddle has one).

Rows:
  demo   the CPU demo: config/unet_demo.json + demo text encoder + demo f4 VAE, 32 px, batch 32, 16 tokens
  sd-v1  the real SD v1 UNet (config/unet_config.json, ~860M) + CLIP ViT-L/14-sized text encoder
         + SD f8 VAE (random weights), 256 px, batch 1, one timed step

Each row runs in its own process so that peak memory (max RSS on CPU) is that row's alone.

    python bench/bench_stable_diffusion.py                 # both rows
    python bench/bench_stable_diffusion.py --rows demo     # one row
"""
import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "stable_diffusion"))

ROWS = {
    "demo": dict(unet="unet_demo.json", text="text_encoder_demo.json", vae="demo", resolution=32, batch=32, tokens=16, warmup=2, steps=5),
    "sd-v1": dict(unet="unet_config.json", text="clip-vit-l14", vae="sd", resolution=256, batch=1, tokens=77, warmup=1, steps=1),
}
CLIP_L14_TEXT = dict(hidden_size=768, intermediate_size=3072, projection_dim=768, num_hidden_layers=12, num_attention_heads=12,
                     max_position_embeddings=77, hidden_act="quick_gelu", vocab_size=49408, eos_token_id=49407, bos_token_id=49406)
SD_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
              block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=256,
              scaling_factor=0.18215)


def run_row(name):
    from common.cpu_env import apply_cpu_env

    apply_cpu_env(verbose=False)
    import paddle
    from ppdiffusers import AutoencoderKL
    from ppdiffusers.transformers import CLIPTextConfig, CLIPTextModel

    from common.logging_utils import peak_memory_mb
    from common.vae import load_vae
    from sd.model import StableDiffusionModel
    from sd.pipeline_utils import load_unet, make_training_scheduler

    row = ROWS[name]
    cfg_dir = os.path.join(REPO, "stable_diffusion", "config")
    paddle.seed(0)
    vae = load_vae("random")[0] if row["vae"] == "demo" else AutoencoderKL.from_config(SD_VAE)
    if row["text"] == "clip-vit-l14":
        text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L14_TEXT))
        vocab = CLIP_L14_TEXT["vocab_size"]
    else:
        with open(os.path.join(cfg_dir, row["text"])) as f:
            conf = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
        vocab = 805
        text_encoder = CLIPTextModel(CLIPTextConfig(**conf, vocab_size=vocab))
    unet = load_unet(os.path.join(cfg_dir, row["unet"]))
    model = StableDiffusionModel(vae, text_encoder, unet, make_training_scheduler("epsilon"))
    opt = paddle.optimizer.AdamW(learning_rate=1e-4, parameters=[p for p in model.parameters() if not p.stop_gradient])
    b, r = row["batch"], row["resolution"]
    pixels = paddle.rand([b, 3, r, r]) * 2 - 1
    ids = paddle.randint(0, vocab, [b, row["tokens"]])
    times = []
    for i in range(row["warmup"] + row["steps"]):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, pixel_values=pixels)
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss)
        if i >= row["warmup"]:
            times.append(time.perf_counter() - t0)
    n_unet = sum(p.size for p in unet.parameters()) / 1e6
    return {"row": name, "unet_params_M": round(n_unet, 1), "resolution": r, "batch": b,
            "ms_per_step": round(1000 * sum(times) / len(times), 1), "peak_mem_mb": round(peak_memory_mb(), 1),
            "device": paddle.device.get_device(), "omp_threads": os.environ.get("OMP_NUM_THREADS")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="demo,sd-v1", help="comma-separated rows to run: " + ", ".join(ROWS))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_row(args.child)), flush=True)
        return
    results = []
    for name in [r.strip() for r in args.rows.split(",") if r.strip()]:
        if name not in ROWS:
            parser.error(f"unknown row {name!r}; choose from {', '.join(ROWS)}")
        proc = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(f"{name}: failed ({proc.returncode})\n{proc.stderr[-2000:]}")
            continue
        results.append(json.loads(lines[-1][7:]))
    cols = ["row", "unet_params_M", "resolution", "batch", "ms_per_step", "peak_mem_mb", "device", "omp_threads"]
    print(" | ".join(f"{c:>13}" for c in cols))
    for r in results:
        print(" | ".join(f"{str(r[c]):>13}" for c in cols))


if __name__ == "__main__":
    main()
