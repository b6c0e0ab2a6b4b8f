"""Encode a class-folder image tree into VAE latents (fast-DiT's feature pre-extraction).

    python extract_features.py --data_path data/demo/digits --feature_path outputs/digits_features \
        --image_size 32 --vae_name_or_path auto

Input: ``<data_path>/<class>/<image>`` (classes = sorted subfolder names -> ids 0..K-1).
Output under ``--feature_path`` (see features.py): ``imagenet256_features/<i>.npy`` float32
``(2, C, H/f, W/f)`` = latent of the image and of its horizontal flip (posterior sample times
the VAE scaling factor), ``imagenet256_labels/<i>.npy`` int64 ``(1,)``, ``classes.json`` and
``vae.txt`` (which VAE made the latents and how many features there are).  A folder whose
``vae.txt`` matches the current VAE, images and size is left as is, so re-running is cheap.

The features are written to ``<feature_path>.tmp-extract`` and swapped into place at the end
(:func:`common.checkpoint.replace_dir`), so ``--feature_path`` never mixes two extractions and a
crash leaves the previous folder untouched.  A ``--feature_path`` holding anything else than
these files is refused.  An image that cannot be decoded is skipped (logged with its path; its
index ``i`` is simply missing from the folders).
Works under ``paddle.distributed.launch``: rank r encodes images r, r+world, ... .
"""
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import argparse
import json
import shutil

import numpy as np
import paddle

from common.arg_checks import require_positive, require_vae_multiple, usage_errors
from common.checkpoint import replace_dir
from common.distributed import barrier, init_distributed
from common.fast_ops import add_fast_ops_argument, apply_fast_ops
from common.images import ImageFolderDataset, ImageTransform, add_jpeg_draft_argument
from common.logging_utils import get_logger
from common.vae import load_vae

from features import FEATURE_DIR, LABEL_DIR

logger = get_logger("extract")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_path", required=True, help="class-folder image tree")
    p.add_argument("--feature_path", required=True, help="output folder")
    p.add_argument("--image_size", type=int, default=256, help="center-crop side in pixels")
    p.add_argument("--vae_name_or_path", default="auto", help="auto | random | local VAE/pipeline folder | hub id")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--global_seed", type=int, default=0, help="seed of the posterior samples")
    add_jpeg_draft_argument(p)
    add_fast_ops_argument(p)  # --fast_ops (CPU speed-ups, on by default)
    args = p.parse_args(argv)
    with usage_errors(p):  # exit 2 naming the flag, before any image or VAE is loaded
        require_positive(args, "batch_size")
        require_vae_multiple(args.image_size, args.vae_name_or_path, "--image_size")  # whole latent pixels
    return args


STAMP_FILE = "vae.txt"
OUTPUT_NAMES = (FEATURE_DIR, LABEL_DIR, "classes.json", STAMP_FILE)


def _count_npy(folder):
    return len([n for n in os.listdir(folder) if n.endswith(".npy")]) if os.path.isdir(folder) else -1


def _up_to_date(feature_path, stamp):
    """Whether ``feature_path`` holds a complete extraction described by ``stamp``."""
    path = os.path.join(feature_path, STAMP_FILE)
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        text = f.read()
    rest = text[len(stamp):].split() if text.startswith(stamp) else []
    if len(rest) != 2 or rest[0] != "features" or not rest[1].isdigit():
        return False
    return _count_npy(os.path.join(feature_path, FEATURE_DIR)) == _count_npy(os.path.join(feature_path, LABEL_DIR)) == int(rest[1])


def check_output_folder(feature_path):
    """Make sure ``feature_path`` may be replaced: absent, empty, or holding only what this script
    writes (hidden files aside).

    Raises:
        FileExistsError: it is a file, or a folder with other content (names a few entries).
    """
    if not os.path.exists(feature_path):
        return
    if not os.path.isdir(feature_path):
        raise FileExistsError(f"--feature_path {feature_path!r} is a file; expected a (new) folder for the features")
    foreign = sorted(n for n in os.listdir(feature_path) if n not in OUTPUT_NAMES and not n.startswith("."))
    if foreign:
        raise FileExistsError(
            f"--feature_path {feature_path!r} holds files that extract_features.py did not write ({', '.join(foreign[:5])}); "
            "it would replace the whole folder, so pass a new or empty folder"
        )


def main(argv=None):
    args = parse_args(argv)
    rank, world = init_distributed()
    dataset = ImageFolderDataset(args.data_path, ImageTransform(args.image_size, center_crop=True, draft=args.jpeg_draft), with_labels=True)
    vae, description = load_vae(args.vae_name_or_path)
    apply_fast_ops(vae, args.fast_ops)
    scale = float(getattr(vae.config, "scaling_factor", 0.18215) or 0.18215)
    out = os.path.abspath(args.feature_path)
    stamp = description + f"\nscaling_factor {scale}\nimages {len(dataset)} from {os.path.abspath(args.data_path)} at {args.image_size}px\n" + ("jpeg draft decode\n" if args.jpeg_draft else "")
    if _up_to_date(out, stamp):
        logger.info("features in %s are up to date (same VAE, images and size); nothing to do", args.feature_path)
        return
    check_output_folder(out)
    tmp = out + ".tmp-extract"  # one name for all ranks
    feat_dir, label_dir = os.path.join(tmp, FEATURE_DIR), os.path.join(tmp, LABEL_DIR)
    try:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(feat_dir)
            os.makedirs(label_dir)
            with open(os.path.join(tmp, "classes.json"), "w") as f:
                json.dump(dataset.classes, f)
        barrier()
        paddle.seed(args.global_seed * world + rank)
        mine = list(range(rank, len(dataset), world))
        shape = None
        for start in range(0, len(mine), args.batch_size):
            loaded = [(i, dataset.try_load(i)) for i in mine[start:start + args.batch_size]]
            loaded = [(i, sample) for i, sample in loaded if sample is not None]  # undecodable images: skipped, logged
            if not loaded:
                continue
            x = paddle.to_tensor(np.stack([sample["pixel_values"] for _, sample in loaded]))
            both = paddle.concat([x, x.flip(axis=[3])], axis=0)  # originals, then their flips
            with paddle.no_grad():
                z = vae.encode(both).latent_dist.sample() * scale
            z = z.numpy().astype(np.float32)
            n, shape = len(loaded), tuple(z.shape[1:])
            for k, (i, sample) in enumerate(loaded):
                np.save(os.path.join(feat_dir, f"{i}.npy"), np.stack([z[k], z[n + k]]))
                np.save(os.path.join(label_dir, f"{i}.npy"), np.array([sample["class_labels"]], dtype=np.int64))
        if dataset.num_skipped:
            logger.warning("rank %d: skipped %d undecodable image(s): %s", rank, dataset.num_skipped, dataset.bad_log.summary())
        barrier()
        if rank == 0:
            count = _count_npy(feat_dir)
            with open(os.path.join(tmp, STAMP_FILE), "w") as f:
                f.write(stamp + f"features {count}\n")
            replace_dir(tmp, out)
            logger.info("wrote %d features %s (+ flips) of %d images from %s with %s to %s",
                        count, shape, len(dataset), args.data_path, description, args.feature_path)
        barrier()
    finally:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)  # only left after a failure


if __name__ == "__main__":
    main()
