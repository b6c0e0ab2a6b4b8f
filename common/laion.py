"""laion400m-format part files: the writer used to make them and a sharded reader.

Format (as upstream PaddleMIX/ppdiffusers uses it):

* a *part file* (``part-000000`` or ``part-000000.gz``, gzip detected by the ``.gz`` suffix) holds
  one record per line, tab-separated.  Two column layouts exist upstream and both are read:

  - ``"caption"`` layout (stable_diffusion pretraining): ``caption \\t _ \\t img_b64``
  - ``"laion"`` layout (autoencoder text_image_pair): ``_ \\t caption \\t _ \\t img_b64``

  ``img_b64`` is the base64 of the encoded image file (JPEG/PNG bytes).  ``layout="auto"`` picks
  ``caption`` for 3 columns and ``laion`` for 4 or more.
* a *filelist* (``name.filelist``) lists part paths, one per line; a path may repeat (upstream
  repeats parts so that many readers have work); each listed entry is one pass over that part.
* a *filelist list* (``name.filelist.list``) lists filelists, one per line.

Relative paths inside a filelist are resolved first against the current directory (upstream's
behaviour) and then against the filelist's own folder.

Bad records never stop a reader: see :class:`LaionDataset` and :func:`check_parts_readable`.
"""
import base64
import gzip
import io
import logging
import os
import random

import paddle.io
from PIL import Image

from common.images import apply_jpeg_draft, to_rgb
from common.safe_data import BadSampleLog, fail_reader

logger = logging.getLogger(__name__)

__all__ = [
    "encode_image_b64",
    "decode_image_b64",
    "parse_laion_line",
    "write_laion_parts",
    "read_part_paths",
    "open_part",
    "check_parts_readable",
    "LaionDataset",
]


def encode_image_b64(image, format="JPEG", quality=95):
    """Encode a PIL image as base64 text of its ``format`` file bytes (RGB for JPEG)."""
    buf = io.BytesIO()
    if format.upper() == "JPEG" and image.mode != "RGB":
        image = image.convert("RGB")
    image.save(buf, format=format, quality=quality) if format.upper() == "JPEG" else image.save(buf, format=format)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_image_b64(text, draft_size=None):
    """Decode base64 image text to an RGB uint8 PIL image (16-bit images scaled to 8 bits, see
    :func:`common.images.to_rgb`).

    ``draft_size``: optional ``(width, height)`` the caller resizes to; JPEG data is then decoded
    at a reduced power-of-two scale keeping both sides ``>=`` it
    (:func:`common.images.apply_jpeg_draft`).  ``None``: full-size decode.

    Raises:
        ValueError: the text is not valid base64 or the bytes are not a complete image.
    """
    try:
        raw = base64.b64decode(text, validate=True)
        image = apply_jpeg_draft(Image.open(io.BytesIO(raw)), draft_size)
        image.load()  # forces full decode: catches truncated files
    except Exception as e:  # binascii.Error, PIL.UnidentifiedImageError, OSError (truncated)
        raise ValueError(f"bad image data: {type(e).__name__}: {e}") from None
    return to_rgb(image)


def parse_laion_line(line, layout="auto"):
    """Split one part-file line into ``(caption, img_b64)``.

    Args:
        line: a text line (trailing newline allowed).
        layout: ``"caption"`` (``caption, _, img_b64``), ``"laion"`` (``_, caption, _, img_b64``)
            or ``"auto"`` (3 columns -> caption, >= 4 -> laion).

    Raises:
        ValueError: wrong column count for the layout, or an unknown layout.
    """
    cols = line.rstrip("\r\n").split("\t")
    if layout == "auto":
        layout = "caption" if len(cols) == 3 else "laion"
    if layout == "caption":
        if len(cols) < 3:
            raise ValueError(f"expected >= 3 tab-separated columns (caption, _, img_b64), got {len(cols)}")
        return cols[0], cols[2]
    if layout == "laion":
        if len(cols) < 4:
            raise ValueError(f"expected >= 4 tab-separated columns (_, caption, _, img_b64), got {len(cols)}")
        return cols[1], cols[3]
    raise ValueError(f"unknown layout {layout!r}; expected 'auto', 'caption' or 'laion'")


