"""Image-folder dataset, image decoding, the usual training transforms, and image grids.

Pixels inside the training code are float32 CHW in ``[-1, 1]``; PIL images are RGB uint8
(:func:`to_rgb` converts any PIL mode, scaling 16-bit images to 8 bits).
"""
import math
import os

import numpy as np
import paddle.io
from PIL import Image

from common.safe_data import SkippingDataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "to_rgb",
    "apply_jpeg_draft",
    "add_jpeg_draft_argument",
    "load_image",
    "ImageTransform",
    "ImageFolderDataset",
    "ResumableBatchSampler",
    "pil_to_tensor_array",
    "array_to_pil",
    "make_grid",
    "save_grid",
    "sample_grid_path",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm")
# files that may sit next to images (captions, metadata) and are not images
_SIDE_FILE_EXTENSIONS = (".txt", ".json", ".jsonl", ".csv", ".md", ".npy", ".npz", ".pkl", ".yaml", ".yml")


_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(image):
    """Any PIL image -> RGB uint8 PIL image of the same size.

    An image that is already RGB is returned as it is (no copy: the readers never modify an image
    in place).  16-bit grayscale (modes ``I;16*``, as Pillow opens 16-bit PNG/TIFF files, and 32-bit ``I``,
    read as 16-bit values and clipped to ``[0, 65535]``) is scaled by ``255 / 65535`` (rounded);
    PIL's own ``convert("RGB")`` clips those values at 255, which turns a 16-bit image almost
    white.  Every other mode goes through ``convert("RGB")`` (alpha is dropped).
    """
    if image.mode in _16BIT_MODES:
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def apply_jpeg_draft(image, draft_size):
    """Ask a just-opened (not yet loaded) JPEG to decode at a reduced scale.

    ``draft_size`` is ``(width, height)`` or ``None``.  For a JPEG, PIL's ``Image.draft("RGB",
    draft_size)`` makes libjpeg decode at scale 1/1, 1/2, 1/4 or 1/8 (its DCT scaling), the
    largest reduction that keeps both sides ``>=`` the requested ones (Pillow ``JpegImageFile.draft``),
    so a resize to cover ``draft_size`` afterwards still only downsamples (or keeps) the image.
    Non-JPEG images and ``None`` are left alone.  Returns ``image``.
    """
    if draft_size is not None and image.format == "JPEG":
        image.draft("RGB", (int(draft_size[0]), int(draft_size[1])))
    return image


def load_image(path, draft_size=None):
    """Decode the image file ``path`` completely into an RGB uint8 PIL image (:func:`to_rgb`).

    ``draft_size``: optional ``(width, height)`` the caller will resize to (cover + crop); a JPEG
    is then decoded at the smallest power-of-two reduction keeping both sides ``>=`` it
    (:func:`apply_jpeg_draft`), so the image returned can be up to 8x smaller per side than the
    file.  ``None`` (default): full-size decode.

    Raises:
        ValueError: the file is missing, empty, truncated or not an image (``path`` named).
    """
    try:
        with Image.open(path) as im:
            apply_jpeg_draft(im, draft_size)
            im.load()  # the whole file: catches truncated ones
            return to_rgb(im)
    except Exception as e:  # FileNotFoundError, PIL.UnidentifiedImageError, OSError (truncated), ...
        raise ValueError(f"cannot decode image {path!r}: {type(e).__name__}: {e}") from None


def pil_to_tensor_array(image, flip=False):
    """PIL image (H, W) of any mode (:func:`to_rgb`) -> float32 numpy array ``(3, H, W)`` in ``[-1, 1]``
    (``value / 127.5 - 1``, C-contiguous), mirrored left-right when ``flip``.

    One pass over the uint8 pixels (transpose, flip and the cast in one copy), then two in-place
    float32 operations: the same values as ``asarray(float32).transpose(2, 0, 1) / 127.5 - 1``.
    """
    arr = np.asarray(to_rgb(image))  # (H, W, 3) uint8
    if flip:
        arr = arr[:, ::-1]
    out = arr.transpose(2, 0, 1).astype(np.float32, order="C")
    out /= 127.5
    out -= 1.0
    return out


