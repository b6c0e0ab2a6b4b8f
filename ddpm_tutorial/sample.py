"""Sample an N x N grid from a saved ``DDPMPipeline`` folder.

    python ddpm_tutorial/sample.py --pipeline_dir outputs/ddpm_faces --grid_size 8 --output outputs/ddpm_faces/grid.png
"""
import argparse
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import paddle
from ppdiffusers import DDPMPipeline

from common.fast_ops import add_fast_ops_argument, apply_fast_ops
from common.diffusion_utils import DDPM_SAMPLERS, ddpm_sampling_scheduler
from common.images import save_grid


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pipeline_dir", default="outputs/ddpm_faces", help="folder written by DDPMPipeline.save_pretrained")
    p.add_argument("--output", default=None, help="PNG path (default: <pipeline_dir>/grid.png)")
    p.add_argument("--grid_size", type=int, default=8, help="N for an N x N grid")
    p.add_argument("--scheduler", default="ddim", choices=list(DDPM_SAMPLERS),
                   help="ddim: deterministic DDIM; ddpm: ancestral sampling with the pipeline's DDPMScheduler (common.diffusion_utils.ddpm_sampling_scheduler)")
    p.add_argument("--num_inference_steps", type=int, default=None,
                   help="sampling steps, 1..num_train_timesteps (default: 50 for ddim, every training step for ddpm; fewer ddpm steps walk a respaced grid)")
    p.add_argument("--upscale", type=int, default=2, help="nearest-neighbour enlargement of the grid")
    p.add_argument("--seed", type=int, default=0)
    add_fast_ops_argument(p)  # --fast_ops (CPU speed-ups, on by default)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isfile(os.path.join(args.pipeline_dir, "model_index.json")):
        raise FileNotFoundError(f"--pipeline_dir {args.pipeline_dir!r} has no model_index.json (not a saved DDPMPipeline)")
    pipeline = DDPMPipeline.from_pretrained(args.pipeline_dir)
    apply_fast_ops(pipeline, args.fast_ops)
    total = pipeline.scheduler.config.num_train_timesteps
    steps = args.num_inference_steps or (50 if args.scheduler == "ddim" else total)
    if not 1 <= steps <= total:
        raise ValueError(f"--num_inference_steps must be in 1..{total} (the pipeline's num_train_timesteps), got {steps}")
    pipeline.scheduler = ddpm_sampling_scheduler(pipeline.scheduler, args.scheduler)
    generator = paddle.Generator().manual_seed(args.seed)
    images = pipeline(batch_size=args.grid_size**2, num_inference_steps=steps, generator=generator).images
    output = args.output or os.path.join(args.pipeline_dir, "grid.png")
    save_grid(images, output, nrow=args.grid_size, upscale=args.upscale)
    print(output)
    return output


if __name__ == "__main__":
    main()
