"""Training data: laion400m-format parts (``--file_list``) or an image folder with a
``metadata.jsonl`` of captions (``--train_data_dir``), both turned into
``{"pixel_values": float32 (3, R, R) in [-1, 1], "input_ids": int64 (model_max_length,)}``.
"""
import os

import numpy as np
import paddle
from PIL import Image

from common.distributed import get_rank
from common.images import ImageTransform, load_image
from common.laion import LaionDataset, open_part, parse_laion_line, read_part_paths
from common.safe_data import BadSampleLog, SkippingDataset, iter_jsonl

__all__ = [
    "TextImageProcessor",
    "build_laion_dataset",
    "CaptionImageFolderDataset",
    "collect_captions",
    "collate_fn",
]


class TextImageProcessor:
    """``(PIL image, caption) -> sample dict``: resize the short side to ``resolution``, crop a
    square (center or random), optional horizontal flip, pixels to ``[-1, 1]``; the caption is
    replaced by ``""`` with probability ``proportion_empty_prompts`` (caption dropout, which lets
    classifier-free guidance work on a model trained from scratch) and tokenized (once), padded and
    truncated to ``tokenizer.model_max_length``.  The sample holds numpy arrays only
    (``pixel_values`` float32 ``(3, R, R)`` in ``[-1, 1]``, ``input_ids`` int64 ``(L,)``): no
    paddle tensor is made in a DataLoader worker.

    ``draft`` (default True): the image readers (:class:`common.laion.LaionDataset`,
    :class:`CaptionImageFolderDataset`) decode JPEGs at a reduced scale that still covers
    ``resolution`` (``self.transform.draft_size``, :class:`common.images.ImageTransform`); False:
    full-size decode (``--no_jpeg_draft``).

    The random choices come from a ``numpy`` generator seeded with ``(seed, rank, worker)`` on
    first use in each DataLoader worker / rank, so runs repeat; the laion reader also passes
    ``sample_index`` (unique to the sample in the run, see :class:`common.laion.LaionDataset`) and
    then each sample gets its own generator ``(seed, sample_index)``, so a resumed stream that
    skipped the consumed records draws what the uninterrupted run drew.
    """

    def __init__(self, tokenizer, resolution, proportion_empty_prompts=0.0, seed=0, center_crop=True, random_flip=False, draft=True):
        if not 0.0 <= proportion_empty_prompts <= 1.0:
            raise ValueError(f"--proportion_empty_prompts must be in [0, 1], got {proportion_empty_prompts}")
        self.tokenizer = tokenizer
        self.transform = ImageTransform(resolution, center_crop=center_crop, random_flip=random_flip, interpolation=Image.BICUBIC, draft=draft)
        self.proportion_empty_prompts = proportion_empty_prompts
        self.seed = seed
        self._rng = None

    def _get_rng(self):
        if self._rng is None:
            info = paddle.io.get_worker_info()
            worker = info.id if info is not None else 0
            self._rng = np.random.default_rng([self.seed, get_rank(), worker])
        return self._rng

    def tokenize(self, caption):
        """Caption -> int64 numpy array ``(model_max_length,)`` (padded and truncated)."""
        ids = self.tokenizer(
            caption, padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length, return_attention_mask=False
        )["input_ids"]
        return np.asarray(ids, dtype=np.int64)

    def __call__(self, image, caption, sample_index=None):
        rng = self._get_rng() if sample_index is None else np.random.default_rng([self.seed, int(sample_index)])
        if self.proportion_empty_prompts and rng.random() < self.proportion_empty_prompts:
            caption = ""
        return {"pixel_values": self.transform(image, rng), "input_ids": self.tokenize(caption)}


def build_laion_dataset(file_list, processor, seed=0, buffer_size=256):
    """An infinite, rank/worker-sharded :class:`common.laion.LaionDataset` over ``file_list``
    (``*.filelist.list``, ``*.filelist`` or comma-separated), after
    :func:`common.laion.check_parts_readable`; corrupt records are skipped and counted.

    Raises:
        FileNotFoundError: the list or a listed part does not exist.
        ValueError: the list names no parts, or no part has a readable record.
    """
    dataset = LaionDataset(file_list, process_fn=processor, layout="caption", shuffle=True, seed=seed, infinite=True, buffer_size=buffer_size)
    dataset.check_readable()
    return dataset


