"""Generate images from an exported U-ViT ``LDMTextToImagePipeline`` folder.

    python ldm_uvit/infer.py --model_name_or_path outputs/uvit_demo/ldm_uvit_pipelines \\
        --prompt "a handwritten digit three" "a handwritten digit seven" --num_images_per_prompt 4 \\
        --guidance_scale 2.0 --output outputs/uvit_demo/prompt_grid.png --grid_upscale 4

One prompt and one image: the PNG itself; otherwise a grid with one row per prompt.

Image size: the pipeline's default call gives the U-ViT's latents: the exported ``unet/config.json``
has ``latent_size`` (the latents the U-ViT takes) and ``sample_size = latent_size * 8 /
vae_scale_factor`` (``LDMTextToImagePipeline`` makes ``height // 8`` latents from a default height
of ``sample_size * vae_scale_factor``; see ``uvit_ldm_unet.py``).  So leave ``--height`` /
``--width`` unset: 256x256 images with the f8 SD VAE (32x32 latents), 32x32 with the f4 demo VAE
(8x8 latents).  A height of ``8 * latent_size`` gives the same latents.

Toggles: ``--enable_xformers_memory_efficient_attention`` switches U-ViT's attention to paddle's
fused kernel where it exists (GPU builds; logged and skipped otherwise).  ``--tome_ratio`` calls
ppdiffusers' ``apply_tome`` (token merging); it patches only ``BasicTransformerBlock`` layers of
UNets, so for a U-ViT it changes nothing and says so.
"""
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import argparse

import paddle
from ppdiffusers import LDMTextToImagePipeline

from common.fast_ops import add_fast_ops_argument, apply_fast_ops
from common.images import save_grid
from common.logging_utils import get_logger
from common.model_toggles import apply_model_toggles

logger = get_logger("infer")


def parse_args():
    parser = argparse.ArgumentParser(description="Text-to-image with an exported U-ViT LDMTextToImagePipeline.")
    parser.add_argument("--model_name_or_path", default="./ldm_uvit_pipelines", help="pipeline folder written by generate_pipelines.py")
    parser.add_argument("--prompt", nargs="+", default=["an elephant under the sea"], help="one or more prompts")
    parser.add_argument("--num_images_per_prompt", type=int, default=1)
    parser.add_argument("--guidance_scale", type=float, default=2.0, help="classifier-free guidance (1 = off)")
    parser.add_argument("--num_inference_steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic)")
    parser.add_argument("--height", type=int, default=None, help="default: the pipeline's (see module docstring)")
    parser.add_argument("--width", type=int, default=None, help="default: the pipeline's")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", default="ldm_uvit_sample.png", help="PNG to write")
    parser.add_argument("--grid_upscale", type=int, default=1, help="enlarge the saved grid (nearest) for tiny images")
    parser.add_argument("--enable_xformers_memory_efficient_attention", action="store_true")
    parser.add_argument("--tome_ratio", type=float, default=0.0, help="token merging ratio (0 = off; no effect on U-ViT)")
    add_fast_ops_argument(parser)  # --fast_ops (CPU speed-ups, on by default)
    return parser.parse_args()


def main():
    args = parse_args()
    pipe = LDMTextToImagePipeline.from_pretrained(args.model_name_or_path)
    apply_fast_ops(pipe, args.fast_ops)
    apply_model_toggles(pipe.unet, memory_efficient_attention=args.enable_xformers_memory_efficient_attention, name="unet")
    if args.tome_ratio > 0:
        pipe.apply_tome(ratio=args.tome_ratio)
        patched = any(type(m).__name__.startswith("ToMe") for m in pipe.unet.sublayers())
        logger.info("ToMe ratio %.2f: %s", args.tome_ratio, "applied" if patched else "no BasicTransformerBlock in the U-ViT, nothing patched")
    prompts = [p for p in args.prompt for _ in range(args.num_images_per_prompt)]
    generator = paddle.Generator().manual_seed(args.seed)
    images = pipe(
        prompts, height=args.height, width=args.width, num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale, eta=args.eta, generator=generator,
    ).images
    if len(images) == 1:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        images[0].save(args.output)
    else:
        save_grid(images, args.output, nrow=args.num_images_per_prompt, upscale=args.grid_upscale)
    logger.info("%d image(s) of %dx%d -> %s (rows: %s)", len(images), images[0].width, images[0].height, args.output, " | ".join(args.prompt))


if __name__ == "__main__":
    main()
