"""Generate class-conditional images with a DiT ``DiTPipeline`` (DDIM sampling).

    python infer_demo_dit.py --pipeline outputs/class_conditional_demo/dit_pipeline \
        --class_labels seven 3 --num_inference_steps 25 --output result_dit.png

``--pipeline`` is a folder written by tools/convert_dit_to_ppdiffusers.py or a hub id such as
``facebook/DiT-XL-2-256`` (needs a network).  ``--class_labels`` takes ids or names from the
pipeline's ``id2label`` (e.g. ``"golden retriever"`` for ImageNet).  Writes one PNG grid: one column
per class, ``--num_images_per_class`` rows.
"""
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import argparse

import paddle

from common.fast_ops import add_fast_ops_argument, apply_fast_ops
from common.images import save_grid
from common.logging_utils import get_logger

logger = get_logger("infer_dit")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", default="facebook/DiT-XL-2-256", help="DiTPipeline folder or hub id")
    p.add_argument("--class_labels", nargs="+", default=["golden retriever"], help="class ids or names")
    p.add_argument("--num_images_per_class", type=int, default=1, help="rows of the grid: this many samples of every class")
    p.add_argument("--num_inference_steps", type=int, default=25)
    p.add_argument("--guidance_scale", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output", default="result_DiT.png")
    add_fast_ops_argument(p)  # --fast_ops (CPU speed-ups, on by default)
    args = p.parse_args()

    from ppdiffusers import DDIMScheduler, DiTPipeline

    if args.pipeline.startswith((".", "/")) and not os.path.isdir(args.pipeline):
        raise FileNotFoundError(f"--pipeline {args.pipeline!r} does not exist; run tools/convert_dit_to_ppdiffusers.py first")
    pipe = DiTPipeline.from_pretrained(args.pipeline)
    apply_fast_ops(pipe, args.fast_ops)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    ids = [int(c) if c.isdigit() else None for c in args.class_labels]
    names = [c for c, i in zip(args.class_labels, ids) if i is None]
    mapped = iter(pipe.get_label_ids(names)) if names else iter(())
    class_ids = [i if i is not None else next(mapped) for i in ids]
    if args.num_images_per_class < 1:
        raise ValueError(f"--num_images_per_class must be >= 1, got {args.num_images_per_class}")
    generator = paddle.Generator().manual_seed(args.seed)
    images = pipe(class_labels=class_ids * args.num_images_per_class, num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale, generator=generator).images
    save_grid(images, args.output, nrow=len(class_ids), upscale=max(1, 128 // images[0].width))
    logger.info("classes %s -> %s", class_ids, args.output)


if __name__ == "__main__":
    main()
