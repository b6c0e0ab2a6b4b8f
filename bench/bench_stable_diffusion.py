"""Speed and memory of one Stable Diffusion training step (VAE encode + text encoder + UNet
forward/backward + AdamW update), on this machine's CPU (or GPU if paddle has one).

Rows:
  demo   the CPU demo: config/unet_demo.json + demo text encoder + demo f4 VAE, 32 px, batch 32, 16 tokens
  sd-v1  the real SD v1 UNet (config/unet_config.json, ~860M) + CLIP ViT-L/14-sized text encoder
         + SD f8 VAE (random weights), 256 px, batch 1, one timed step

Each row runs in its own process so that peak memory (max RSS on CPU) is that row's alone
(harness: bench/bench_common.py).  With ``--compare torch`` each row is also timed in PyTorch with the
same configs: diffusers ``AutoencoderKL`` + transformers ``CLIPTextModel`` (both frozen) + diffusers
``UNet2DConditionModel``, epsilon MSE, AdamW (bench/torch_mirrors.py).

    python bench/bench_stable_diffusion.py                 # both rows
    python bench/bench_stable_diffusion.py --rows demo     # one row
    python bench/bench_stable_diffusion.py --rows demo --compare torch --torch_python /path/to/venv/bin/python
"""
import argparse
import json
import os
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "stable_diffusion"))
from bench_common import add_bench_arguments, add_real_batch_argument, real_batch, bench_fast_ops, check_bench_arguments, config_dict, emit, run_rows, time_steps  # noqa: E402

ROWS = {
    "demo": dict(unet="unet_demo.json", text="text_encoder_demo.json", vae="demo", resolution=32, batch=32, tokens=16, warmup=2, steps=5),
    "sd-v1": dict(unet="unet_config.json", text="clip-vit-l14", vae="sd", resolution=256, batch=1, tokens=77, warmup=1, steps=1),
}
CLIP_L14_TEXT = dict(hidden_size=768, intermediate_size=3072, projection_dim=768, num_hidden_layers=12, num_attention_heads=12,
                     max_position_embeddings=77, hidden_act="quick_gelu", vocab_size=49408, eos_token_id=49407, bos_token_id=49406)
# the CLIPTextConfig fields both paddlenlp and transformers read (handed to the PyTorch mirror)
CLIP_TEXT_KEYS = ("hidden_size", "intermediate_size", "projection_dim", "num_hidden_layers", "num_attention_heads", "max_position_embeddings",
                  "hidden_act", "layer_norm_eps", "vocab_size", "eos_token_id", "bos_token_id", "pad_token_id")
SD_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
              block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=256,
              scaling_factor=0.18215)


def run_row(name):
    from common.cpu_env import apply_cpu_env

    apply_cpu_env(verbose=False)
    import paddle
    from ppdiffusers import AutoencoderKL
    from ppdiffusers.transformers import CLIPTextConfig, CLIPTextModel

    from common.vae import load_vae
    from sd_model import StableDiffusionModel
    from sd_pipeline_utils import load_unet, make_training_scheduler

    row = ROWS[name]
    if name == "sd-v1":
        row = dict(row, batch=real_batch(row["batch"]))  # --real_batch
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
    bench_fast_ops(model)  # as the training script does on CPU (--fast_ops)
    opt = paddle.optimizer.AdamW(learning_rate=1e-4, parameters=[p for p in model.parameters() if not p.stop_gradient])
    b, r = row["batch"], row["resolution"]
    pixels = paddle.rand([b, 3, r, r]) * 2 - 1
    ids = paddle.randint(0, vocab, [b, row["tokens"]])

    def step():
        loss = model(input_ids=ids, pixel_values=pixels)
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss)

    timing = time_steps(step, row["warmup"], row["steps"])
    n_unet = int(sum(p.size for p in unet.parameters()))
    text_cfg = {k: v for k, v in text_encoder.config.to_dict().items() if k in CLIP_TEXT_KEYS}
    n_other = int(sum(p.size for p in vae.parameters())) + int(sum(p.size for p in text_encoder.parameters()))
    return dict(timing, row=f"{name}: SD step (UNet {n_unet / 1e6:.1f}M, {r}px, {row['tokens']} tokens)", params=n_unet, params_other=n_other, batch=b,
                images_per_s=b * 1000.0 / timing["ms_per_step"], device=paddle.device.get_device(),
                torch=dict(kind="sd", unet=config_dict(unet.config), vae=config_dict(vae.config), text=dict(text_cfg, vocab_size=vocab),
                           batch=b, resolution=r, tokens=row["tokens"], warmup=row["warmup"], steps=row["steps"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="demo,sd-v1", help="comma-separated rows to run: " + ", ".join(ROWS))
    add_bench_arguments(parser)
    add_real_batch_argument(parser, "sd-v1")
    args = parser.parse_args()
    check_bench_arguments(parser, args)
    if args.child:
        emit(run_row(args.child))
        return
    names = [r.strip() for r in args.rows.split(",") if r.strip()]
    for name in names:
        if name not in ROWS:
            parser.error(f"--rows: unknown row {name!r}; choose from {', '.join(ROWS)}")
    run_rows(__file__, names, args)


if __name__ == "__main__":
    main()
