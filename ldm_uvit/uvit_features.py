"""The COCO-256 feature layout (U-ViT's precomputed MS-COCO features) and its training dataset.

Layout of ``--feature_path`` (compatible with U-ViT's ``MSCOCOFeatureDataset`` and the upstream
``coco256_features`` download)::

    <feature_path>/
        train/
            0.npy  1.npy ...          autoencoder posterior moments of image i: float32 (2*C, h, w),
                                      mean and log-variance stacked on the channel axis
                                      ((8, 32, 32) for 256x256 images with the SD VAE; (8, 8, 8) for
                                      32x32 images with the f4 demo VAE).  Unscaled: a latent is
                                      sampled at train time and multiplied by the scale factor.
            0_0.npy 0_1.npy ...       text-encoder features of caption k of image i: float32 (L, D)
                                      ((77, 768) with CLIP ViT-L/14; (16, 64) in the demo)
        val/                          same layout (optional)
        empty_context.npy             features of the empty caption "": (L, D); replaces the caption
                                      features with probability p_uncond in training (classifier-free
                                      guidance dropout) and is the unconditional branch when sampling
        run_vis/                      optional prompts for the training image logs:
            0.npy ... + prompts.txt   features (L, D) and the prompt text, one line per file
        meta.json                     optional, written by extract_features.py: which VAE / text
                                      encoder made the features, shapes, counts, latent statistics
        train_captions.jsonl          optional: {"index", "image", "captions"} per image

Files of a split are named only ``<i>.npy`` / ``<i>_<k>.npy`` (U-ViT counts them by name).
"""
import json
import os
import re

import numpy as np

from common.safe_data import BadSampleLog, SkippingDataset, iter_jsonl, load_npy

__all__ = [
    "EMPTY_CONTEXT_FILE",
    "META_FILE",
    "VIS_DIR",
    "read_caption_file",
    "scan_feature_split",
    "load_empty_context",
    "load_vis_prompts",
    "CocoFeatureDataset",
    "resolve_vae_name",
    "read_meta",
]

EMPTY_CONTEXT_FILE = "empty_context.npy"
META_FILE = "meta.json"
VIS_DIR = "run_vis"
_NAME_RE = re.compile(r"^(\d+)(?:_(\d+))?\.npy$")


def resolve_vae_name(vae_name_or_path, feature_path=None):
    """Pin down which autoencoder ``vae_name_or_path`` means, so features, training and export agree.

    ``"auto"`` becomes the VAE recorded in ``<feature_path>/meta.json`` when given and recorded
    (the one that made the features), else what ``common.vae.load_vae("auto")`` would pick now:
    the trained demo VAE folder (:func:`common.vae.resolve_vae_name`).  Other values (``random``,
    a folder, a hub id) are returned unchanged.

    Raises:
        FileNotFoundError: ``auto`` with nothing recorded and no trained demo VAE; the message
            says to run ``sh autoencoder/run_train_vae_demo.sh`` or to pass another VAE.
    """
    if vae_name_or_path not in (None, "", "auto"):
        return vae_name_or_path
    recorded = read_meta(feature_path).get("vae_name_or_path") if feature_path else None
    if recorded and recorded != "auto":
        return recorded
    from common.vae import resolve_vae_name as resolve_demo_vae

    return resolve_demo_vae("auto")


