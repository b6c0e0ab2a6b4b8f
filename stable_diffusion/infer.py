"""Text-to-image with a trained (or any) Stable Diffusion: prompt(s) -> PNG(s).

    # the folder a training run wrote (a full pipeline), its EMA UNet from a checkpoint, DPM-Solver
    python infer.py --pretrained_model_name_or_path ../outputs/sd_demo \\
        --unet_name_or_path ../outputs/sd_demo/checkpoint-600/unet_ema \\
        --prompt "a handwritten digit seven" --scheduler dpm-solver --output seven.png

    # any full SD folder or hub id (needs a network for hub ids)
    python infer.py --pretrained_model_name_or_path CompVis/stable-diffusion-v1-4 --resolution 512 --prompt "..."

Several ``--prompt`` values give a grid (``--output`` is then the grid PNG).
"""
import argparse
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

from common.fast_ops import add_fast_ops_argument, apply_fast_ops
from common.images import save_grid
from common.logging_utils import get_logger
from sd_pipeline_utils import SCHEDULERS, load_text_encoder, load_unet, resolve_component, sample_prompt_grid, set_scheduler

logger = get_logger("sd")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Stable Diffusion text-to-image inference")
    p.add_argument("--pretrained_model_name_or_path", required=True, help="full SD folder (a training output_dir) or hub id")
    p.add_argument("--unet_name_or_path", default=None, help="UNet folder replacing the pipeline's (e.g. <checkpoint>/unet or unet_ema)")
    p.add_argument("--text_encoder_name_or_path", default=None, help="text encoder folder replacing the pipeline's (e.g. <checkpoint>/text_encoder)")
    p.add_argument("--prompt", action="append", default=None, help="prompt (repeat for several); default: 'a handwritten digit seven'")
    p.add_argument("--negative_prompt", default=None, help="negative prompt used with classifier-free guidance")
    p.add_argument("--guidance_scale", type=float, default=7.5, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--num_inference_steps", type=int, default=50, help="sampling steps")
    p.add_argument("--scheduler", default="ddim", choices=sorted(SCHEDULERS), help="sampler, built from_config of the pipeline's scheduler")
    p.add_argument("--resolution", type=int, default=None, help="image side in pixels (default: the UNet's sample_size x the VAE factor = the training resolution)")
    p.add_argument("--seed", type=int, default=42, help="sampling seed (the same for every prompt)")
    p.add_argument("--output", default="sd_sample.png", help="PNG to write (a grid when several prompts)")
    p.add_argument("--upscale", type=int, default=1, help="nearest-neighbour enlargement of the saved PNG (for tiny demo images)")
    add_fast_ops_argument(p)  # --fast_ops (CPU speed-ups, on by default)
    args = p.parse_args(argv)
    if args.num_inference_steps < 1:
        p.error(f"--num_inference_steps must be >= 1, got {args.num_inference_steps}")
    return args


def load_pipeline(pretrained, unet_name_or_path=None, text_encoder_name_or_path=None, scheduler="ddim"):
    """``StableDiffusionPipeline.from_pretrained(pretrained, safety_checker=None)`` with optional
    UNet / text encoder replacements and the scheduler swapped to ``scheduler``.

    Raises:
        FileNotFoundError: a local path that does not exist.
        ValueError: unknown ``scheduler``.
    """
    from ppdiffusers import StableDiffusionPipeline

    if pretrained.startswith((".", "/")) and not os.path.isdir(pretrained):
        raise FileNotFoundError(f"--pretrained_model_name_or_path {pretrained!r} does not exist")
    parts = {}
    if unet_name_or_path:
        parts["unet"] = load_unet(*resolve_component(unet_name_or_path, None, "unet"))
    if text_encoder_name_or_path:
        parts["text_encoder"] = load_text_encoder(*resolve_component(text_encoder_name_or_path, None, "text_encoder"))
    pipe = StableDiffusionPipeline.from_pretrained(pretrained, safety_checker=None, feature_extractor=None, requires_safety_checker=False, **parts)
    pipe.set_progress_bar_config(disable=True)
    return set_scheduler(pipe, scheduler)


def main(argv=None):
    args = parse_args(argv)
    pipe = load_pipeline(args.pretrained_model_name_or_path, args.unet_name_or_path, args.text_encoder_name_or_path, args.scheduler)
    apply_fast_ops(pipe, args.fast_ops)
    resolution = args.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    prompts = args.prompt or ["a handwritten digit seven"]
    images = sample_prompt_grid(pipe, prompts, resolution, args.num_inference_steps, args.guidance_scale, args.seed, args.negative_prompt)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    if len(images) == 1:
        image = images[0]
        if args.upscale > 1:
            image = image.resize((image.width * args.upscale, image.height * args.upscale), 0)
        image.save(args.output)
    else:
        save_grid(images, args.output, upscale=args.upscale)
    logger.info("%d image(s) %dx%d (%s, %d steps, guidance %.1f) -> %s", len(images), resolution, resolution, args.scheduler,
                args.num_inference_steps, args.guidance_scale, args.output)
    return images


if __name__ == "__main__":
    main()
