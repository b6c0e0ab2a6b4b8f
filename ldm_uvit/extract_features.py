"""Build the COCO-256 feature layout (see uvit_features.py) from a coco_karpathy caption file + images.

Per image: the autoencoder posterior moments of the center-cropped, resized image; per caption:
the text-encoder features exactly as ``LDMTextToImagePipeline`` computes them; plus
``empty_context.npy``, a few ``run_vis`` prompts for the training image logs, and ``meta.json``.

Offline demo (32x32 digits, demo VAE, small LDMBert built from the captions)::

    python ldm_uvit/extract_features.py --data_file data/demo/digits_coco.jsonl \\
        --output_dir data/coco256_features_demo --resolution 32 --model_max_length 8 --num_val_images 97

COCO at 256 with upstream's encoders (needs a network)::

    python ldm_uvit/extract_features.py --data_file coco_karpathy_train.json --val_file coco_karpathy_val.json \\
        --output_dir data/coco256_features --resolution 256 --model_max_length 77 \\
        --vae_name_or_path runwayml/stable-diffusion-v1-5/vae \\
        --text_encoder_name_or_path runwayml/stable-diffusion-v1-5/text_encoder \\
        --tokenizer_name_or_path runwayml/stable-diffusion-v1-5/tokenizer

The output is written to ``<output_dir>.tmp-<pid>`` and moved into place at the end, so a
crash never leaves a half-written feature folder (the temporary folder is removed); an existing
``output_dir`` is only replaced with ``--overwrite``, and then as a whole (no stale files).

Bad input is skipped and counted, never fatal on its own: caption-file lines that are not UTF-8,
not JSON or lack ``image``/``caption`` (named ``file:line``), and images that are missing or do
not decode (named; the remaining images are numbered 0..N-1 without gaps).  Nothing usable is an
error before anything is written.
"""
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: E402,F401 -- CPU threads before paddle loads

import argparse
import json
import shutil

import numpy as np
import paddle
from common.arg_checks import require_non_negative, require_positive, require_vae_multiple, usage_errors
from common.checkpoint import replace_dir
from common.demo_data import DEFAULT_DEMO_ROOT, ensure_demo_data
from common.fast_ops import add_fast_ops_argument, apply_fast_ops
from common.images import ImageTransform, add_jpeg_draft_argument, load_image
from common.logging_utils import get_logger
from common.safe_data import BadSampleLog
from common.vae import load_vae
from uvit_features import EMPTY_CONTEXT_FILE, META_FILE, VIS_DIR, read_caption_file, resolve_vae_name
from uvit_text_encoder import build_demo_text_encoder, encode_text, load_text_encoder, load_tokenizer

DEMO_CAPTIONS = os.path.join(DEFAULT_DEMO_ROOT, "digits_coco.jsonl")
logger = get_logger("extract_features")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Extract COCO-256-style autoencoder moments and caption features.")
    parser.add_argument("--data_file", default=DEMO_CAPTIONS, help="coco_karpathy caption file (.jsonl or .json list) for train/; default: the bundled digits demo")
    parser.add_argument("--val_file", default=None, help="caption file for val/ (default: hold out --num_val_images from --data_file)")
    parser.add_argument("--num_val_images", type=int, default=0, help="without --val_file: the last N images of --data_file go to val/")
    parser.add_argument("--output_dir", default="data/coco256_features", help="features root to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output_dir")
    parser.add_argument("--resolution", type=int, default=256, help="images are resized (short side) and center-cropped to this")
    add_jpeg_draft_argument(parser)
    parser.add_argument("--vae_name_or_path", default="auto", help="autoencoder (common.vae.load_vae): auto | random | folder | hub id")
    parser.add_argument(
        "--text_encoder_name_or_path",
        default="demo",
        help="'demo' builds a small LDMBert + word vocabulary from the captions into <output_dir>/text_encoder; else a folder or hub id",
    )
    parser.add_argument("--tokenizer_name_or_path", default=None, help="default: same as --text_encoder_name_or_path")
    parser.add_argument("--model_max_length", type=int, default=77, help="tokens per caption (features are (model_max_length, dim))")
    parser.add_argument("--batch_size", type=int, default=64, help="images per VAE forward")
    parser.add_argument("--max_images", type=int, default=None, help="use only the first N images of --data_file (0 or unset: all)")
    parser.add_argument("--num_vis_prompts", type=int, default=10, help="distinct captions saved to run_vis/ for training image logs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo text encoder's random init and of the VAE when random")
    add_fast_ops_argument(parser)  # --fast_ops (CPU speed-ups, on by default)
    args = parser.parse_args(argv)
    with usage_errors(parser):  # exit 2 naming the flag, before any caption, image or encoder is loaded
        require_positive(args, "model_max_length", "batch_size")
        require_non_negative(args, "num_val_images", "max_images", "num_vis_prompts")
        require_vae_multiple(args.resolution, args.vae_name_or_path)  # whole latent pixels
    return args