def write_laion_parts(records, output_dir, per_part_file_num=1000, save_gzip_file=True, layout="caption", start_index=0):
    """Write ``(caption, img_b64)`` records into part files under ``output_dir``.

    Args:
        records: iterable of ``(caption, img_b64)``; tabs/newlines in captions become spaces.
        per_part_file_num: records per part file.
        save_gzip_file: write ``part-NNNNNN.gz`` (gzip) instead of plain ``part-NNNNNN``.
        layout: column layout to write (see module docstring).

    Returns:
        list of the part paths written, in order.
    """
    os.makedirs(output_dir, exist_ok=True)
    paths, handle, count, index = [], None, 0, start_index
    try:
        for caption, img_b64 in records:
            if handle is None or count == per_part_file_num:
                if handle is not None:
                    handle.close()
                path = os.path.join(output_dir, f"part-{index:06d}" + (".gz" if save_gzip_file else ""))
                handle = gzip.open(path, "wt", encoding="utf-8") if save_gzip_file else open(path, "w", encoding="utf-8")
                paths.append(path)
                index, count = index + 1, 0
            caption = " ".join(str(caption).split())
            cols = [caption, "", img_b64] if layout == "caption" else ["", caption, "", img_b64]
            handle.write("\t".join(cols) + "\n")
            count += 1
    finally:
        if handle is not None:
            handle.close()
    return paths


def _resolve(path, base_dir):
    if os.path.isabs(path) or os.path.exists(path):
        return path
    candidate = os.path.join(base_dir, path)
    return candidate if os.path.exists(candidate) else path


def read_part_paths(file_list):
    """Expand a ``*.filelist.list``, a ``*.filelist`` or a comma-separated mix into part paths.

    A file whose lines end in ``.filelist`` is treated as a list of filelists.  Repeated entries
    are kept.  Blank lines and ``#`` comments are ignored.

    Raises:
        FileNotFoundError: a listed file does not exist (the message names it and the list).
        ValueError: the expansion yields no part files.
    """
    parts = []
    for top in [p for p in str(file_list).split(",") if p.strip()]:
        top = top.strip()
        if not os.path.isfile(top):
            raise FileNotFoundError(f"--file_list: {top!r} does not exist")
        stack = [top]
        while stack:
            current = stack.pop(0)
            base = os.path.dirname(os.path.abspath(current))
            with open(current, "r", encoding="utf-8") as f:
                entries = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
            for entry in entries:
                path = _resolve(entry, base)
                if entry.endswith(".filelist") or entry.endswith(".filelist.list"):
                    if not os.path.isfile(path):
                        raise FileNotFoundError(f"filelist {entry!r} listed in {current!r} does not exist")
                    stack.append(path)
                else:
                    if not os.path.isfile(path):
                        raise FileNotFoundError(f"part file {entry!r} listed in {current!r} does not exist")
                    parts.append(path)
    if not parts:
        raise ValueError(f"--file_list {file_list!r} names no part files (empty filelist?)")
    return parts


def open_part(path):
    """Open a part file for reading text lines (gzip when the name ends in ``.gz``); bytes that
    are not UTF-8 become U+FFFD, so such a line fails to decode later instead of stopping the read."""
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, "r", encoding="utf-8", errors="replace")


