"""Benchmark rows for the training data readers: images/s of ONE DataLoader worker, and workers per 8-GPU node.

    python bench/bench_readers.py                       # all rows
    python bench/bench_readers.py --rows laion256       # one row
    python bench/bench_readers.py --rows features256 --n 4   # tiny smoke run

Each row runs in its own process (harness: bench/bench_common.py) with ``num_workers=0`` (the
reader runs in the main process, so images/s is what one DataLoader worker delivers; set
``OMP_NUM_THREADS=1`` for one thread).  Source data is built in a temp dir per row:

* ``--n`` JPEGs of ``--source_size`` (default 1000x700, quality 90), the demo photos
  (data/demo/photos, 512x512 scikit-image photos) upscaled bicubically;
* ``laion*``: those JPEGs base64 in one gzip part (caption layout) read by
  ``common.laion.LaionDataset`` with ``stable_diffusion.sd_dataset.TextImageProcessor``
  (resize + center crop + tokenize to 77 ids with a CLIP byte-level BPE tokenizer trained
  offline on the captions, as the SD demo does: ``sd_text_encoder.train_clip_bpe_tokenizer``);
* ``folder*``: ``common.images.ImageFolderDataset`` + ``ImageTransform`` (random crop + flip);
* ``features256``: ``ldm_uvit.uvit_features.CocoFeatureDataset`` over U-ViT's 256 px shapes,
  moments float32 (8, 32, 32) and 5 captions of float32 (77, 768) per image.

Image rows are timed twice: full decode ("before") and JPEG draft decode at the output size
("after", ``ImageTransform(draft=True)``, :func:`common.images.apply_jpeg_draft`).
``workers per node`` = 8 x (images/s per H100 at 40% MFU of the matching config, from the
bench/README.md "GPU on paper" table made by bench/gpu_paper.py) / (best images/s per worker).
Not a test: numbers depend on the machine (cores, other load).
"""
import argparse
import math
import os
import sys
import tempfile
import time

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO_ROOT)
from bench_common import add_bench_arguments, check_bench_arguments, emit, load_text, run_child  # noqa: E402

# img/s per H100-SXM at 40% MFU (bench/README.md "GPU on paper", python bench/gpu_paper.py) and the
# documented DataLoader workers per process of the matching launcher (NUM_WORKERS default / README).
TARGETS = {
    "laion": ("SD v1 UNet 256 px", 479.0, "4 (stable_diffusion/run_train_laion400m.sh)"),
    "folder256": ("DDPM tutorial UNet 128 px", 1061.0, "0 (ddpm_tutorial/run_train_ddpm.sh)"),
    "folder512": ("VAE 256 -> 512 px", 66.0, "8 (autoencoder/run_train_vae.sh, README)"),
    "features": ("U-ViT-S/2-deep 256 px", 3104.0, "1 (ldm_uvit/run_train_ldm_uvit_small_deep.sh)"),
}
CAPTIONS = ["a photo of an astronaut in a white suit", "a brick wall in the sun", "a man with a camera on a tripod",
            "cells under a microscope", "an orange cat looking at the camera"]


def _photos():
    from PIL import Image

    photo_dir = os.path.join(REPO_ROOT, "data", "demo", "photos")
    if not os.path.isdir(photo_dir):
        from common.demo_data import ensure_demo_data

        photo_dir = os.path.join(ensure_demo_data(), "photos")
    names = sorted(n for n in os.listdir(photo_dir) if n.lower().endswith((".png", ".jpg")))
    return [Image.open(os.path.join(photo_dir, n)).convert("RGB") for n in names]


def make_jpegs(out_dir, n, size=(1000, 700), quality=90):
    """Write ``n`` RGB JPEGs ``<i>.jpg`` of ``size`` (width, height) into ``out_dir``; returns their paths."""
    from PIL import Image

    photos = _photos()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i in range(n):
        path = os.path.join(out_dir, f"{i:05d}.jpg")
        photos[i % len(photos)].resize(size, Image.BICUBIC).save(path, quality=quality)
        paths.append(path)
    return paths


def _drain(loader, key):
    t0, n = time.time(), 0
    for batch in loader:
        n += batch[key].shape[0]
    return n, time.time() - t0


def _laion(px, n, size):
    import paddle

    sys.path.insert(0, os.path.join(REPO_ROOT, "stable_diffusion"))
    from sd_dataset import TextImageProcessor
    from sd_text_encoder import load_clip_tokenizer, train_clip_bpe_tokenizer

    from common.laion import LaionDataset, write_laion_parts

    tmp = tempfile.mkdtemp(prefix="bench_readers_")
    paths = make_jpegs(os.path.join(tmp, "jpg"), n, size)
    records = []
    for i, p in enumerate(paths):
        with open(p, "rb") as f:
            import base64

            records.append((CAPTIONS[i % len(CAPTIONS)], base64.b64encode(f.read()).decode("ascii")))
    parts = write_laion_parts(records, os.path.join(tmp, "parts"), per_part_file_num=max(1, n))
    file_list = os.path.join(tmp, "bench.filelist")
    with open(file_list, "w") as f:
        f.write("\n".join(parts) + "\n")
    tok_dir = os.path.join(tmp, "tokenizer")
    train_clip_bpe_tokenizer(CAPTIONS * 20, tok_dir, vocab_size=1024, model_max_length=77)
    tokenizer = load_clip_tokenizer(tok_dir, model_max_length=77)
    out = {}
    for label, draft in (("before", False), ("after", True)):
        proc = TextImageProcessor(tokenizer, px, center_crop=True, random_flip=False)
        proc.transform.draft = draft
        ds = LaionDataset(file_list, process_fn=proc, layout="caption", shuffle=False, infinite=False)
        count, sec = _drain(paddle.io.DataLoader(ds, batch_size=8, num_workers=0), "pixel_values")
        out[label] = count / sec
    return dict(row=f"laion gz part (caption layout) + TextImageProcessor + CLIP BPE tokenize, {px} px", target="laion",
                images_per_s_before=out["before"], images_per_s_after=out["after"], n=count)