class CaptionImageFolderDataset(SkippingDataset):
    """Map-style dataset over an image folder with ``metadata.jsonl`` lines
    ``{"file_name": relative image path, "text": caption}`` (the Hugging Face imagefolder layout
    that ``train_text_to_image`` uses).

    Images are decoded at ``processor.transform.draft_size`` (a reduced-scale JPEG decode, see
    :class:`TextImageProcessor`), or at full size when it is ``None`` or absent.

    A line that is not UTF-8 / not JSON / lacks a column is skipped (the first few are logged as
    ``metadata.jsonl:<line>``; :attr:`num_bad_lines` counts them); an image that is missing or
    does not decode is replaced by the next good one and counted in ``num_skipped`` (see
    :class:`common.safe_data.SkippingDataset`).

    Raises:
        FileNotFoundError: no ``metadata.jsonl`` in ``root``.
        ValueError: no usable line in ``metadata.jsonl`` (the first bad lines are named), no
            listed image decodes, or more than half of them turn out bad.
    """

    def __init__(self, root, processor, caption_column="text", image_column="file_name"):
        super().__init__(f"--train_data_dir {root!r}")
        meta = os.path.join(root, "metadata.jsonl")
        if not os.path.isfile(meta):
            raise FileNotFoundError(f"--train_data_dir {root!r} has no metadata.jsonl of captions")
        self.root, self.processor, self.records = root, processor, []
        self.line_log = BadSampleLog(meta)
        for _, row in iter_jsonl(meta, self.line_log, required=(image_column, caption_column)):
            self.records.append((os.path.join(root, str(row[image_column])), str(row[caption_column])))
        if not self.records:
            detail = self.line_log.summary() or "it is empty"
            raise ValueError(f"{meta} lists no images with {image_column!r} and {caption_column!r} ({detail})")
        self.check_usable()

    @property
    def num_bad_lines(self):
        """Lines of ``metadata.jsonl`` skipped as unreadable (int)."""
        return self.line_log.count

    def __len__(self):
        return len(self.records)

    def sample_name(self, i):
        return self.records[i][0]

    def _draft_size(self):
        return getattr(getattr(self.processor, "transform", None), "draft_size", None)

    def check_sample(self, i):
        load_image(self.records[i][0], draft_size=self._draft_size())  # decode only: the processor's random draws stay untouched

    def load_sample(self, i):
        path, caption = self.records[i]
        return self.processor(load_image(path, draft_size=self._draft_size()), caption)


def collect_captions(file_list=None, train_data_dir=None, caption_column="text", limit=None):
    """Captions of the training data in file order (only the caption column is read; images are
    not decoded; unreadable parts and lines are passed over).  Duplicates are kept unless
    ``limit`` is given, in which case the first ``limit`` distinct captions are returned."""
    captions = []
    if file_list:
        for path in dict.fromkeys(read_part_paths(file_list)):
            try:
                with open_part(path) as f:
                    for line in f:
                        try:
                            caption = parse_laion_line(line, layout="caption")[0].strip()
                        except ValueError:  # a malformed line: the reader skips it too
                            continue
                        if caption:
                            captions.append(caption)
                            if limit and len(dict.fromkeys(captions)) >= limit:
                                return list(dict.fromkeys(captions))
            except Exception:  # OSError / EOFError / zlib.error: a truncated part keeps what was read
                continue
    else:
        meta = os.path.join(train_data_dir, "metadata.jsonl")
        for _, row in iter_jsonl(meta, BadSampleLog(meta, emit=lambda m: None), required=(caption_column,)):
            captions.append(str(row[caption_column]))
    return list(dict.fromkeys(captions))[:limit] if limit else captions


def collate_fn(samples):
    """Stack sample dicts into ``{"pixel_values": (B, 3, R, R) float32, "input_ids": (B, L) int64}``.

    Returns numpy arrays: the DataLoader turns them into tensors in the main process (creating
    paddle tensors inside DataLoader worker processes can crash them).  One copy per field: the
    stack (the dtype casts copy nothing when the samples already have it)."""
    return {
        "pixel_values": np.stack([s["pixel_values"] for s in samples]).astype(np.float32, copy=False),
        "input_ids": np.stack([s["input_ids"] for s in samples]).astype(np.int64, copy=False),
    }