def read_meta(feature_path):
    """``<feature_path>/meta.json`` as a dict (empty when absent)."""
    path = os.path.join(feature_path, META_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def read_caption_file(path, bad=None):
    """Read a coco_karpathy caption file into ``[(image_path, [captions...])]`` in first-seen order.

    Accepts JSON lines or one JSON list; each record has ``"image"`` (path relative to the file's
    folder, or absolute) and ``"caption"`` (a string, or a list of strings as in the Karpathy
    val/test files).  Records of the same image are merged.  A line (or list item) that is not
    UTF-8, not JSON, or lacks ``image``/``caption`` is skipped and counted in ``bad``; the first
    few are logged as ``<path>:<line>`` with the reason.

    Args:
        path: the caption file.
        bad: a :class:`common.safe_data.BadSampleLog` to count skipped records in (default: a new
            one, whose summary is logged).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a JSON-list file that does not parse (position named), or no usable record
            (the first bad lines named).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"caption file {path!r} does not exist")
    bad = bad if bad is not None else BadSampleLog(f"caption file {path!r}")
    with open(path, "rb") as f:
        head = f.read(4096).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if head.startswith("["):
        try:
            with open(path, encoding="utf-8-sig") as f:
                items = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"caption file {path!r} starts like one JSON list but does not parse: {type(e).__name__}: {e}") from None
        records = []
        for n, rec in enumerate(items, 1):
            if isinstance(rec, dict) and "image" in rec and "caption" in rec:
                records.append((n, rec))
            else:
                bad.record(f"{path}: item {n}", f"needs 'image' and 'caption' keys, got {rec!r:.200}")
    else:
        records = list(iter_jsonl(path, bad, required=("image", "caption")))
    root = os.path.dirname(os.path.abspath(path))
    images = {}
    for _, rec in records:
        captions = rec["caption"] if isinstance(rec["caption"], list) else [rec["caption"]]
        image = str(rec["image"])
        image = image if os.path.isabs(image) else os.path.join(root, image)
        images.setdefault(image, []).extend(str(c) for c in captions)
    if not images:
        raise ValueError(f"caption file {path!r} holds no usable records ({bad.summary() or 'it is empty'})")
    if bad.count:
        bad.emit(f"caption file {path!r}: {bad.summary()}; read {len(records)} records of {len(images)} images")
    return list(images.items())


def scan_feature_split(split_dir):
    """Count images and captions of one split folder.

    Returns ``n_captions``: list, ``n_captions[i]`` = number of caption files of image ``i``.

    Raises:
        FileNotFoundError: ``split_dir`` is not a folder.
        ValueError: no ``<i>.npy`` files, image indices not ``0..N-1``, an image without captions,
            captions of a missing image, or a file whose name is not ``<i>.npy`` / ``<i>_<k>.npy``.
    """
    if not os.path.isdir(split_dir):
        raise FileNotFoundError(f"feature folder {split_dir!r} does not exist (expected <feature_path>/train, see ldm_uvit/README.md)")
    images, captions = set(), {}
    for name in os.listdir(split_dir):
        m = _NAME_RE.match(name)
        if m is None:
            if name.startswith("."):
                continue
            raise ValueError(f"{os.path.join(split_dir, name)!r}: unexpected file; a feature split holds only <i>.npy and <i>_<k>.npy")
        i = int(m.group(1))
        if m.group(2) is None:
            images.add(i)
        else:
            captions.setdefault(i, set()).add(int(m.group(2)))
    if not images:
        raise ValueError(f"feature folder {split_dir!r} holds no image moments (<i>.npy files)")
    n = len(images)
    if images != set(range(n)):
        missing = sorted(set(range(n)) - images)[:5]
        raise ValueError(f"{split_dir!r}: image indices must be 0..{n - 1}; missing e.g. {missing}")
    orphans = sorted(set(captions) - images)
    if orphans:
        raise ValueError(f"{split_dir!r}: caption files for images that have no moments file, e.g. {orphans[:5]}")
    n_captions = []
    for i in range(n):
        ks = captions.get(i, set())
        if not ks:
            raise ValueError(f"{split_dir!r}: image {i} ({i}.npy) has no caption features ({i}_0.npy ...)")
        if ks != set(range(len(ks))):
            raise ValueError(f"{split_dir!r}: caption files of image {i} must be {i}_0.npy..{i}_{len(ks) - 1}.npy")
        n_captions.append(len(ks))
    return n_captions


def _load_2d(path, what):
    arr = load_npy(path, what)
    if arr.ndim == 3 and arr.shape[0] == 1:  # (1, L, D) as some extractors save it
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"{path!r}: {what} must have shape (tokens, dim), got {arr.shape}")
    return arr.astype(np.float32, copy=False)


def load_empty_context(feature_path):
    """Load ``<feature_path>/empty_context.npy`` as float32 ``(L, D)``.

    Raises:
        FileNotFoundError: the file is missing (it is needed for CFG dropout and guidance).
        ValueError: it is not 2-D.
    """
    path = os.path.join(feature_path, EMPTY_CONTEXT_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path!r} is missing: the features of the empty caption are needed for classifier-free guidance "
            "(make it with ldm_uvit/extract_features.py or download it with the COCO-256 features)"
        )
    return _load_2d(path, "empty_context.npy")


def load_vis_prompts(feature_path, max_prompts=None):
    """``(prompts, contexts)`` from ``<feature_path>/run_vis`` or ``([], None)`` when absent.

    ``contexts`` is float32 ``(P, L, D)``; ``prompts`` the matching texts (``prompts.txt`` lines,
    or the file names when it is missing).
    """
    vis = os.path.join(feature_path, VIS_DIR)
    if not os.path.isdir(vis):
        return [], None
    files = sorted((f for f in os.listdir(vis) if _NAME_RE.match(f) and "_" not in f), key=lambda f: int(f[:-4]))
    if max_prompts:
        files = files[:max_prompts]
    if not files:
        return [], None
    texts_file = os.path.join(vis, "prompts.txt")
    texts = open(texts_file, encoding="utf-8").read().splitlines() if os.path.isfile(texts_file) else []
    prompts = [texts[int(f[:-4])] if int(f[:-4]) < len(texts) else f for f in files]
    return prompts, np.stack([_load_2d(os.path.join(vis, f), "run_vis features") for f in files])


class CocoFeatureDataset(SkippingDataset):
    """Map-style dataset over one split of the COCO-256 feature layout (module docstring).

    Sample ``i`` is ``{"moments": float32 (2*C, h, w), "context": float32 (L, D)}`` where
    ``context`` is the features of one caption of image ``i`` drawn uniformly at random, or
    ``empty_context.npy`` with probability ``p_uncond`` (classifier-free guidance dropout,
    Ho & Salimans 2022; U-ViT trains with p_uncond = 0.1).

    The draw for sample ``i`` comes from ``numpy.random.default_rng([seed, epoch, i])``: it is a
    pure function of ``(seed, epoch, i)`` (no shared RNG, so DataLoader workers and resumed runs
    see the same draws).  Call :meth:`set_epoch` each epoch for fresh draws.

    A sample whose moments or drawn caption file cannot be read (truncated ``.npy``, wrong
    shape) is skipped: ``ds[i]`` is then the next readable sample, counted in ``num_skipped`` and
    logged with the file name (see :class:`common.safe_data.SkippingDataset`);
    :meth:`load_sample` raises instead.

    Args:
        feature_path: the features root (holds ``<split>/`` and ``empty_context.npy``).
        split: ``"train"`` or ``"val"``.
        p_uncond: probability in ``[0, 1]`` of the empty caption.
        seed: base seed of the draws.
        moments_shape: expected ``(2*C, h, w)`` (from the U-ViT config) or ``None`` (no check).
        context_shape: expected ``(L, D)`` (from the U-ViT config) or ``None``.

    Raises:
        FileNotFoundError: missing split folder or ``empty_context.npy``.
        ValueError: bad file names (see :func:`scan_feature_split`), ``p_uncond`` out of range,
            an ``empty_context.npy`` of the wrong shape, no readable sample (checked at
            construction: moments and first caption of up to 16 images spread over the split,
            so a shape that does not match the config fails here, naming the files), or more
            than half of the samples turn out unreadable while training.
    """

    def __init__(self, feature_path, split="train", p_uncond=0.1, seed=0, moments_shape=None, context_shape=None):
        super().__init__(f"feature split {os.path.join(feature_path, split)!r}")
        if not 0.0 <= p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond}")
        self.split_dir = os.path.join(feature_path, split)
        self.n_captions = scan_feature_split(self.split_dir)
        self.empty_context = load_empty_context(feature_path)
        self.p_uncond = float(p_uncond)
        self.seed = int(seed)
        self.epoch = 0
        self.moments_shape = tuple(moments_shape) if moments_shape is not None else None
        self.context_shape = tuple(context_shape) if context_shape is not None else tuple(self.empty_context.shape)
        if tuple(self.empty_context.shape) != self.context_shape:
            raise ValueError(
                f"{os.path.join(feature_path, EMPTY_CONTEXT_FILE)!r} has shape {self.empty_context.shape}, "
                f"expected {self.context_shape} (num_text_tokens, clip_dim of the model config)"
            )
        self.check_usable()

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.n_captions)

    def sample_name(self, i):
        return os.path.join(self.split_dir, f"{i}.npy")

    def _load_moments(self, i):
        path = os.path.join(self.split_dir, f"{i}.npy")
        arr = load_npy(path, "autoencoder moments")
        if arr.ndim != 3 or arr.shape[0] % 2 or (self.moments_shape is not None and tuple(arr.shape) != self.moments_shape):
            want = self.moments_shape or "(2*latent_channels, h, w)"
            raise ValueError(
                f"{path!r}: autoencoder moments have shape {arr.shape}, expected {want} "
                "(mean and logvar stacked on axis 0; the U-ViT config's in_channels/sample_size must match the VAE)"
            )
        return arr.astype(np.float32, copy=False)

    def _load_context(self, i, k):
        path = os.path.join(self.split_dir, f"{i}_{k}.npy")
        arr = _load_2d(path, "caption features")
        if tuple(arr.shape) != self.context_shape:
            raise ValueError(f"{path!r}: caption features have shape {arr.shape}, expected {self.context_shape} (like empty_context.npy)")
        return arr

    def draw(self, i):
        """``(k, uncond)``: the caption index and the CFG-dropout decision for sample ``i`` this epoch."""
        rng = np.random.default_rng([self.seed, self.epoch, i])
        k = int(rng.integers(self.n_captions[i]))
        return k, bool(rng.random() < self.p_uncond)

    def check_sample(self, i):
        self._load_moments(i)
        self._load_context(i, 0)

    def load_sample(self, i):
        """Sample ``i`` without the skipping of ``ds[i]``; raises ``ValueError`` naming the file."""
        k, uncond = self.draw(i)
        context = self.empty_context if uncond else self._load_context(i, k)
        return {"moments": self._load_moments(i), "context": context}