def _folder(px, n, size):
    import paddle

    from common.images import ImageFolderDataset, ImageTransform

    tmp = tempfile.mkdtemp(prefix="bench_readers_")
    make_jpegs(os.path.join(tmp, "jpg"), n, size)
    out = {}
    for label, draft in (("before", False), ("after", True)):
        ds = ImageFolderDataset(os.path.join(tmp, "jpg"), ImageTransform(px, center_crop=False, random_flip=True, draft=draft))
        count, sec = _drain(paddle.io.DataLoader(ds, batch_size=8, num_workers=0), "pixel_values")
        out[label] = count / sec
    return dict(row=f"image folder + ImageTransform (random crop, flip), {px} px", target=f"folder{px}",
                images_per_s_before=out["before"], images_per_s_after=out["after"], n=count)


def row_features256(n=64, size=None):
    import numpy as np
    import paddle

    sys.path.insert(0, os.path.join(REPO_ROOT, "ldm_uvit"))
    from uvit_features import CocoFeatureDataset

    tmp = tempfile.mkdtemp(prefix="bench_readers_")
    split = os.path.join(tmp, "train")
    os.makedirs(split)
    rng = np.random.default_rng(0)
    for i in range(n):
        np.save(os.path.join(split, f"{i}.npy"), rng.standard_normal((8, 32, 32), dtype=np.float32))
        for k in range(5):
            np.save(os.path.join(split, f"{i}_{k}.npy"), rng.standard_normal((77, 768), dtype=np.float32))
    np.save(os.path.join(tmp, "empty_context.npy"), np.zeros((77, 768), np.float32))
    ds = CocoFeatureDataset(tmp, "train", p_uncond=0.1, moments_shape=(8, 32, 32), context_shape=(77, 768))
    count, sec = _drain(paddle.io.DataLoader(ds, batch_size=8, num_workers=0), "moments")
    ips = count / sec
    return dict(row="U-ViT feature folder (CocoFeatureDataset, moments 8x32x32 + context 77x768)", target="features",
                images_per_s_before=ips, images_per_s_after=ips, n=count)


ROWS = {
    "laion256": lambda n, size: _laion(256, n, size),
    "laion512": lambda n, size: _laion(512, n, size),
    "folder256": lambda n, size: _folder(256, n, size),
    "folder512": lambda n, size: _folder(512, n, size),
    "features256": row_features256,
}


def workers_needed(target_key, images_per_s, gpus=8):
    """``(config label, workers per node, documented --num_workers text)`` for a row result."""
    label, per_gpu, documented = TARGETS[target_key]
    return label, gpus * per_gpu / images_per_s if images_per_s else float("inf"), documented


def print_table(results):
    print("| reader | img/s per worker, full decode | img/s per worker, draft decode | matching config (H100 img/s @ 40% MFU) "
          "| workers per 8-GPU node | documented --num_workers per GPU | 2x fits? |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results:
        if "error" in r:
            print(f"| {name} | failed: {r['error']} | | | | | |")
            continue
        best = max(r["images_per_s_before"], r["images_per_s_after"])
        label, need, documented = workers_needed(r["target"], best)
        per_gpu = need / 8
        doc_n = int(documented.split()[0])
        fits = "yes" if 2 * per_gpu <= max(doc_n, 0) else f"no (needs {math.ceil(2 * per_gpu)} per GPU)"
        print(f"| {r['row']} | {r['images_per_s_before']:.1f} | {r['images_per_s_after']:.1f} | {label} ({TARGETS[r['target']][1]:.0f}) "
              f"| {need:.1f} ({per_gpu:.2f} per GPU) | {documented} | {fits} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--n", type=int, default=64, help="source images (or feature samples) per row")
    p.add_argument("--source_size", type=int, nargs=2, default=(1000, 700), metavar=("W", "H"), help="JPEG size")
    add_bench_arguments(p)
    args = p.parse_args()
    check_bench_arguments(p, args)
    if args.n < 1:
        p.error(f"--n must be >= 1, got {args.n}")
    if args.child:
        from common.cpu_env import apply_cpu_env

        apply_cpu_env(verbose=False)
        emit(ROWS[args.child](args.n, tuple(args.source_size)))
        return
    print(f"cpu: {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; {load_text()} at start")
    results = []
    for name in args.rows:
        cmd = [sys.executable, __file__, "--child", name, "--n", str(args.n), "--source_size", *map(str, args.source_size)]
        results.append((name, run_child(cmd, args.timeout)))
    print_table(results)
    print(f"{load_text()} at end; num_workers=0, batch 8, {args.n} samples per row, JPEG {args.source_size[0]}x{args.source_size[1]} q90")


if __name__ == "__main__":
    main()
