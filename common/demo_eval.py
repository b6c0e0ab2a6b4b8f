"""The demos' sample judge: does a conditional model draw the digit it was asked for?

A classifier that never saw the project's models is trained on the scikit-learn handwritten
digits (the same 1797 images the demo data is built from), rendered the way
:mod:`common.demo_data` renders them (8x8 -> 32x32 bicubic) and then read back at 16x16
grayscale with one-pixel shifts as augmentation.  Generated images are read the same way, so the
judge scores a sample by what it looks like, not by how it was made.

    python -m common.demo_eval --dit_pipeline outputs/class_conditional_demo/dit_pipeline

prints ``digit accuracy 0.97 (78/80) ...``: every class 0-9 sampled ``--samples_per_class`` times
through ``DiTPipeline`` exactly as ``infer_demo_dit.py`` calls it.  Chance is 0.10; the judge
scores held-out real digits about 0.98 (see :func:`judge_accuracy_on_real_digits`).
"""
import argparse
import functools

import numpy as np
from PIL import Image

__all__ = ["digit_features", "digit_judge", "judge_accuracy_on_real_digits", "score_digit_images", "main"]

_SIDE = 16


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


def _dit_samples(pipeline_dir, samples_per_class, num_inference_steps, guidance_scale, seed):
    import paddle
    from ppdiffusers import DDIMScheduler, DiTPipeline

    pipe = DiTPipeline.from_pretrained(pipeline_dir)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    labels = [c for _ in range(samples_per_class) for c in range(10)]
    images = pipe(class_labels=labels, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                  generator=paddle.Generator().manual_seed(seed)).images
    return images, labels


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dit_pipeline", required=True, help="DiTPipeline folder trained on the digits (class id = digit)")
    p.add_argument("--samples_per_class", type=int, default=8)
    p.add_argument("--num_inference_steps", type=int, default=25)
    p.add_argument("--guidance_scale", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.samples_per_class < 1:
        raise ValueError(f"--samples_per_class must be >= 1, got {args.samples_per_class}")
    images, labels = _dit_samples(args.dit_pipeline, args.samples_per_class, args.num_inference_steps, args.guidance_scale, args.seed)
    acc, per_class = score_digit_images(images, labels)
    hits = int(round(acc * len(labels)))
    print(f"digit accuracy {acc:.2f} ({hits}/{len(labels)}) on {args.dit_pipeline}; chance 0.10; "
          f"per class {' '.join(f'{c}:{a:.2f}' for c, a in per_class.items())}")
    return acc


if __name__ == "__main__":
    main()