def load_images(paths, transform, bad):
    """Decode and transform images; returns ``(kept, pixels)``: the positions in ``paths`` that
    loaded and their float32 ``(len(kept), 3, R, R)`` pixels in ``[-1, 1]`` (``None`` when none
    did).  JPEGs are decoded at ``transform.draft_size`` (:func:`common.images.load_image`; a full
    decode when it is ``None``).  A missing or undecodable image is skipped and recorded in ``bad``
    (a :class:`common.safe_data.BadSampleLog`), naming its path."""
    kept, arrays = [], []
    for j, path in enumerate(paths):
        try:
            arrays.append(transform(load_image(path, draft_size=transform.draft_size), None))
            kept.append(j)
        except Exception as e:
            bad.record(path, e)
    return kept, (np.stack(arrays) if arrays else None)


def write_split(split_dir, records, vae, transform, caption_features, batch_size, bad):
    """Write ``<i>.npy`` moments and ``<i>_<k>.npy`` caption features of the images that load.

    Images that do not load are skipped (recorded in ``bad``); the others are numbered ``0..N-1``
    in order.  Returns ``(kept_records, means)``: the records written, in file order, and their
    stacked posterior means (float32 ``(N, C, h, w)``).

    Raises:
        ValueError: no image of ``records`` loads.
    """
    os.makedirs(split_dir)
    means, kept_records = [], []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        kept, pixels = load_images([path for path, _ in chunk], transform, bad)
        if not kept:
            continue
        with paddle.no_grad():
            moments = vae.encode(paddle.to_tensor(pixels)).latent_dist.parameters.astype("float32").numpy()
        for j, pos in enumerate(kept):
            i = len(kept_records)
            captions = chunk[pos][1]
            np.save(os.path.join(split_dir, f"{i}.npy"), moments[j])
            for k, caption in enumerate(captions):
                np.save(os.path.join(split_dir, f"{i}_{k}.npy"), caption_features[caption])
            kept_records.append(chunk[pos])
        means.append(moments[:, : moments.shape[1] // 2])
        logger.info("%s: %d/%d images", os.path.basename(split_dir), min(start + batch_size, len(records)), len(records))
    if not kept_records:
        raise ValueError(f"{os.path.basename(split_dir)}: none of the {len(records)} images can be read ({bad.summary()})")
    return kept_records, np.concatenate(means)


def main(argv=None):
    args = parse_args(argv)
    # ---- inputs
    if os.path.abspath(args.data_file) == os.path.abspath(DEMO_CAPTIONS) and not os.path.isfile(args.data_file):
        ensure_demo_data()
    line_log = BadSampleLog("caption files")
    train = read_caption_file(args.data_file, line_log)
    if args.max_images:
        train = train[: args.max_images]
    if args.val_file:
        val = read_caption_file(args.val_file, line_log)
    elif args.num_val_images > 0:
        if args.num_val_images >= len(train):
            raise ValueError(f"--num_val_images {args.num_val_images} leaves no training images (only {len(train)} images)")
        train, val = train[: -args.num_val_images], train[-args.num_val_images :]
    else:
        val = []
    out_dir = os.path.abspath(args.output_dir)
    if os.path.exists(out_dir) and not args.overwrite:
        raise FileExistsError(f"--output_dir {args.output_dir!r} exists; pass --overwrite to replace it")
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        meta = extract(args, train, val, tmp, line_log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written is left behind
        raise
    replace_dir(tmp, out_dir)
    logger.info(
        "wrote %s: %s; moments %s, context %s; posterior-mean std %.4f (VAE scaling_factor %.5f, unit-variance factor would be %.4f)",
        out_dir, meta["splits"], meta["moments_shape"], meta["context_shape"], meta["latent_mean_std_unscaled"], meta["vae_scaling_factor"],
        meta["unit_variance_scale_factor"],
    )
    return meta


def extract(args, train, val, tmp, line_log):
    """Write the whole feature layout of ``train``/``val`` records into the folder ``tmp``;
    returns the ``meta.json`` dict."""
    # ---- encoders
    vae_name = resolve_vae_name(args.vae_name_or_path)
    vae, vae_description = load_vae(vae_name, seed=args.seed)
    apply_fast_ops(vae, args.fast_ops)
    all_captions = [c for _, caps in train + val for c in caps]
    if args.text_encoder_name_or_path == "demo":
        if args.tokenizer_name_or_path not in (None, "demo"):
            raise ValueError("--text_encoder_name_or_path demo builds its own tokenizer; leave --tokenizer_name_or_path unset")
        text_encoder, tokenizer = build_demo_text_encoder(all_captions, os.path.join(tmp, "text_encoder"), args.model_max_length, seed=args.seed)
        text_description = f"demo LDMBert (random init, seed {args.seed}) + word vocabulary of {len(tokenizer)} tokens, saved in <feature_path>/text_encoder"
    else:
        text_encoder = load_text_encoder(args.text_encoder_name_or_path)
        tokenizer = load_tokenizer(args.tokenizer_name_or_path or args.text_encoder_name_or_path, args.model_max_length)
        text_description = f"{type(text_encoder).__name__} from {args.text_encoder_name_or_path}"
    logger.info("text encoder: %s", text_description)
    apply_fast_ops(text_encoder, args.fast_ops)

    # ---- captions (each distinct caption is encoded once) and the empty caption
    unique = sorted(set(all_captions))
    feats = encode_text(text_encoder, tokenizer, [""] + unique)
    np.save(os.path.join(tmp, EMPTY_CONTEXT_FILE), feats[0])
    caption_features = dict(zip(unique, feats[1:]))

    # ---- images -> moments
    transform = ImageTransform(args.resolution, center_crop=True, draft=args.jpeg_draft)
    image_log = BadSampleLog("images")
    train, means = write_split(os.path.join(tmp, "train"), train, vae, transform, caption_features, args.batch_size, image_log)
    if val:
        val, _ = write_split(os.path.join(tmp, "val"), val, vae, transform, caption_features, args.batch_size, image_log)
    if image_log.count:
        logger.warning("%s", image_log.summary())
    for name, records in (("train", train), ("val", val)):
        if records:
            with open(os.path.join(tmp, f"{name}_captions.jsonl"), "w", encoding="utf-8") as f:
                for i, (path, caps) in enumerate(records):
                    f.write(json.dumps({"index": i, "image": path, "captions": caps}) + "\n")

    # ---- prompts for the training image logs
    vis = []
    for _, caps in val or train:
        for c in caps:
            if c not in vis and len(vis) < args.num_vis_prompts:
                vis.append(c)
    if vis:
        os.makedirs(os.path.join(tmp, VIS_DIR))
        for i, c in enumerate(vis):
            np.save(os.path.join(tmp, VIS_DIR, f"{i}.npy"), caption_features[c])
        with open(os.path.join(tmp, VIS_DIR, "prompts.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(vis) + "\n")

    # ---- meta (main() moves the folder into place)
    latent_std = float(means.std())
    meta = {
        "vae": vae_description,
        "vae_name_or_path": vae_name,
        "vae_scaling_factor": float(vae.config.scaling_factor),
        "text_encoder": text_description,
        "text_encoder_name_or_path": args.text_encoder_name_or_path,
        "model_max_length": args.model_max_length,
        "resolution": args.resolution,
        "moments_shape": list(np.load(os.path.join(tmp, "train", "0.npy")).shape),
        "context_shape": list(feats.shape[1:]),
        "splits": {name: {"images": len(r), "captions": sum(len(c) for _, c in r)} for name, r in (("train", train), ("val", val)) if r},
        "skipped": {"caption_records": line_log.count, "images": image_log.count},
        "latent_mean_std_unscaled": latent_std,
        "unit_variance_scale_factor": 1.0 / max(latent_std, 1e-12),
    }
    with open(os.path.join(tmp, META_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    return meta


if __name__ == "__main__":
    main()
