"""Training data: laion400m-format parts (``--file_list``) or an image folder with a
``metadata.jsonl`` of captions (``--train_data_dir``), both turned into
``{"pixel_values": float32 (3, R, R) in [-1, 1], "input_ids": int64 (model_max_length,)}``.
"""
import gzip
import json
import os

import numpy as np
import paddle
from PIL import Image

from common.images import ImageTransform
from common.laion import LaionDataset, decode_image_b64, parse_laion_line, read_part_paths

__all__ = [
    "TextImageProcessor",
    "check_parts_readable",
    "build_laion_dataset",
    "CaptionImageFolderDataset",
    "collect_captions",
    "collate_fn",
]


class TextImageProcessor:
    """``(PIL image, caption) -> sample dict``: resize the short side to ``resolution``, crop a
    square (center or random), optional horizontal flip, pixels to ``[-1, 1]``; the caption is
    replaced by ``""`` with probability ``proportion_empty_prompts`` (caption dropout, which lets
    classifier-free guidance work on a model trained from scratch) and tokenized, padded and
    truncated to ``tokenizer.model_max_length``.

    The random choices come from a ``numpy`` generator seeded with ``(seed, reader id)`` on
    first use in each DataLoader worker / rank, so runs repeat.
    """

    def __init__(self, tokenizer, resolution, proportion_empty_prompts=0.0, seed=0, center_crop=True, random_flip=False):
        if not 0.0 <= proportion_empty_prompts <= 1.0:
            raise ValueError(f"--proportion_empty_prompts must be in [0, 1], got {proportion_empty_prompts}")
        self.tokenizer = tokenizer
        self.transform = ImageTransform(resolution, center_crop=center_crop, random_flip=random_flip, interpolation=Image.BICUBIC)
        self.proportion_empty_prompts = proportion_empty_prompts
        self.seed = seed
        self._rng = None

    def _get_rng(self):
        if self._rng is None:
            info = paddle.io.get_worker_info()
            worker = info.id if info is not None else 0
            rank = int(os.environ.get("PADDLE_TRAINER_ID", "0"))
            self._rng = np.random.default_rng([self.seed, rank, worker])
        return self._rng

    def tokenize(self, caption):
        """Caption -> int64 array ``(model_max_length,)``."""
        ids = self.tokenizer(
            caption, padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length, return_attention_mask=False
        )["input_ids"]
        return np.asarray(ids, dtype=np.int64)

    def __call__(self, image, caption):
        rng = self._get_rng()
        if self.proportion_empty_prompts and rng.random() < self.proportion_empty_prompts:
            caption = ""
        return {"pixel_values": self.transform(image, rng), "input_ids": self.tokenize(caption)}


def _open_part(path):
    return gzip.open(path, "rt", encoding="utf-8", errors="replace") if path.endswith(".gz") else open(path, "r", encoding="utf-8", errors="replace")


def check_parts_readable(part_paths, max_lines=20):
    """Make sure at least one part holds a decodable record, so that an infinite reader over
    only-corrupt parts fails clearly instead of spinning forever.

    Looks at up to ``max_lines`` lines of each distinct part and stops at the first good record.

    Raises:
        ValueError: no readable ``caption, _, img_b64`` record in any part (names the parts).
    """
    problems = []
    for path in dict.fromkeys(part_paths):
        try:
            last = "empty file"
            with _open_part(path) as f:
                for _, line in zip(range(max_lines), f):
                    try:
                        _, img_b64 = parse_laion_line(line)
                        decode_image_b64(img_b64)
                        return
                    except ValueError as e:
                        last = str(e)
                problems.append(f"{path}: no readable record in the first {max_lines} lines ({last})")
        except (OSError, EOFError) as e:
            problems.append(f"{path}: cannot be read ({e})")
    raise ValueError("--file_list: no readable laion400m-format record in any part file:\n  " + "\n  ".join(problems[:10]))


def build_laion_dataset(file_list, processor, seed=0, buffer_size=256):
    """An infinite, rank/worker-sharded :class:`common.laion.LaionDataset` over ``file_list``
    (``*.filelist.list``, ``*.filelist`` or comma-separated), after :func:`check_parts_readable`.

    Raises:
        FileNotFoundError: the list or a listed part does not exist.
        ValueError: the list names no parts, or no part has a readable record.
    """
    dataset = LaionDataset(file_list, process_fn=processor, layout="caption", shuffle=True, seed=seed, infinite=True, buffer_size=buffer_size)
    check_parts_readable(dataset.part_paths)
    return dataset


class CaptionImageFolderDataset(paddle.io.Dataset):
    """Map-style dataset over an image folder with ``metadata.jsonl`` lines
    ``{"file_name": relative image path, "text": caption}`` (the Hugging Face imagefolder layout
    that ``train_text_to_image`` uses).

    Raises:
        FileNotFoundError: no ``metadata.jsonl`` in ``root``.
        ValueError: a line lacks ``image_column``/``caption_column`` or is not JSON (line number
            given), or the file lists no image.
    """

    def __init__(self, root, processor, caption_column="text", image_column="file_name"):
        super().__init__()
        meta = os.path.join(root, "metadata.jsonl")
        if not os.path.isfile(meta):
            raise FileNotFoundError(f"--train_data_dir {root!r} has no metadata.jsonl of captions")
        self.root, self.processor, self.records = root, processor, []
        with open(meta, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    self.records.append((os.path.join(root, row[image_column]), str(row[caption_column])))
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(f"{meta} line {n}: expected JSON with {image_column!r} and {caption_column!r} ({e})") from None
        if not self.records:
            raise ValueError(f"{meta} lists no images")

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        path, caption = self.records[i]
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except Exception as e:
            raise ValueError(f"cannot decode image {path!r}: {e}") from None
        return self.processor(image, caption)


def collect_captions(file_list=None, train_data_dir=None, caption_column="text", limit=None):
    """Captions of the training data in file order (only the caption column is read; images are
    not decoded).  Duplicates are kept unless ``limit`` is given, in which case the first
    ``limit`` distinct captions are returned."""
    captions = []
    if file_list:
        for path in dict.fromkeys(read_part_paths(file_list)):
            try:
                with _open_part(path) as f:
                    for line in f:
                        cols = line.split("\t", 1)
                        if len(cols) == 2 and cols[0].strip():
                            captions.append(cols[0].strip())
                            if limit and len(dict.fromkeys(captions)) >= limit:
                                return list(dict.fromkeys(captions))
            except (OSError, EOFError):
                continue
    else:
        with open(os.path.join(train_data_dir, "metadata.jsonl"), encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    captions.append(str(json.loads(line).get(caption_column, "")))
    return list(dict.fromkeys(captions))[:limit] if limit else captions


def collate_fn(samples):
    """Stack sample dicts into ``{"pixel_values": (B, 3, R, R) float32, "input_ids": (B, L) int64}``.

    Returns numpy arrays: the DataLoader turns them into tensors in the main process (creating
    paddle tensors inside DataLoader worker processes can crash them)."""
    return {
        "pixel_values": np.stack([s["pixel_values"] for s in samples]).astype(np.float32),
        "input_ids": np.stack([s["input_ids"] for s in samples]).astype(np.int64),
    }