def array_to_pil(array):
    """``(3, H, W)`` or ``(H, W, 3)`` array/tensor in ``[-1, 1]`` -> RGB PIL image (values clipped)."""
    arr = np.asarray(array.numpy() if hasattr(array, "numpy") else array, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    arr = np.clip((arr + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def add_jpeg_draft_argument(parser):
    """Add ``--jpeg_draft`` (default True) and its opt-out ``--no_jpeg_draft`` to an argparse parser.

    The same spelling as paddlenlp's ``PdArgumentParser`` gives a ``bool`` field that defaults to
    True (``--jpeg_draft False`` / ``--jpeg_draft`` / ``--no_jpeg_draft``), so every script of the
    repository takes the flag alike.  ``args.jpeg_draft`` is a bool; pass it as ``draft=`` to
    :class:`ImageTransform` (or ``vae_data.RandomCropTransform``).  Returns ``parser``.
    """

    def to_bool(text):
        value = str(text).strip().lower()
        if value in ("1", "true", "yes", "y", "t", "on"):
            return True
        if value in ("0", "false", "no", "n", "f", "off"):
            return False
        raise ValueError(f"not a boolean: {text!r}")

    to_bool.__name__ = "bool"  # argparse names the type in its error: "invalid bool value: 'maybe'"
    parser.add_argument("--jpeg_draft", type=to_bool, nargs="?", const=True, default=True,
                        help="decode JPEGs at the smallest power-of-two reduction that still covers the training resolution "
                             "(libjpeg DCT scaling; the resize after it gets up to 10x cheaper; pixels differ from a full decode by 1-2 8-bit levels on average); "
                             "--no_jpeg_draft or --jpeg_draft False: full-size decode")
    parser.add_argument("--no_jpeg_draft", action="store_false", dest="jpeg_draft", help="full-size JPEG decode (see --jpeg_draft)")
    return parser


class ImageTransform:
    """Resize the short side to ``resolution``, crop to a square, optionally flip, scale to [-1, 1].

    Args:
        resolution: output side in pixels (int) or ``(height, width)``.
        center_crop: center crop if True, random crop otherwise.
        random_flip: horizontal flip with probability 0.5.
        interpolation: PIL resampling filter for the resize.
        draft: if True (default), :attr:`draft_size` is the output ``(width, height)`` and the
            readers that honour it (:class:`ImageFolderDataset`, :class:`common.laion.LaionDataset`,
            the training scripts' own readers) decode JPEGs at a reduced scale
            (:func:`apply_jpeg_draft`); the pixels then differ slightly from a full decode (mean
            absolute difference measured in tests/test_readers.py and bench/README.md "Readers").
            False: full-size decode (the scripts' ``--no_jpeg_draft``).
        reducing_gap: passed to ``PIL.Image.resize``: a source more than ``2 * reducing_gap``
            times the output is first box-reduced by an integer factor (``Image.reduce``), keeping
            the final filter at least ``reducing_gap`` times the output.  3.0 (default) changes
            nothing below a 6x reduction and, above it, stays within a fraction of an 8-bit
            level of the plain resize on average; ``None``: plain resize.

    Only the region of the resized image that the crop keeps is computed (``Image.resize`` with a
    ``box``): the same pixels as resizing the whole image and cropping up to rounding (a level or
    two on well under 1% of the pixels, tests/test_readers.py), in 20-30% less time.

    Call with ``(image, rng)`` where ``rng`` is a ``numpy.random.Generator`` (so that a sample's
    augmentation can be reproduced from a seed; it may be ``None`` with ``center_crop=True`` and
    ``random_flip=False``); returns a float32 numpy array ``(3, H, W)`` in ``[-1, 1]``.
    """

    def __init__(self, resolution, center_crop=False, random_flip=False, interpolation=Image.BICUBIC, draft=True, reducing_gap=3.0):
        self.size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.interpolation = interpolation
        self.draft = draft
        self.reducing_gap = reducing_gap

    @property
    def draft_size(self):
        """``(width, height)`` to draft-decode JPEGs at, or ``None`` (``draft=False``)."""
        return (self.size[1], self.size[0]) if self.draft else None

    def __call__(self, image, rng):
        image = to_rgb(image)
        th, tw = self.size
        scale = max(th / image.height, tw / image.width)
        new_w, new_h = max(tw, round(image.width * scale)), max(th, round(image.height * scale))
        if self.center_crop:
            top, left = (new_h - th) // 2, (new_w - tw) // 2
        else:
            top, left = int(rng.integers(0, new_h - th + 1)), int(rng.integers(0, new_w - tw + 1))
        if (new_w, new_h) == image.size:
            image = image.crop((left, top, left + tw, top + th))
        else:  # the crop's preimage in the source, resized straight to the output
            sx, sy = image.width / new_w, image.height / new_h
            box = (left * sx, top * sy, (left + tw) * sx, (top + th) * sy)
            image = image.resize((tw, th), self.interpolation, box=box, reducing_gap=self.reducing_gap)
        flip = bool(self.random_flip and rng.random() < 0.5)
        return pil_to_tensor_array(image, flip=flip)


def list_images(root):
    """Sorted image paths under ``root`` (recursive).

    Side files (``.txt``, ``.json``, ``.jsonl``, ...) and hidden files are ignored; any other
    file is opened (header only) and must be an image.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        ValueError: a file is not a readable image (named in the message), or no image found.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist or is not a directory")
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.lower().endswith(_SIDE_FILE_EXTENSIONS):
                continue
            path = os.path.join(dirpath, name)
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                try:
                    with Image.open(path) as im:
                        im.verify()
                except Exception:
                    raise ValueError(f"{path!r} in image folder {root!r} is not an image file") from None
            paths.append(path)
    if not paths:
        raise ValueError(f"image folder {root!r} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
    return paths


class ImageFolderDataset(SkippingDataset):
    """Map-style dataset over the images below a folder.

    Sample ``i`` is ``{"pixel_values": float32 (3, H, W) in [-1, 1]}`` plus ``"class_labels"``
    (int64, index of the first-level subfolder in sorted order) when ``with_labels``.

    Images are decoded with :func:`load_image` at ``transform.draft_size`` when the transform has
    one (a reduced-scale JPEG decode, :class:`ImageTransform` ``draft``), else at full size.

    Augmentation randomness comes from ``numpy.random.default_rng([seed, epoch, i])``, so a
    sample is a pure function of ``(seed, epoch, i)``: runs resume exactly and DataLoader
    workers need no seeding.  Call :meth:`set_epoch` at the start of each epoch.

    An image that cannot be decoded (empty, truncated, not an image) is skipped: ``ds[i]`` is
    then the next decodable image ``i+1, i+2, ...`` (with its own label), counted in
    ``num_skipped`` and logged (see :class:`common.safe_data.SkippingDataset`); use
    :meth:`try_load` to get ``None`` for it instead.  16-bit images are scaled to 8 bits.

    Raises:
        FileNotFoundError / ValueError: see :func:`list_images`.
        ValueError: with labels, an image outside a class subfolder; no image decodes (checked
            at construction on up to 16 images spread over the folder), or more than half of
            them turn out undecodable while reading (message names the first few files).
    """

    def __init__(self, root, transform, with_labels=False, seed=0):
        super().__init__(f"image folder {root!r}")
        self.root = root
        self.paths = list_images(root)
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.with_labels = with_labels
        if with_labels:
            rel = [os.path.relpath(p, root).split(os.sep) for p in self.paths]
            if any(len(r) < 2 for r in rel):
                raise ValueError(f"with class labels, images must sit in class subfolders of {root!r}")
            self.classes = sorted({r[0] for r in rel})
            index = {c: i for i, c in enumerate(self.classes)}
            self.labels = [index[r[0]] for r in rel]
        self.check_usable()

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.paths)

    def sample_name(self, i):
        return self.paths[i]

    def load_sample(self, i):
        """Sample ``i`` without the skipping of ``ds[i]``; raises ``ValueError`` naming the file."""
        image = load_image(self.paths[i], draft_size=getattr(self.transform, "draft_size", None))
        rng = np.random.default_rng([self.seed, self.epoch, i])
        sample = {"pixel_values": self.transform(image, rng)}
        if self.with_labels:
            sample["class_labels"] = np.int64(self.labels[i])
        return sample


class ResumableBatchSampler(paddle.io.DistributedBatchSampler):
    """``DistributedBatchSampler`` that can skip the first ``skip_batches`` of the next epoch.

    Shards by rank like its parent (order is a function of the epoch set with ``set_epoch``);
    after a resume, set ``skip_batches`` to the number of batches the checkpoint had consumed
    in its epoch so the data order continues exactly.  The skip applies once.
    """

    skip_batches = 0

    def __iter__(self):
        skip, self.skip_batches = self.skip_batches, 0
        for i, batch in enumerate(super().__iter__()):
            if i >= skip:
                yield batch


def make_grid(images, nrow=None, padding=2, pad_value=255):
    """Tile PIL images (or ``[-1, 1]`` arrays) into one PIL image with ``nrow`` per row."""
    images = [im if isinstance(im, Image.Image) else array_to_pil(im) for im in images]
    if not images:
        raise ValueError("make_grid needs at least one image")
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    ncol = math.ceil(len(images) / nrow)
    w, h = max(im.width for im in images), max(im.height for im in images)
    grid = Image.new("RGB", (nrow * w + (nrow + 1) * padding, ncol * h + (ncol + 1) * padding), (pad_value,) * 3)
    for k, im in enumerate(images):
        r, c = divmod(k, nrow)
        grid.paste(im.convert("RGB"), (padding + c * (w + padding), padding + r * (h + padding)))
    return grid


def save_grid(images, path, nrow=None, upscale=1):
    """Save :func:`make_grid` of ``images`` to ``path`` (PNG); ``upscale`` enlarges small images
    with nearest-neighbour so a person can see them.  Returns ``path``."""
    grid = make_grid(images, nrow=nrow)
    if upscale > 1:
        grid = grid.resize((grid.width * upscale, grid.height * upscale), Image.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path)
    return path


def sample_grid_path(output_dir, step):
    """Where every training script writes its sample grid of ``step`` (plain loops and the Trainer
    callback alike): ``<output_dir>/samples/step-<step>.png``."""
    return os.path.join(output_dir, "samples", f"step-{int(step)}.png")
