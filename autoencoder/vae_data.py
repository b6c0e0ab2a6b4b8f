"""Training data for the autoencoder: laion400m-format parts (``text_image_pair``) or an
ImageNet-style class-folder tree (``imagenet``).  Samples are ``{"pixel_values": float32
(3, resolution, resolution) in [-1, 1]}``; captions and labels are not used.

Both readers skip and count an undecodable sample (see :mod:`common.safe_data`) and fail at
start when nothing is readable."""
import math
import os

import numpy as np
from PIL import Image

from common.images import ImageFolderDataset, pil_to_tensor_array, to_rgb
from common.laion import LaionDataset

__all__ = ["RandomCropTransform", "default_imagenet_root", "imagenet_train_dir", "build_dataset"]


class RandomCropTransform:
    """Random square crop -> resize to ``resolution`` -> optional horizontal flip.

    The crop side is ``s * min(H, W)`` with ``s`` uniform in ``[min_crop_scale, 1]`` and a
    uniform position, but never below ``resolution`` pixels (crops are not upsampled: an image
    whose short side is already ``resolution``, like a 32 px digit at resolution 32, is used
    whole).  ``min_crop_scale=1`` is the usual "resize the short side, random crop"; smaller
    values add zoomed-in crops (more distinct patches from few large photos).
    Call with ``(PIL image of any mode, numpy Generator)``; returns a float32 numpy array
    ``(3, R, R)`` in ``[-1, 1]`` (16-bit images are scaled to 8 bits first, :func:`common.images.to_rgb`).

    ``draft`` (default True): the readers decode JPEGs at the smallest power-of-two reduction
    whose short side still holds ``resolution / min_crop_scale`` pixels (:attr:`draft_size`), so
    the smallest crop is still downsampled to ``resolution`` and the crops keep their proportions;
    False: full-size decode (``train_vae.py --no_jpeg_draft``).  ``reducing_gap``: see
    :class:`common.images.ImageTransform` (3.0: a crop more than 6x the output is box-reduced first).
    """

    def __init__(self, resolution, min_crop_scale=1.0, random_flip=True, interpolation=Image.LANCZOS, draft=True, reducing_gap=3.0):
        if not 0 < min_crop_scale <= 1:
            raise ValueError(f"--min_crop_scale must be in (0, 1], got {min_crop_scale}")
        self.resolution = int(resolution)
        self.min_crop_scale = float(min_crop_scale)
        self.random_flip = random_flip
        self.interpolation = interpolation
        self.draft = draft
        self.reducing_gap = reducing_gap

    @property
    def draft_size(self):
        """``(side, side)`` with ``side = ceil(resolution / min_crop_scale)`` to draft-decode JPEGs
        at, or ``None`` (``draft=False``)."""
        if not self.draft:
            return None
        side = int(math.ceil(self.resolution / self.min_crop_scale - 1e-9))
        return (side, side)

    def __call__(self, image, rng):
        image = to_rgb(image)
        short = min(image.size)
        side = short
        low = max(self.min_crop_scale * short, min(self.resolution, short))
        if low < short:
            side = int(round(rng.uniform(low, short)))
        left = int(rng.integers(0, image.width - side + 1))
        top = int(rng.integers(0, image.height - side + 1))
        image = image.crop((left, top, left + side, top + side))
        if side != self.resolution:
            image = image.resize((self.resolution, self.resolution), self.interpolation, reducing_gap=self.reducing_gap)
        flip = bool(self.random_flip and rng.random() < 0.5)
        return pil_to_tensor_array(image, flip=flip)


class _LaionProcess:
    """``process_fn`` for :class:`LaionDataset`: each sample's crop/flip comes from its own RNG
    ``(seed, sample_index)`` (``sample_index`` is unique in the run), so a resumed stream that
    skips the consumed records without decoding them draws what the uninterrupted run drew."""

    def __init__(self, transform, seed):
        self.transform = transform
        self.seed = seed

    def __call__(self, image, caption, sample_index=0):
        return {"pixel_values": self.transform(image, np.random.default_rng([self.seed, int(sample_index)]))}


def default_imagenet_root():
    """``$XDG_CACHE_HOME/autoencoders/data`` (``~/.cache/autoencoders/data``), LDM's location."""
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(cache, "autoencoders", "data")


def imagenet_train_dir(root):
    """``<root>/ILSVRC2012_train/data`` -- the class-folder tree (``nXXXXXXXX/*.JPEG``).

    Raises:
        FileNotFoundError: it does not exist (nothing is downloaded; the message shows the layout).
    """
    path = os.path.join(root, "ILSVRC2012_train", "data")
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"--dataset_type imagenet: {path!r} does not exist. Put the extracted ImageNet train set there as "
            "ILSVRC2012_train/data/<wnid>/*.JPEG (or pass --imagenet_root); this script never downloads it"
        )
    return path


def build_dataset(dataset_type, resolution, file_list=None, imagenet_root=None, min_crop_scale=1.0, random_flip=True, seed=0, jpeg_draft=True):
    """Return ``(dataset, is_iterable)`` for ``dataset_type`` ``"text_image_pair"`` or ``"imagenet"``.

    ``text_image_pair`` reads ``file_list`` (a ``*.filelist.list``, ``*.filelist`` or a
    comma-separated mix; see :mod:`common.laion`) as an endless, rank/worker-sharded stream;
    ``imagenet`` is a map-style dataset over ``<imagenet_root>/ILSVRC2012_train/data``.  Samples
    are ``{"pixel_values": float32 numpy (3, resolution, resolution) in [-1, 1]}`` from
    :class:`RandomCropTransform`; ``jpeg_draft`` (default True) decodes JPEGs at a reduced scale
    (:attr:`RandomCropTransform.draft_size`), False at full size.

    Raises:
        ValueError: unknown ``dataset_type`` or missing ``file_list``; no part of ``file_list``
            holds a readable record, or no image of the folder decodes (files named).
        FileNotFoundError: missing files/folders (named in the message).
    """
    transform = RandomCropTransform(resolution, min_crop_scale=min_crop_scale, random_flip=random_flip, draft=jpeg_draft)
    if dataset_type == "text_image_pair":
        if not file_list:
            raise ValueError("--dataset_type text_image_pair needs --file_list")
        dataset = LaionDataset(file_list, process_fn=_LaionProcess(transform, seed), layout="auto", shuffle=True, seed=seed, infinite=True)
        dataset.check_readable()
        return dataset, True
    if dataset_type == "imagenet":
        root = imagenet_train_dir(imagenet_root or default_imagenet_root())
        return ImageFolderDataset(root, transform, with_labels=False, seed=seed), False
    raise ValueError(f"--dataset_type must be 'text_image_pair' or 'imagenet', got {dataset_type!r}")
