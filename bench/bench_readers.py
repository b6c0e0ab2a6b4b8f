"""Benchmark rows for the training data readers: images/s of ONE DataLoader worker, the old path
against the new default, and the workers each GPU needs to be fed twice as fast as it trains.

    python bench/bench_readers.py                         # all rows
    python bench/bench_readers.py --rows laion256 vae512  # some rows
    python bench/bench_readers.py --rows features_uvit --n 4 --repeats 1   # tiny smoke run
    python bench/bench_readers.py --stages                # per-stage ms of one sample instead

Each row runs in its own process (harness: bench/bench_common.py) through ``paddle.io.DataLoader``
with ``num_workers=0`` and batch 8: the reader, the collate and the tensor conversion all run in
one thread, so images/s is (a little less than) what one DataLoader worker delivers; set
``OMP_NUM_THREADS=1``.  Each row first drains the data once untimed (warm-up, page cache), then
times every variant ``--repeats`` times, interleaved, and reports the median.  Source data is built
in a temp dir per row:

* ``--n`` JPEGs of ``--source_size`` (default 1000x700, quality 90), each a 2x2 mosaic of crops
  of four demo photos (data/demo/photos, scikit-image's photographs) at their own resolution, so
  the JPEGs carry photo detail (an upscaled photo is smooth and decodes faster than real ones);
* captions: 8-20 words each, drawn with a Zipf law from 5000 made-up words (so, as with real
  captions, the tokenizer meets new words all the time), all distinct;
* ``laion256`` / ``laion512``: the JPEGs base64 in one gzip part (caption layout) read by
  ``common.laion.LaionDataset`` with ``stable_diffusion.sd_dataset.TextImageProcessor`` (resize +
  center crop + tokenize to 77 ids with a CLIP byte-level BPE tokenizer trained offline on the
  captions, as the SD demo does) and the SD ``collate_fn`` (what run_train_laion400m.sh reads);
* ``vae512``: the same part read with ``autoencoder/vae_data.py``'s ``RandomCropTransform``
  (random square crop, LANCZOS resize, flip; what run_train_vae.sh reads);
* ``folder128`` / ``folder256`` / ``folder512``: ``common.images.ImageFolderDataset`` +
  ``ImageTransform`` (random crop + flip; the DDPM scripts and, center-cropped, extract_features.py);
* ``features_dit``: class_conditional's ``FeatureDataset`` over fast-DiT's 256 px shapes
  (float32 (2, 4, 32, 32) latents = image + flip, int64 label);
* ``features_uvit``: ldm_uvit's ``CocoFeatureDataset`` over U-ViT's 256 px shapes, moments
  float32 (8, 32, 32) and 5 captions of float32 (77, 768) per image.

Variants: ``before`` is the per-sample path as it was before the reader work of issue 17 (commit
978ee92): full-size decode, every image converted (copied) to RGB again, the whole image resized
then cropped, a PIL flip, a float64-free but 4-pass normalisation, the SD collate's extra copies,
``numpy.load`` + an ``astype`` copy per feature file.  It is re-implemented below (``legacy_*``)
and swapped in for the timing only.  ``after, full decode`` is today's code with
``--no_jpeg_draft``; ``after`` is today's default (JPEG draft decode, :mod:`common.images`).

``workers per GPU for 2x`` = 2 x (images/s per H100 at 40% MFU of the matching config, from the
bench/README.md "GPU on paper" table made by bench/gpu_paper.py) / (images/s per worker, after).
Not a test: numbers depend on the machine (cores, other load).
"""
import argparse
import base64
import io
import math
import os
import statistics
import sys
import tempfile
import time

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO_ROOT)
from bench_common import add_bench_arguments, check_bench_arguments, emit, load_text, run_child  # noqa: E402

