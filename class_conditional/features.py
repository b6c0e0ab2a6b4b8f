"""Pre-extracted VAE features (fast-DiT layout) as a map-style dataset.

Layout under ``--feature_path``::

    imagenet256_features/<i>.npy   float32 latent, one file per image: (4, h, w), (1, 4, h, w) as in
                                   fast-DiT's downloads, or (2, 4, h, w) = [image, horizontal flip]
                                   as written by extract_features.py; already multiplied by the
                                   VAE scaling factor (0.18215 unless the VAE config says otherwise)
    imagenet256_labels/<i>.npy     int64 class id, shape () or (1,)
    classes.json                   optional: class names in id order (extract_features.py writes it)

With two variants per file, one is picked per (seed, epoch, index), i.e. a random horizontal flip
that survives pre-extraction and is reproducible on resume.  The file names are the image
indices; gaps (images extract_features.py could not decode) are allowed.
"""
import json
import os

import numpy as np

from common.safe_data import SkippingDataset, load_npy

__all__ = ["FEATURE_DIR", "LABEL_DIR", "FeatureDataset", "read_class_names"]

FEATURE_DIR = "imagenet256_features"
LABEL_DIR = "imagenet256_labels"


def _npy_files(folder, what):
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what} folder {folder!r} does not exist (expected <feature_path>/{os.path.basename(folder)}/*.npy; run extract_features.py)")
    names = [n for n in os.listdir(folder) if n.endswith(".npy") and not n.startswith(".")]
    if not names:
        raise ValueError(f"{what} folder {folder!r} contains no .npy files")
    key = lambda n: (0, int(n[:-4]), n) if n[:-4].isdigit() else (1, 0, n)  # noqa: E731
    return sorted(names, key=key)


def read_class_names(feature_path):
    """Class names from ``<feature_path>/classes.json`` or ``None`` when absent."""
    path = os.path.join(feature_path, "classes.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


class FeatureDataset(SkippingDataset):
    """Sample ``i`` = ``{"latents": float32 (4, h, w), "class_labels": int64 ()}``.

    A feature or label file that cannot be read (truncated ``.npy``, wrong shape) is skipped:
    ``ds[i]`` is then the next readable sample, counted in ``num_skipped`` and logged with the
    file name (see :class:`common.safe_data.SkippingDataset`), so batches stay full and resumed
    runs see the same data.

    Args:
        feature_path: folder holding ``imagenet256_features/`` and ``imagenet256_labels/``.
        seed: seeds the flip choice (``numpy.random.default_rng([seed, epoch, i])``).
        random_flip: pick the flipped variant half of the time when stored.

    Raises:
        FileNotFoundError: a missing folder.
        ValueError: different numbers of feature and label files, unmatched file names, no
            sample readable (checked at construction on up to 16 samples spread over the
            folder), or more than half of them turn out unreadable while training.
    """

    def __init__(self, feature_path, seed=0, random_flip=True):
        super().__init__(f"feature folder {feature_path!r}")
        self.feature_dir = os.path.join(feature_path, FEATURE_DIR)
        self.label_dir = os.path.join(feature_path, LABEL_DIR)
        self.features = _npy_files(self.feature_dir, "feature")
        self.labels = _npy_files(self.label_dir, "label")
        if len(self.features) != len(self.labels):
            raise ValueError(f"{feature_path}: {len(self.features)} feature files but {len(self.labels)} label files; they must pair one to one")
        if self.features != self.labels:
            bad = next(a for a, b in zip(self.features, self.labels) if a != b)
            raise ValueError(f"{feature_path}: feature file {bad!r} has no label file of the same name in {LABEL_DIR}/")
        self.seed, self.random_flip, self.epoch = seed, random_flip, 0
        self.class_names = read_class_names(feature_path)
        self.check_usable()

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.features)

    def sample_name(self, i):
        return os.path.join(self.feature_dir, self.features[i])

    def load_sample(self, i):
        """Sample ``i`` without the skipping of ``ds[i]``; raises ``ValueError`` naming the file."""
        name = self.features[i]
        path = os.path.join(self.feature_dir, name)
        x = load_npy(path, "latent features").astype(np.float32, copy=False)
        y = np.asarray(load_npy(os.path.join(self.label_dir, name), "class label")).reshape(-1)
        if x.ndim == 4:
            k = 0
            if x.shape[0] > 1 and self.random_flip:
                k = int(np.random.default_rng([self.seed, self.epoch, i]).integers(0, x.shape[0]))
            x = x[k]
        if x.ndim != 3:
            raise ValueError(f"{path!r}: feature has shape {x.shape}; expected (C, h, w), (1, C, h, w) or (2, C, h, w)")
        if y.size != 1:
            raise ValueError(f"{os.path.join(self.label_dir, name)!r}: label has {y.size} values; expected one class id")
        return {"latents": x, "class_labels": np.int64(y[0])}
