"""The demos' sample judges: does a conditional model draw the digit it was asked for, and does
the unconditional face model draw faces?

A classifier that never saw the project's models is trained on the scikit-learn handwritten
digits (the same 1797 images the demo data is built from), rendered the way
:mod:`common.demo_data` renders them (8x8 -> 32x32 bicubic) and then read back at 16x16
grayscale with one-pixel shifts as augmentation.  Generated images are read the same way, so the
judge scores a sample by what it looks like, not by how it was made.

    python -m common.demo_eval --dit_pipeline outputs/class_conditional_demo/dit_pipeline

prints ``digit accuracy 0.97 (78/80) ...``: every class 0-9 sampled ``--samples_per_class`` times
through ``DiTPipeline`` exactly as ``infer_demo_dit.py`` calls it.  Chance is 0.10; the judge
scores held-out real digits about 0.99 (see :func:`judge_accuracy_on_real_digits`).

    python -m common.demo_eval --txt2img_pipeline outputs/sd_demo

does the same for a text-to-image pipeline folder trained on the digit captions: the class named
in its ``model_index.json`` (``StableDiffusionPipeline``, ``LDMTextToImagePipeline``, ...) is
loaded and called the standard way, ``pipe(prompts, num_inference_steps=, guidance_scale=,
generator=)``, with the prompts ``"a handwritten digit zero"`` ... ``"a handwritten digit nine"``
(:data:`DIGIT_PROMPTS`), each ``--samples_per_class`` times.

    python -m common.demo_eval --ddpm_pipeline outputs/ddpm_faces

prints ``face rate 0.19 (12/64) ...``: the fraction of ``DDPMPipeline`` samples in which
scikit-image's LBP frontal-face cascade (``skimage.data.lbp_frontal_face_cascade_filename``, a
detector trained elsewhere) finds a face, each sample upscaled to 96x96.  It finds one in 0.84 of
the 100 bundled real 25x25 faces (:func:`face_rate_on_real_faces`: the ceiling at this size; 0.82
after the 32 px resize the main job trains at), in none of the 100 background crops scikit-image
ships beside them, of 50 noise images or of 50 smooth random blobs.
"""
import argparse
import functools

import numpy as np
from PIL import Image

from common.fast_ops import add_fast_ops_argument, apply_fast_ops

__all__ = ["DIGIT_PROMPTS", "digit_features", "digit_judge", "judge_accuracy_on_real_digits", "score_digit_images", "face_rate",
           "face_rate_on_real_faces", "txt2img_digit_samples", "main"]

_SIDE = 16
# the prompt of digit c is DIGIT_PROMPTS[c]; the demo captions (common.demo_data) use the same words
DIGIT_PROMPTS = tuple(f"a handwritten digit {w}" for w in
                      ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))


def digit_features(images):
    """Images -> judge features: float32 ``(N, 256)``, each a 16x16 grayscale image in [0, 1]
    normalised to unit maximum (so brightness and contrast do not matter).

    Args:
        images: PIL images of any size/mode, or uint8 arrays ``(H, W)``/``(H, W, 3)`` in [0, 255].
    """
    feats = []
    for im in images:
        if not isinstance(im, Image.Image):
            im = Image.fromarray(np.asarray(im).astype(np.uint8))
        g = np.asarray(im.convert("L").resize((_SIDE, _SIDE), Image.BILINEAR), dtype=np.float32) / 255.0
        g = g - g.min()
        feats.append((g / max(float(g.max()), 1e-6)).reshape(-1))
    return np.stack(feats).astype(np.float32)