# row -> (config, img/s per H100-SXM at 40% MFU from bench/README.md "GPU on paper", file that documents
# the DataLoader workers per process (= per GPU), the pattern whose group 1 is that number).
# None: no GPU config reads this row's data.
_KNOB = r"NUM_WORKERS=\$\{NUM_WORKERS:-(\d+)\}"
TARGETS = {
    "laion256": ("SD v1 256 px", 479.0, "stable_diffusion/run_train_laion400m.sh", _KNOB),
    # not in the GPU paper table: the UNet and the frozen VAE encoder do >= 4x the 256 px FLOPs per
    # image at 512 px (convolutions scale with the pixels, attention faster), so <= 479 / 4 img/s
    "laion512": ("SD v1 512 px (<= 479 / 4)", 120.0, "stable_diffusion/run_train_laion400m.sh", _KNOB),
    "vae512": ("VAE f8/f16 256 -> 512 px", 66.0, "autoencoder/run_train_vae.sh", _KNOB),
    "folder128": ("DDPM tutorial UNet 128 px", 1061.0, "ddpm_tutorial/README.md", r"--resolution 128 [^`]*?--dataloader_num_workers (\d+)"),
    "folder256": (None, None, None, None),
    "folder512": (None, None, None, None),
    "features_dit": ("DiT-XL/2 256 px", 556.0, "class_conditional/0_run_train_dit_trainer.sh", _KNOB),
    "features_uvit": ("U-ViT-S/2-deep 256 px", 3104.0, "ldm_uvit/run_train_ldm_uvit_small_deep.sh", _KNOB),
}
DIT_S2_H100 = 10888.0  # DiT-S/2 with the same launchers and features: printed under the table


# ------------------------------------------------------------------------------------------ data
def _photos():
    from PIL import Image

    photo_dir = os.path.join(REPO_ROOT, "data", "demo", "photos")
    if not os.path.isdir(photo_dir):
        from common.demo_data import ensure_demo_data

        photo_dir = os.path.join(ensure_demo_data(), "photos")
    names = sorted(n for n in os.listdir(photo_dir) if n.lower().endswith((".png", ".jpg")))
    return [Image.open(os.path.join(photo_dir, n)).convert("RGB") for n in names]