def check_parts_readable(part_paths, layout="auto"):
    """Fail at start when no part holds a usable record, so that an endless reader over corrupt
    parts raises a clear error instead of spinning or dying in a DataLoader thread.

    Reads the distinct parts in order, each up to its first record that parses and decodes
    (however many bad lines come first), and returns at the first such record.

    Args:
        part_paths: part file paths (repeats are read once), e.g. ``LaionDataset.part_paths``.
        layout: column layout, see :func:`parse_laion_line`.

    Returns:
        ``(path, line_number)`` of the first usable record (line numbers start at 1).

    Raises:
        ValueError: no readable laion400m-format record in any part (names up to 10 parts, each
            with its number of lines and the last problem).
    """
    problems = []
    for path in dict.fromkeys(part_paths):
        n, last = 0, "empty file"
        try:
            with open_part(path) as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        _, img_b64 = parse_laion_line(line, layout)
                        decode_image_b64(img_b64)
                        return path, n
                    except ValueError as e:
                        last = f"line {n}: {e}"
            problems.append(f"{path}: no readable record in its {n} line(s) (last problem: {last})")
        except Exception as e:  # OSError / EOFError / zlib.error: unreadable or truncated part
            problems.append(f"{path}: cannot be read after {n} line(s) ({type(e).__name__}: {e}; last problem: {last})")
    raise ValueError("--file_list: no readable laion400m-format record in any part file:\n  " + "\n  ".join(problems[:10]))