def _rendered_digits(shift_augment):
    """The sklearn digits rendered as the demo data renders them; with ``shift_augment`` also every
    one-pixel (of 32) shift. Returns ``(features, labels)``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    base = [Image.fromarray((img / 16.0 * 255).round().astype(np.uint8)).resize((32, 32), Image.BICUBIC) for img in digits.images]
    labels = np.asarray(digits.target, dtype=np.int64)
    shifts = [(0, 0)] + ([(dx, dy) for dx in (-2, 0, 2) for dy in (-2, 0, 2) if (dx, dy) != (0, 0)] if shift_augment else [])
    feats, ys = [], []
    for dx, dy in shifts:
        moved = [Image.fromarray(np.roll(np.roll(np.asarray(im), dy, axis=0), dx, axis=1)) for im in base]
        feats.append(digit_features(moved))
        ys.append(labels)
    return np.concatenate(feats), np.concatenate(ys)


def _fit(features, labels):
    from sklearn.svm import SVC

    return SVC(C=10.0, gamma="scale").fit(features, labels)


@functools.lru_cache(maxsize=1)
def digit_judge():
    """The fitted judge (scikit-learn ``SVC``, RBF kernel) on all 1797 digits with shift
    augmentation; ``judge.predict(digit_features(images))`` -> int64 labels. Cached per process."""
    return _fit(*_rendered_digits(shift_augment=True))


def judge_accuracy_on_real_digits(seed=0):
    """Accuracy of a judge fitted on 80% of the digits (with augmentation) on the other 20%
    (unshifted, as the demo data holds them): the judge's own ceiling, about 0.98."""
    x, y = _rendered_digits(shift_augment=False)
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(y))
    test, train = order[: len(y) // 5], order[len(y) // 5:]
    xa, ya = _rendered_digits(shift_augment=True)
    n = len(y)
    keep = np.concatenate([train + k * n for k in range(len(ya) // n)])
    judge = _fit(xa[keep], ya[keep])
    return float((judge.predict(x[test]) == y[test]).mean())


def score_digit_images(images, labels):
    """Fraction of ``images`` the judge reads as their ``labels`` (ints 0-9), and the per-class
    accuracies ``{label: accuracy}``.

    Raises:
        ValueError: ``images`` and ``labels`` differ in length, or are empty.
    """
    if len(images) != len(labels) or not len(images):
        raise ValueError(f"need as many labels as images (got {len(images)} images, {len(labels)} labels)")
    pred = digit_judge().predict(digit_features(images))
    labels = np.asarray(labels)
    per_class = {int(c): float((pred[labels == c] == c).mean()) for c in np.unique(labels)}
    return float((pred == labels).mean()), per_class


@functools.lru_cache(maxsize=1)
def _face_detector():
    from skimage import data
    from skimage.feature import Cascade

    return Cascade(data.lbp_frontal_face_cascade_filename())


def face_rate(images, side=96):
    """Fraction of ``images`` (PIL images or uint8 arrays, any size, RGB or gray) in which the LBP
    frontal-face cascade finds a face after a bicubic resize to ``side`` x ``side`` (scale steps
    1.1, faces from 40 px to the whole image).

    Raises:
        ValueError: no images.
    """
    if not len(images):
        raise ValueError("face_rate needs at least one image")
    detector, hits = _face_detector(), 0
    for im in images:
        if not isinstance(im, Image.Image):
            im = Image.fromarray(np.asarray(im).astype(np.uint8))
        g = np.asarray(im.convert("L").resize((side, side), Image.BICUBIC), dtype=np.float64) / 255.0
        hits += bool(detector.detect_multi_scale(img=g, scale_factor=1.1, step_ratio=1, min_size=(40, 40), max_size=(side, side)))
    return hits / len(images)


def face_rate_on_real_faces(folder, limit=100):
    """:func:`face_rate` of the first ``limit`` images in ``folder`` (the judge's ceiling on real data)."""
    import os

    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".png", ".jpg", ".jpeg")))[:limit]
    return face_rate([Image.open(os.path.join(folder, n)) for n in names])


def _ddpm_samples(pipeline_dir, num_images, num_inference_steps, seed, fast_ops=True, scheduler="ddim"):
    import paddle
    from ppdiffusers import DDPMPipeline

    from common.diffusion_utils import ddpm_sampling_scheduler

    pipe = DDPMPipeline.from_pretrained(pipeline_dir)
    apply_fast_ops(pipe, fast_ops)
    if scheduler == "ddpm" or num_inference_steps < pipe.scheduler.config.num_train_timesteps:
        pipe.scheduler = ddpm_sampling_scheduler(pipe.scheduler, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=num_images, num_inference_steps=num_inference_steps, generator=paddle.Generator().manual_seed(seed)).images


def _dit_samples(pipeline_dir, samples_per_class, num_inference_steps, guidance_scale, seed, fast_ops=True):
    import paddle
    from ppdiffusers import DDIMScheduler, DiTPipeline

    pipe = DiTPipeline.from_pretrained(pipeline_dir)
    apply_fast_ops(pipe, fast_ops)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    labels = [c for _ in range(samples_per_class) for c in range(10)]
    images = pipe(class_labels=labels, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                  generator=paddle.Generator().manual_seed(seed)).images
    return images, labels


def txt2img_digit_samples(pipeline_dir, samples_per_class=8, num_inference_steps=25, guidance_scale=4.0, seed=0, fast_ops=True):
    """Sample every digit prompt ``samples_per_class`` times from a text-to-image pipeline folder.

    The pipeline class is the one ``<pipeline_dir>/model_index.json`` names (``_class_name``,
    looked up in ``ppdiffusers``), loaded with ``from_pretrained`` and its saved scheduler, and
    called once as ``pipe(prompts, num_inference_steps=..., guidance_scale=..., generator=...)``
    with ``prompts = [DIGIT_PROMPTS[c] for _ in range(samples_per_class) for c in range(10)]`` and
    one ``paddle.Generator`` seeded with ``seed``.  ``fast_ops``: on CPU, the faster Paddle paths of
    :func:`common.fast_ops.apply_fast_ops` (same numbers up to float rounding).

    Returns:
        ``(images, labels)``: ``10 * samples_per_class`` PIL images and their digits (ints 0-9).

    Raises:
        FileNotFoundError: ``pipeline_dir`` has no ``model_index.json``.
        ValueError: ``model_index.json`` names no class, or one ``ppdiffusers`` does not have.
    """
    import json
    import os

    index = os.path.join(pipeline_dir, "model_index.json")
    if not os.path.isfile(index):
        raise FileNotFoundError(f"--txt2img_pipeline {pipeline_dir!r} has no model_index.json (not a saved pipeline folder)")
    with open(index) as f:
        class_name = json.load(f).get("_class_name")
    import paddle
    import ppdiffusers

    cls = getattr(ppdiffusers, str(class_name), None) if class_name else None
    if cls is None:
        raise ValueError(f"--txt2img_pipeline {pipeline_dir!r}: model_index.json names the pipeline class {class_name!r}, "
                         "which ppdiffusers does not have (expected e.g. StableDiffusionPipeline or LDMTextToImagePipeline)")
    pipe = cls.from_pretrained(pipeline_dir)
    if isinstance(pipe, ppdiffusers.DiffusionPipeline):  # a stand-in class (the tests' digit drawer) has no layers to speed up
        apply_fast_ops(pipe, fast_ops)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    labels = [c for _ in range(samples_per_class) for c in range(10)]
    out = pipe([DIGIT_PROMPTS[c] for c in labels], num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
               generator=paddle.Generator().manual_seed(seed))
    return list(out.images), labels


def _save_judged_grid(images, path, nrow):
    """``--save_grid``: the judged ``images`` as one PNG at ``path`` (2x nearest upscale); nothing when ``path`` is None."""
    if path:
        from common.images import save_grid

        print(f"grid of the judged samples: {save_grid(images, path, nrow=nrow, upscale=2)}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--dit_pipeline", help="DiTPipeline folder trained on the digits (class id = digit): digit accuracy")
    which.add_argument("--ddpm_pipeline", help="DDPMPipeline folder trained on the faces: face rate")
    which.add_argument("--txt2img_pipeline", help="text-to-image pipeline folder (class from its model_index.json) trained on "
                                                  "the digit captions, prompted 'a handwritten digit <word>': digit accuracy")
    p.add_argument("--samples_per_class", type=int, default=8, help="--dit_pipeline / --txt2img_pipeline: samples of every digit")
    p.add_argument("--num_images", type=int, default=64, help="--ddpm_pipeline: samples")
    p.add_argument("--num_inference_steps", type=int, default=25)
    p.add_argument("--scheduler", default="ddim", choices=["ddim", "ddpm"], help="--ddpm_pipeline: sample with DDIM or with ancestral DDPM steps "
                   "(common.diffusion_utils.ddpm_sampling_scheduler); use what the launcher's grid uses")
    p.add_argument("--guidance_scale", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save_grid", default=None, help="also save the judged samples as one grid PNG here (rows of --samples_per_class "
                                                     "for the digits, sqrt(--num_images) per row for the faces), so the grid shown is the one scored")
    add_fast_ops_argument(p)  # --fast_ops (CPU speed-ups, on by default)
    args = p.parse_args(argv)
    if args.samples_per_class < 1 or args.num_images < 1 or args.num_inference_steps < 1:
        p.error("--samples_per_class, --num_images and --num_inference_steps must be >= 1")
    if args.ddpm_pipeline:
        images = _ddpm_samples(args.ddpm_pipeline, args.num_images, args.num_inference_steps, args.seed, args.fast_ops, args.scheduler)
        rate = face_rate(images)
        _save_judged_grid(images, args.save_grid, nrow=max(1, int(round(len(images) ** 0.5))))
        print(f"face rate {rate:.2f} ({int(round(rate * len(images)))}/{len(images)}) on {args.ddpm_pipeline}; "
              f"the real training faces score 0.84, noise 0")
        return rate
    if args.txt2img_pipeline:
        folder = args.txt2img_pipeline
        images, labels = txt2img_digit_samples(folder, args.samples_per_class, args.num_inference_steps, args.guidance_scale, args.seed, args.fast_ops)
    else:
        folder = args.dit_pipeline
        images, labels = _dit_samples(folder, args.samples_per_class, args.num_inference_steps, args.guidance_scale, args.seed, args.fast_ops)
    acc, per_class = score_digit_images(images, labels)
    _save_judged_grid(images, args.save_grid, nrow=10)
    hits = int(round(acc * len(labels)))
    print(f"digit accuracy {acc:.2f} ({hits}/{len(labels)}) on {folder}; chance 0.10; "
          f"per class {' '.join(f'{c}:{a:.2f}' for c, a in per_class.items())}")
    return acc


if __name__ == "__main__":
    main()