def mosaic(photos, i, size):
    """RGB PIL image of ``size`` (width, height): a 2x2 mosaic of crops of photos ``i .. i+3``
    (mod their number), each taken at the photo's own resolution (scaled up only when the photo is
    smaller than a quarter of ``size``)."""
    from PIL import Image

    w, h = size
    out = Image.new("RGB", size)
    for q, (x0, y0) in enumerate(((0, 0), (w // 2, 0), (0, h // 2), (w // 2, h // 2))):
        tile = photos[(i + q) % len(photos)]
        tw, th = w - w // 2 if x0 else w // 2, h - h // 2 if y0 else h // 2
        if tile.width < tw or tile.height < th:
            s = max(tw / tile.width, th / tile.height)
            tile = tile.resize((math.ceil(tile.width * s), math.ceil(tile.height * s)), Image.BICUBIC)
        left, top = (tile.width - tw) * (i % 3) // 2, (tile.height - th) * (i % 2)
        out.paste(tile.crop((left, top, left + tw, top + th)), (x0, y0))
    return out


def make_jpegs(out_dir, n, size=(1000, 700), quality=90):
    """Write ``n`` RGB JPEGs ``<i>.jpg`` of ``size`` (width, height; :func:`mosaic`) into ``out_dir``; returns their paths."""
    photos = _photos()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i in range(n):
        path = os.path.join(out_dir, f"{i:05d}.jpg")
        mosaic(photos, i, size).save(path, quality=quality)
        paths.append(path)
    return paths


def make_captions(n, seed=0, vocab=5000):
    """``n`` distinct captions of 8-20 words drawn with a Zipf law (exponent 1.1) from ``vocab``
    made-up lower-case words (3-10 letters), some followed by a number, as in web alt-texts."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    p = 1.0 / np.arange(1, 27) ** 0.8
    words = ["".join(rng.choice(letters, size=int(rng.integers(3, 11)), p=p / p.sum())) for _ in range(vocab)]
    zipf = 1.0 / np.arange(1, vocab + 1) ** 1.1
    zipf /= zipf.sum()
    captions = []
    while len(captions) < n:
        k = int(rng.integers(8, 21))
        text = " ".join(words[j] + (f" {int(rng.integers(1, 2030))}" if rng.random() < 0.05 else "") for j in rng.choice(vocab, size=k, p=zipf))
        if text not in captions:
            captions.append(text)
    return captions


def _laion_part(tmp, n, size):
    from common.laion import write_laion_parts

    paths = make_jpegs(os.path.join(tmp, "jpg"), n, size)
    captions = make_captions(n)
    records = []
    for caption, p in zip(captions, paths):
        with open(p, "rb") as f:
            records.append((caption, base64.b64encode(f.read()).decode("ascii")))
    parts = write_laion_parts(records, os.path.join(tmp, "parts"), per_part_file_num=max(1, n))
    file_list = os.path.join(tmp, "bench.filelist")
    with open(file_list, "w") as f:
        f.write("\n".join(parts) + "\n")
    return file_list, captions


# ------------------------------------------------------------------ the old path (commit 978ee92)
def legacy_to_array(image):
    """The old ``pil_to_tensor_array``: RGB copy, float32 HWC, transpose, divide, subtract, astype copy."""
    import numpy as np

    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    return (arr.transpose(2, 0, 1) / 127.5 - 1.0).astype(np.float32)


def legacy_load_image(path, draft_size=None):
    """The old ``common.images.load_image``: full decode, then an RGB copy."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def legacy_decode_image_b64(text, draft_size=None):
    """The old ``common.laion.decode_image_b64``: full decode, then an RGB copy."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(text, validate=True)))
    image.load()
    return image.convert("RGB")


class LegacyImageTransform:
    """The old ``ImageTransform.__call__``: RGB copy, resize the whole image to cover, crop, PIL flip."""

    def __init__(self, transform):
        self.size, self.center_crop, self.random_flip, self.interpolation = transform.size, transform.center_crop, transform.random_flip, transform.interpolation
        self.draft_size = None

    def __call__(self, image, rng):
        from PIL import Image

        image = image.convert("RGB")
        th, tw = self.size
        scale = max(th / image.height, tw / image.width)
        new_w, new_h = max(tw, round(image.width * scale)), max(th, round(image.height * scale))
        if (new_w, new_h) != image.size:
            image = image.resize((new_w, new_h), self.interpolation)
        if self.center_crop:
            top, left = (new_h - th) // 2, (new_w - tw) // 2
        else:
            top, left = int(rng.integers(0, new_h - th + 1)), int(rng.integers(0, new_w - tw + 1))
        image = image.crop((left, top, left + tw, top + th))
        if self.random_flip and rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return legacy_to_array(image)


class LegacyRandomCropTransform:
    """The old ``vae_data.RandomCropTransform.__call__`` (RGB copy, crop, resize, PIL flip, old array)."""

    def __init__(self, transform):
        self.resolution, self.min_crop_scale, self.random_flip, self.interpolation = (
            transform.resolution, transform.min_crop_scale, transform.random_flip, transform.interpolation)
        self.draft_size = None

    def __call__(self, image, rng):
        from PIL import Image

        image = image.convert("RGB")
        short = min(image.size)
        side = short
        low = max(self.min_crop_scale * short, min(self.resolution, short))
        if low < short:
            side = int(round(rng.uniform(low, short)))
        left = int(rng.integers(0, image.width - side + 1))
        top = int(rng.integers(0, image.height - side + 1))
        image = image.crop((left, top, left + side, top + side))
        if side != self.resolution:
            image = image.resize((self.resolution, self.resolution), self.interpolation)
        if self.random_flip and rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return legacy_to_array(image)


def legacy_sd_collate(samples):
    """The old SD ``collate_fn``: ``np.stack(...).astype(...)``, a second copy of the batch."""
    import numpy as np

    return {"pixel_values": np.stack([s["pixel_values"] for s in samples]).astype(np.float32),
            "input_ids": np.stack([s["input_ids"] for s in samples]).astype(np.int64)}


def legacy_load_npy(path, what="array"):
    """The old ``common.safe_data.load_npy`` (``numpy.load``), plus the ``astype(float32)`` copy the
    feature readers made after it."""
    import numpy as np

    arr = np.load(path, allow_pickle=False)
    return arr.astype(np.float32) if arr.dtype == np.float32 else arr


class _Swap:
    """Context manager: set ``module.name = value`` for each triple, restore on exit."""

    def __init__(self, *triples):
        self.triples, self.saved = triples, []

    def __enter__(self):
        for module, name, value in self.triples:
            self.saved.append((module, name, getattr(module, name)))
            setattr(module, name, value)
        return self

    def __exit__(self, *exc):
        for module, name, value in reversed(self.saved):
            setattr(module, name, value)


# ------------------------------------------------------------------------------------------ rows
def _drain(make_loader, key):
    loader = make_loader()  # built before the clock starts (a tokenizer load is no per-sample cost)
    t0, n = time.perf_counter(), 0
    for batch in loader:
        n += batch[key].shape[0]
    return n, time.perf_counter() - t0


def _time_variants(variants, key, repeats):
    """``variants``: label -> (context manager factory, loader factory).  One untimed drain of the
    first, then ``repeats`` interleaved rounds; returns label -> median images/s and the count."""
    first = next(iter(variants.values()))
    with first[0]():
        _drain(first[1], key)  # warm-up: imports, page cache, tokenizer caches of words seen before
    rates = {label: [] for label in variants}
    count = 0
    for _ in range(repeats):
        for label, (ctx, make_loader) in variants.items():
            with ctx():
                count, sec = _drain(make_loader, key)
            rates[label].append(count / sec)
    return {label: statistics.median(r) for label, r in rates.items()}, count


def _no_swap():
    return _Swap()


def _laion(px, n, size, repeats):
    import paddle

    sys.path.insert(0, os.path.join(REPO_ROOT, "stable_diffusion"))
    import sd_dataset
    from sd_text_encoder import load_clip_tokenizer, train_clip_bpe_tokenizer

    import common.laion as laion

    tmp = tempfile.mkdtemp(prefix="bench_readers_")
    file_list, captions = _laion_part(tmp, n, size)
    tok_dir = os.path.join(tmp, "tokenizer")
    train_clip_bpe_tokenizer(captions, tok_dir, vocab_size=1024, model_max_length=77)

    def loader(draft, legacy=False):
        def make():
            tokenizer = load_clip_tokenizer(tok_dir, model_max_length=77)  # a fresh word cache every pass, as a new worker has
            proc = sd_dataset.TextImageProcessor(tokenizer, px, center_crop=True, random_flip=False, draft=draft)
            if legacy:
                proc.transform = LegacyImageTransform(proc.transform)
            ds = laion.LaionDataset(file_list, process_fn=proc, layout="caption", shuffle=False, infinite=False)
            return paddle.io.DataLoader(ds, batch_size=8, num_workers=0, collate_fn=legacy_sd_collate if legacy else sd_dataset.collate_fn)
        return make

    legacy = lambda: _Swap((laion, "decode_image_b64", legacy_decode_image_b64))  # noqa: E731
    rates, count = _time_variants({"before": (legacy, loader(False, legacy=True)), "after_full": (_no_swap, loader(False)),
                                   "after": (_no_swap, loader(True))}, "pixel_values", repeats)
    return dict(row=f"laion gz part + TextImageProcessor (resize, center crop) + CLIP BPE tokenize + SD collate, {px} px", n=count, **rates)


def _vae(px, n, size, repeats):
    import paddle

    sys.path.insert(0, os.path.join(REPO_ROOT, "autoencoder"))
    import vae_data

    import common.laion as laion

    tmp = tempfile.mkdtemp(prefix="bench_readers_")
    file_list, _ = _laion_part(tmp, n, size)

    def loader(draft, legacy=False):
        def make():
            transform = vae_data.RandomCropTransform(px, random_flip=True, draft=draft)
            proc = vae_data._LaionProcess(LegacyRandomCropTransform(transform) if legacy else transform, seed=0)
            ds = laion.LaionDataset(file_list, process_fn=proc, layout="auto", shuffle=False, infinite=False)
            return paddle.io.DataLoader(ds, batch_size=8, num_workers=0)
        return make

    legacy = lambda: _Swap((laion, "decode_image_b64", legacy_decode_image_b64))  # noqa: E731
    rates, count = _time_variants({"before": (legacy, loader(False, legacy=True)), "after_full": (_no_swap, loader(False)),
                                   "after": (_no_swap, loader(True))}, "pixel_values", repeats)
    return dict(row=f"laion gz part + vae_data.RandomCropTransform (random square crop, LANCZOS, flip), {px} px", n=count, **rates)


def _folder(px, n, size, repeats):
    import paddle

    import common.images as images

    tmp = tempfile.mkdtemp(prefix="bench_readers_")
    make_jpegs(os.path.join(tmp, "jpg"), n, size)

    def loader(draft, legacy=False):
        def make():
            transform = images.ImageTransform(px, center_crop=False, random_flip=True, draft=draft)
            ds = images.ImageFolderDataset(os.path.join(tmp, "jpg"), LegacyImageTransform(transform) if legacy else transform)
            return paddle.io.DataLoader(ds, batch_size=8, num_workers=0)
        return make

    legacy = lambda: _Swap((images, "load_image", legacy_load_image))  # noqa: E731
    rates, count = _time_variants({"before": (legacy, loader(False, legacy=True)), "after_full": (_no_swap, loader(False)),
                                   "after": (_no_swap, loader(True))}, "pixel_values", repeats)
    return dict(row=f"image folder + ImageTransform (random crop, flip), {px} px", n=count, **rates)


def _features_dit(n, size, repeats):
    import numpy as np
    import paddle

    sys.path.insert(0, os.path.join(REPO_ROOT, "class_conditional"))
    import features

    tmp = tempfile.mkdtemp(prefix="bench_readers_")
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(tmp, features.FEATURE_DIR))
    os.makedirs(os.path.join(tmp, features.LABEL_DIR))
    for i in range(n):
        np.save(os.path.join(tmp, features.FEATURE_DIR, f"{i}.npy"), rng.standard_normal((2, 4, 32, 32), dtype=np.float32))
        np.save(os.path.join(tmp, features.LABEL_DIR, f"{i}.npy"), np.array([i % 1000], np.int64))

    def make():
        return paddle.io.DataLoader(features.FeatureDataset(tmp), batch_size=8, num_workers=0)

    legacy = lambda: _Swap((features, "load_npy", legacy_load_npy))  # noqa: E731
    rates, count = _time_variants({"before": (legacy, make), "after": (_no_swap, make)}, "latents", repeats)
    return dict(row="DiT feature folder (FeatureDataset: latents 2x4x32x32 + label, one .npy each)", n=count, after_full=None, **rates)


def _features_uvit(n, size, repeats):
    import numpy as np
    import paddle

    sys.path.insert(0, os.path.join(REPO_ROOT, "ldm_uvit"))
    import uvit_features

    tmp = tempfile.mkdtemp(prefix="bench_readers_")
    split = os.path.join(tmp, "train")
    os.makedirs(split)
    rng = np.random.default_rng(0)
    for i in range(n):
        np.save(os.path.join(split, f"{i}.npy"), rng.standard_normal((8, 32, 32), dtype=np.float32))
        for k in range(5):
            np.save(os.path.join(split, f"{i}_{k}.npy"), rng.standard_normal((77, 768), dtype=np.float32))
    np.save(os.path.join(tmp, "empty_context.npy"), np.zeros((77, 768), np.float32))

    def make():
        ds = uvit_features.CocoFeatureDataset(tmp, "train", p_uncond=0.1, moments_shape=(8, 32, 32), context_shape=(77, 768))
        return paddle.io.DataLoader(ds, batch_size=8, num_workers=0)

    legacy = lambda: _Swap((uvit_features, "load_npy", legacy_load_npy))  # noqa: E731
    rates, count = _time_variants({"before": (legacy, make), "after": (_no_swap, make)}, "moments", repeats)
    return dict(row="U-ViT feature folder (CocoFeatureDataset: moments 8x32x32 + one of 5 contexts 77x768)", n=count, after_full=None, **rates)


ROWS = {
    "laion256": lambda n, size, r: _laion(256, n, size, r),
    "laion512": lambda n, size, r: _laion(512, n, size, r),
    "vae512": lambda n, size, r: _vae(512, n, size, r),
    "folder128": lambda n, size, r: _folder(128, n, size, r),
    "folder256": lambda n, size, r: _folder(256, n, size, r),
    "folder512": lambda n, size, r: _folder(512, n, size, r),
    "features_dit": _features_dit,
    "features_uvit": _features_uvit,
}


# -------------------------------------------------------------------------------------- stages
def _ms(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(1000.0 * (time.perf_counter() - t0))
    return statistics.median(times)


def stages(n_images, size, reps=15):
    """Median ms of each step of one sample's path on :func:`mosaic` JPEGs (``size``, q90), old vs new,
    at 128 / 256 / 512 px; returns ``([(stage, {px: ms})], {px: "WxH" of the draft decode})``."""
    import numpy as np
    from PIL import Image

    sys.path.insert(0, os.path.join(REPO_ROOT, "stable_diffusion"))
    from sd_dataset import collate_fn
    from sd_text_encoder import load_clip_tokenizer, train_clip_bpe_tokenizer

    from common.images import ImageTransform, apply_jpeg_draft, pil_to_tensor_array
    from common.safe_data import load_npy

    photos = _photos()
    jpegs = []
    for i in range(n_images):
        buf = io.BytesIO()
        mosaic(photos, i, size).save(buf, format="JPEG", quality=90)
        jpegs.append(buf.getvalue())
    b64 = [base64.b64encode(j).decode("ascii") for j in jpegs]
    captions = make_captions(400)
    tmp = tempfile.mkdtemp(prefix="bench_readers_")
    train_clip_bpe_tokenizer(captions, os.path.join(tmp, "tok"), vocab_size=1024, model_max_length=77)
    state = {"i": 0}

    def nxt(seq):
        state["i"] += 1
        return seq[state["i"] % len(seq)]

    def decode(data, draft_size=None):
        im = apply_jpeg_draft(Image.open(io.BytesIO(data)), draft_size)
        im.load()
        return im

    rows, draft_sizes = {}, {}
    for data in jpegs:  # warm-up: the first decodes of a process are slower
        decode(data)

    def put(name, px, ms):
        rows.setdefault(name, {})[px] = ms

    for px in (128, 256, 512):
        full = decode(jpegs[0])
        small = decode(jpegs[0], (px, px))
        put("base64 decode of the record (laion)", px, _ms(lambda: base64.b64decode(nxt(b64), validate=True), reps))
        put("JPEG decode, full size", px, _ms(lambda: decode(nxt(jpegs)), reps))
        put("JPEG decode, draft (sizes below the table)", px, _ms(lambda: decode(nxt(jpegs), (px, px)), reps))
        draft_sizes[px] = f"{small.width}x{small.height}"
        put("RGB copy (old to_rgb, now skipped for RGB)", px, _ms(lambda: full.convert("RGB"), reps))
        s = max(px / full.height, px / full.width)
        cover = (max(px, round(full.width * s)), max(px, round(full.height * s)))
        put("old: resize whole full image + crop (BICUBIC)", px, _ms(lambda: full.resize(cover, Image.BICUBIC).crop((0, 0, px, px)).load(), reps))
        put("new: resize the crop's box only, full image", px, _ms(lambda: ImageTransform(px, center_crop=True, draft=False)(full, None), reps))
        put("new: resize the crop's box only, draft image (+ to-array)", px, _ms(lambda: ImageTransform(px, center_crop=True)(small, None), reps))
        crop = full.resize(cover, Image.BICUBIC).crop((0, 0, px, px))
        put("old: PIL flip", px, _ms(lambda: crop.transpose(Image.FLIP_LEFT_RIGHT), reps))
        put("old: to-array + normalise (4 passes)", px, _ms(lambda: legacy_to_array(crop), reps))
        put("new: to-array + flip + normalise (1 copy + 2 in place)", px, _ms(lambda: pil_to_tensor_array(crop, flip=True), reps))
        batch = [{"pixel_values": pil_to_tensor_array(crop), "input_ids": np.zeros(77, np.int64)} for _ in range(8)]
        put("old: SD collate per sample (stack + astype copy)", px, _ms(lambda: legacy_sd_collate(batch), reps) / 8)
        put("new: SD collate per sample (stack only)", px, _ms(lambda: collate_fn(batch), reps) / 8)
    tok = load_clip_tokenizer(os.path.join(tmp, "tok"), model_max_length=77)
    unseen = make_captions(2000, seed=1)
    state["i"] = 0
    t = _ms(lambda: tok(nxt(unseen), padding="max_length", truncation=True, max_length=77, return_attention_mask=False), min(reps * 20, 1500))
    for px in (128, 256, 512):
        put("CLIP BPE tokenize, new captions (python CLIPTokenizer)", px, t)
    for shape, what in (((77, 768), "U-ViT context"), ((8, 32, 32), "U-ViT moments"), ((2, 4, 32, 32), "DiT latents")):
        paths = []
        for i in range(64):
            p = os.path.join(tmp, f"{what.replace(' ', '_')}_{i}.npy")
            np.save(p, np.zeros(shape, np.float32))
            paths.append(p)
        old = _ms(lambda: legacy_load_npy(nxt(paths)), reps * 10)
        mm = _ms(lambda: np.array(np.load(nxt(paths), mmap_mode="r")), reps * 10)
        new = _ms(lambda: load_npy(nxt(paths)), reps * 10)
        for px in (128, 256, 512):
            put(f"{what} {'x'.join(map(str, shape))}: old np.load + astype copy", px, old)
            put(f"{what}: np.load(mmap_mode='r') + copy", px, mm)
            put(f"{what}: new load_npy (cached header)", px, new)
    return list(rows.items()), draft_sizes


# ---------------------------------------------------------------------------------------- table
def documented_workers(name):
    """DataLoader workers per process (= per GPU) that the launcher or README of row ``name``
    documents, read from that file (None when the row has no GPU config or the file says nothing)."""
    import re

    _, _, where, pattern = TARGETS[name]
    if where is None:
        return None
    with open(os.path.join(REPO_ROOT, where), encoding="utf-8") as f:
        m = re.search(pattern, f.read(), re.S)
    return int(m.group(1)) if m else None


def workers_per_gpu(name, images_per_s):
    """``(config, H100 img/s, workers per GPU for 2x)`` for a row measured at ``images_per_s`` per
    worker; the numbers are None when no GPU config reads the row's data."""
    label, per_gpu, _, _ = TARGETS[name]
    if per_gpu is None or not images_per_s:
        return label, per_gpu, None
    return label, per_gpu, 2.0 * per_gpu / images_per_s


def _f(x, spec=".0f"):
    return "-" if x is None else format(x, spec)


def print_table(results):
    """Print the markdown table of ``[(row name, result dict)]`` (a failed row shows its error)."""
    print("| row | img/s per worker: before / after, full decode / after (default) | config (H100 img/s @ 40% MFU) "
          "| workers per GPU for 2x | documented workers per GPU | 2x fed? |")
    print("|---|---|---|---|---|---|")
    for name, r in results:
        if "error" in r:
            print(f"| {name} | failed: {r['error']} | | | | |")
            continue
        label, per_gpu, need = workers_per_gpu(name, r["after"])
        rates = f"{_f(r['before'])} / {_f(r['after_full'])} / {_f(r['after'])}"
        if need is None:
            print(f"| {r['row']} | {rates} | no GPU config at this size | - | - | - |")
            continue
        documented = documented_workers(name)
        fed = "-" if documented is None else ("yes" if documented >= need else f"no (needs {math.ceil(need)})")
        print(f"| {r['row']} | {rates} | {label} ({per_gpu:.0f}) | {need:.1f} | {_f(documented)} ({TARGETS[name][2]}) | {fed} |")
    dit = dict(results).get("features_dit")
    if dit and "error" not in dit:
        print(f"\nDiT-S/2 with the same launchers and features ({DIT_S2_H100:.0f} img/s per H100): {2 * DIT_S2_H100 / dit['after']:.1f} workers per GPU for 2x.")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--n", type=int, default=64, help="source images (or feature samples) per row")
    p.add_argument("--source_size", type=int, nargs=2, default=(1000, 700), metavar=("W", "H"), help="JPEG size")
    p.add_argument("--stages", action="store_true", help="print median ms of each step of one sample's path (old vs new) instead of the rows")
    add_bench_arguments(p)
    p.set_defaults(repeats=3)
    args = p.parse_args()
    check_bench_arguments(p, args)
    if args.n < 1:
        p.error(f"--n must be >= 1, got {args.n}")
    if args.child:
        from common.cpu_env import apply_cpu_env

        apply_cpu_env(verbose=False)
        if args.child == "stages":
            table, draft_sizes = stages(min(args.n, 16), tuple(args.source_size))
            emit({"stages": table, "draft_sizes": draft_sizes})
        else:
            emit(ROWS[args.child](args.n, tuple(args.source_size), args.repeats))
        return
    print(f"cpu: {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; {load_text()} at start")
    base = [sys.executable, __file__, "--n", str(args.n), "--source_size", *map(str, args.source_size), "--repeats", str(args.repeats)]
    if args.stages:
        r = run_child(base + ["--child", "stages"], args.timeout)
        if "error" in r:
            print(f"stages failed: {r['error']}")
            sys.exit(1)
        print("| stage (one sample) | 128 px ms | 256 px ms | 512 px ms |\n|---|---|---|---|")
        for stage, by_px in r["stages"]:
            print(f"| {stage} | " + " | ".join(f"{by_px[str(px)]:.3f}" for px in (128, 256, 512)) + " |")
        print(f"draft decode of the {args.source_size[0]}x{args.source_size[1]} JPEGs: " + ", ".join(f"{px} px -> {wh}" for px, wh in r["draft_sizes"].items()))
    else:
        results = [(name, run_child(base + ["--child", name], args.timeout)) for name in args.rows]
        print_table(results)
    print(f"{load_text()} at end; num_workers=0, batch 8, {args.n} samples per row, median of {args.repeats} interleaved passes, "
          f"JPEG {args.source_size[0]}x{args.source_size[1]} q90")


if __name__ == "__main__":
    main()