class LaionDataset(paddle.io.IterableDataset):
    """A paddle ``IterableDataset`` over laion400m-format parts, sharded over ranks and workers.

    Each reader (``rank * num_workers + worker_id`` of ``world_size * num_workers``) takes the
    part entries ``i`` with ``i % num_readers == reader_id`` when there are at least as many
    entries as readers; otherwise every reader opens every part and keeps the lines whose
    global index ``% num_readers == reader_id``.  Either way each record is yielded exactly once
    per pass over all readers and no reader is left without data (so no rank waits forever).

    Bad records never stop the stream: a corrupt line (wrong column count, bad base64, bytes
    that are not UTF-8, undecodable or truncated image, or an error raised by ``process_fn``), a
    truncated gzip part (the rest of the part counts as one) and a part that cannot be opened
    are skipped; :attr:`num_skipped` counts them in this process and the first few are logged as
    ``line <n> of <part>`` with the reason (:class:`common.safe_data.BadSampleLog`).

    Records are read undecoded into the shuffle buffer and decoded when drawn, so
    :meth:`resume_at` can pass over the records a resumed run already trained on without decoding
    them.

    Call :meth:`check_readable` (or :func:`check_parts_readable`) before training so that a list
    of only corrupt parts fails at start.  A reader whose whole share of a pass still yields
    nothing raises ``RuntimeError`` (via :func:`common.safe_data.fail_reader`: also inside a
    single-process DataLoader thread, where a plain exception would hang the main thread)
    instead of looping forever.

    Args:
        file_list: see :func:`read_part_paths`.
        process_fn: ``f(image: PIL.Image RGB, caption: str) -> dict`` producing the sample
            (default: ``{"image": image, "caption": caption}``).  If it takes a keyword
            ``sample_index``, it also gets a number unique to the sample in the run (its index in
            its reader's stream, counted across passes, times the number of readers plus the
            reader id): seed its random choices with it and a resumed stream (:meth:`resume_at`)
            draws what the uninterrupted one drew.  If it (or its ``.transform``, e.g. the
            :class:`common.images.ImageTransform` of ``TextImageProcessor``) has a ``draft_size``
            that is not ``None`` (``(width, height)``), JPEG records are decoded at a reduced
            scale (:func:`decode_image_b64`).
        layout: column layout, see :func:`parse_laion_line`.
        shuffle: shuffle part order each pass (same order on every reader) and lines inside a
            ``buffer_size`` window.
        seed: base seed for the shuffles; pass ``p`` uses ``seed + p``.
        infinite: loop over passes forever (step-based training) instead of one pass.
        buffer_size: shuffle buffer length (records), used when ``shuffle``.
    """

    def __init__(self, file_list, process_fn=None, layout="auto", shuffle=True, seed=0, infinite=True, buffer_size=256):
        super().__init__()
        self.part_paths = read_part_paths(file_list)
        self.process_fn = process_fn
        self.layout = layout
        self.shuffle = shuffle
        self.seed = seed
        self.infinite = infinite
        self.buffer_size = buffer_size
        self.bad_log = BadSampleLog("laion reader", emit=logger.warning)
        self.num_read = 0

    @property
    def num_skipped(self):
        """Bad records (lines, truncated or unreadable parts) skipped in this process (int)."""
        return self.bad_log.count

    def check_readable(self):
        """:func:`check_parts_readable` on this dataset's parts; returns ``(path, line)`` of the
        first usable record.  Raises ``ValueError`` when no part has one."""
        return check_parts_readable(self.part_paths, self.layout)

    def resume_at(self, batches_per_rank, batch_size):
        """Make the next iteration start where a run that consumed ``batches_per_rank`` batches of
        ``batch_size`` on every rank stopped, without decoding the consumed records.

        A paddle ``DataLoader`` over an iterable dataset takes batch ``b`` of a rank from worker
        ``b % num_workers`` (round robin), so the stream of worker ``v`` had yielded
        ``ceil((batches_per_rank - v) / num_workers) * batch_size`` samples, and the next batch
        comes from worker ``batches_per_rank % num_workers``; the resumed loader's worker ``w``
        therefore continues the stream of worker ``(w + batches_per_rank) % num_workers``.  Each reader replays its
        stream -- the same part order and the same shuffle-buffer draws, which depend only on how many
        records were read -- and passes over that many records checking only their columns, base64
        and image header (no pixel decode, no ``process_fn``).  ``process_fn`` gets each sample's
        index in the reader's stream (see the class doc), so what follows is what the uninterrupted
        run drew.  Exact unless a consumed record had a valid header but undecodable pixels (then the
        resumed stream is one record later per such record).

        Raises:
            ValueError: negative ``batches_per_rank`` or ``batch_size`` < 1.
        """
        if batches_per_rank < 0 or batch_size < 1:
            raise ValueError(f"resume_at needs batches_per_rank >= 0 and batch_size >= 1, got {batches_per_rank}, {batch_size}")
        self._resume = (int(batches_per_rank), int(batch_size))

    def _stream_identity(self):
        """``(reader_id, num_readers, samples_to_skip)`` of this process/worker.  After
        :meth:`resume_at` the loader's first batch must be the one the uninterrupted run took next,
        from worker ``batches % num_workers``; a fresh loader starts at worker 0, so worker ``w``
        takes over the stream of worker ``(w + batches) % num_workers``."""
        batches, batch_size = getattr(self, "_resume", (0, 1))
        rank = int(os.environ.get("PADDLE_TRAINER_ID", "0"))
        world = int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))
        info = paddle.io.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        stream = (worker + batches) % workers
        skip = max(0, -(-(batches - stream) // workers)) * batch_size
        return rank * workers + stream, world * workers, skip

    def _iter_part(self, path, keep):
        """Raw records ``(where, line)`` of one part (not decoded); unreadable parts are counted."""
        line_index = 0
        try:
            f = open_part(path)
        except OSError as e:
            self.bad_log.record(path, f"cannot open the part ({type(e).__name__}: {e})")
            return
        with f:
            while True:
                try:
                    line = f.readline()
                except Exception as e:  # truncated / corrupt gzip stream: OSError, EOFError, zlib.error
                    self.bad_log.record(f"line {line_index + 1} of {path}", f"part truncated or corrupt after {line_index} lines ({type(e).__name__}: {e})")
                    break
                if not line:
                    break
                index, line_index = line_index, line_index + 1
                if line.strip() and keep(index):
                    yield f"line {index + 1} of {path}", line

    def _draft_size(self):
        """``process_fn.draft_size`` or ``process_fn.transform.draft_size`` (an
        :class:`common.images.ImageTransform` inside, as in ``TextImageProcessor``), else ``None``."""
        size = getattr(self.process_fn, "draft_size", None)
        if size is None:
            size = getattr(getattr(self.process_fn, "transform", None), "draft_size", None)
        return size

    def _decode(self, record, sample_index):
        """Raw record -> sample, or ``None`` for a bad record (counted and logged)."""
        where, line = record
        try:
            caption, img_b64 = parse_laion_line(line, self.layout)
            draft_size = self._draft_size()  # no keyword unless drafting: a wrapped or patched decoder keeps working
            image = decode_image_b64(img_b64) if draft_size is None else decode_image_b64(img_b64, draft_size=draft_size)
            if self.process_fn is None:
                return {"image": image, "caption": caption}
            if self._fn_takes_index:
                return self.process_fn(image, caption, sample_index=sample_index)
            return self.process_fn(image, caption)
        except Exception as e:
            self.bad_log.record(where, e)
            return None

    def _looks_valid(self, record):
        """The cheap check of a skipped record: columns, base64 and image header, no pixel decode."""
        where, line = record
        try:
            _, img_b64 = parse_laion_line(line, self.layout)
            Image.open(io.BytesIO(base64.b64decode(img_b64, validate=True)))  # reads the header only
            return True
        except Exception as e:
            self.bad_log.record(where, e)
            return False

    def _iter_pass(self, pass_index, reader_id, num_readers):
        parts = list(self.part_paths)
        if self.shuffle:
            random.Random(self.seed + pass_index).shuffle(parts)
        if len(parts) >= num_readers:
            for path in parts[reader_id::num_readers]:
                yield from self._iter_part(path, lambda i: True)
        else:
            # fewer parts than readers: every reader scans every part and keeps its share of lines
            counter = [0]

            def keep(_):
                mine = counter[0] % num_readers == reader_id
                counter[0] += 1
                return mine

            for path in parts:
                yield from self._iter_part(path, keep)

    def _iter_records(self, pass_index, rng, reader_id, num_readers):
        """One pass of raw records in training order: the part order, then a ``buffer_size``
        shuffle window whose draws depend only on the number of records read."""
        stream = self._iter_pass(pass_index, reader_id, num_readers)
        if not (self.shuffle and self.buffer_size > 1):
            yield from stream
            return
        buffer = []
        for record in stream:
            buffer.append(record)
            if len(buffer) >= self.buffer_size:
                yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer

    def __iter__(self):
        import inspect

        reader_id, num_readers, to_skip = self._stream_identity()
        try:
            self._fn_takes_index = self.process_fn is not None and "sample_index" in inspect.signature(self.process_fn).parameters
        except (TypeError, ValueError):
            self._fn_takes_index = False
        rng = random.Random(hash((self.seed, reader_id)) & 0xFFFFFFFF)
        sample_index, pass_index = 0, 0
        if to_skip:
            logger.info("laion reader %d: resuming after %d consumed samples (skipped without decoding)", reader_id, to_skip)
        while True:
            yielded = 0
            for record in self._iter_records(pass_index, rng, reader_id, num_readers):
                if to_skip:
                    if self._looks_valid(record):
                        to_skip -= 1
                        sample_index += 1
                        yielded += 1
                    continue
                sample = self._decode(record, sample_index * num_readers + reader_id)
                if sample is None:
                    continue
                sample_index += 1
                yielded += 1
                self.num_read += 1
                yield sample
            if yielded == 0:
                # an infinite loop over nothing would hang this rank (and every rank waiting on it)
                fail_reader(RuntimeError(
                    f"laion reader {reader_id}: a full pass over its share of {len(self.part_paths)} part file(s) gave no "
                    f"readable record ({self.bad_log.summary() or 'no lines'}); check the parts listed in the file list"
                ))
            pass_index += 1
            if not self.infinite:
                return
