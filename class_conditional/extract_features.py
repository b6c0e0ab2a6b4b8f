"""Encode a class-folder image tree into VAE latents (fast-DiT's feature pre-extraction).

    python extract_features.py --data_path data/demo/digits --feature_path outputs/digits_features \
        --image_size 32 --vae_name_or_path auto

Input: ``<data_path>/<class>/<image>`` (classes = sorted subfolder names -> ids 0..K-1).
Output under ``--feature_path`` (see features.py): ``imagenet256_features/<i>.npy`` float32
``(2, C, H/f, W/f)`` = latent of the image and of its horizontal flip (posterior sample times
the VAE scaling factor), ``imagenet256_labels/<i>.npy`` int64 ``(1,)``, ``classes.json`` and
``vae.txt`` (which VAE made the latents; written last).  A folder whose ``vae.txt`` matches the
current VAE, images and size is left as is, so re-running is cheap.
Works under ``paddle.distributed.launch``: rank r encodes images r, r+world, ... .
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))  # repo root, for common/
from common.cpu_env import apply_cpu_env  # noqa: E402

apply_cpu_env()  # must run before paddle is imported

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from common.distributed import barrier, init_distributed  # noqa: E402
from common.images import ImageFolderDataset, ImageTransform  # noqa: E402
from common.logging_utils import get_logger  # noqa: E402
from common.vae import load_vae  # noqa: E402

from class_conditional.features import FEATURE_DIR, LABEL_DIR  # noqa: E402

logger = get_logger("extract")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_path", required=True, help="class-folder image tree")
    p.add_argument("--feature_path", required=True, help="output folder")
    p.add_argument("--image_size", type=int, default=256, help="center-crop side in pixels")
    p.add_argument("--vae_name_or_path", default="auto", help="auto | random | local VAE/pipeline folder | hub id")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--global_seed", type=int, default=0, help="seed of the posterior samples")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rank, world = init_distributed()
    dataset = ImageFolderDataset(args.data_path, ImageTransform(args.image_size, center_crop=True), with_labels=True)
    vae, description = load_vae(args.vae_name_or_path)
    scale = float(getattr(vae.config, "scaling_factor", 0.18215) or 0.18215)
    feat_dir, label_dir = os.path.join(args.feature_path, FEATURE_DIR), os.path.join(args.feature_path, LABEL_DIR)
    stamp = description + f"\nscaling_factor {scale}\nimages {len(dataset)} from {os.path.abspath(args.data_path)} at {args.image_size}px\n"
    stamp_path = os.path.join(args.feature_path, "vae.txt")
    if os.path.isfile(stamp_path) and open(stamp_path).read() == stamp and os.path.isdir(feat_dir) and len(os.listdir(feat_dir)) == len(dataset):
        logger.info("features in %s are up to date (same VAE, images and size); nothing to do", args.feature_path)
        return
    if rank == 0:
        os.makedirs(feat_dir, exist_ok=True)
        os.makedirs(label_dir, exist_ok=True)
        with open(os.path.join(args.feature_path, "classes.json"), "w") as f:
            json.dump(dataset.classes, f)
        if os.path.exists(stamp_path):
            os.remove(stamp_path)  # written again only once every feature is on disk
    barrier()
    paddle.seed(args.global_seed * world + rank)
    mine = list(range(rank, len(dataset), world))
    for start in range(0, len(mine), args.batch_size):
        idx = mine[start:start + args.batch_size]
        x = paddle.to_tensor(np.stack([dataset[i]["pixel_values"] for i in idx]))
        both = paddle.concat([x, x.flip(axis=[3])], axis=0)  # originals, then their flips
        with paddle.no_grad():
            z = vae.encode(both).latent_dist.sample() * scale
        z = z.numpy().astype(np.float32)
        n = len(idx)
        for k, i in enumerate(idx):
            np.save(os.path.join(feat_dir, f"{i}.npy"), np.stack([z[k], z[n + k]]))
            np.save(os.path.join(label_dir, f"{i}.npy"), np.array([dataset.labels[i]], dtype=np.int64))
    barrier()
    if rank == 0:
        with open(stamp_path, "w") as f:
            f.write(stamp)
        logger.info("wrote %d features %s (+ flips) from %s with %s to %s", len(dataset), tuple(z.shape[1:]), args.data_path, description, args.feature_path)


if __name__ == "__main__":
    main()
