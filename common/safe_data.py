"""Data readers that never hang: a bad sample is skipped, counted and logged; a dataset with
nothing usable fails at start.

Why this module exists: with ``num_workers=0`` paddle's ``DataLoader`` reads the dataset in a
helper thread, and an exception raised there ends that thread without telling the main thread,
which then waits forever for the next batch (with workers the error reaches the main process,
but a dead rank still leaves the other ranks of a distributed run waiting on a collective until
the gloo timeout).  So every reader in this repository

* catches the error of one sample (undecodable or truncated image, truncated ``.npy``, bad line)
  and goes on, counting it in a :class:`BadSampleLog` that logs the first few names and reasons;
* checks at construction that something is usable, and raises a ``ValueError`` naming the
  files otherwise;
* when it must give up at run time (more than a fraction of the samples bad, a laion reader's
  whole share unreadable) calls :func:`fail_reader`, which makes the process fail with the
  message instead of hanging.

Contents: :class:`BadSampleLog`, :func:`fail_reader`, :class:`SkippingDataset` (map-style base
class: a bad index is replaced by the next good one, so batch samplers still get full batches
and resumed runs see the same data), :func:`iter_jsonl` (JSON lines, bad lines skipped and named
``file:line``) and :func:`load_npy`.
"""
import io
import json
import logging
import sys
import threading

import numpy as np
import paddle.io

__all__ = [
    "DEFAULT_MAX_BAD_FRACTION",
    "MAX_LOGGED",
    "BadSampleLog",
    "fail_reader",
    "SkippingDataset",
    "iter_jsonl",
    "load_npy",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BAD_FRACTION = 0.5
"""A map-style dataset fails once more than this fraction of its samples turned out bad."""
MAX_LOGGED = 5
"""Bad samples logged one by one; after that only the running count is logged (at powers of 2)."""


def _reason(error):
    if isinstance(error, str):
        text = error
    elif type(error) is ValueError:  # the readers' own errors: the message says it all
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    text = " ".join(str(text).split())
    return text if len(text) <= 400 else text[:397] + "..."


class BadSampleLog:
    """Counts the bad samples of one reader (in this process) and logs the first few.

    Args:
        what: what is read, for the messages (e.g. ``"image folder 'data/faces'"``).
        max_logged: how many bad samples are logged one by one (name and reason); later ones only
            update the count, which is logged again whenever it reaches a power of two.
        emit: ``f(message: str)`` that reports a message; default: ``logging`` warning of this
            module's logger.

    Attributes:
        count: number of bad samples recorded (int).
        first: ``"name: reason"`` texts of the first ``max_logged`` ones (list of str).
    """

    def __init__(self, what, max_logged=MAX_LOGGED, emit=None):
        self.what = what
        self.max_logged = max_logged
        self.emit = emit or logger.warning
        self.count = 0
        self.first = []

    def record(self, name, error):
        """Count one bad sample ``name`` (a path, ``file:line``, ...) that failed with ``error``
        (an exception or a text); returns the new count."""
        self.count += 1
        reason = _reason(error)
        text = reason if str(name) in reason else f"{name}: {reason}"
        if len(self.first) < self.max_logged:
            self.first.append(text)
            self.emit(f"{self.what}: skipping {text} ({self.count} skipped so far)")
        elif self.count & (self.count - 1) == 0:
            self.emit(f"{self.what}: {self.count} bad samples skipped so far (the first: {self.first[0]})")
        return self.count

    def summary(self, limit=3):
        """One line: the count and the first ``limit`` bad samples (``""`` when there were none)."""
        if not self.count:
            return ""
        shown = "; ".join(self.first[:limit])
        more = f"; ... ({self.count - limit} more)" if self.count > limit else ""
        return f"{self.count} bad sample(s) skipped: {shown}{more}"


def _stop_paddle_loader_thread():
    """When called inside paddle's single-process DataLoader thread, kill its blocking queue so
    that the main thread raises instead of waiting forever; returns whether it found one."""
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self") if frame.f_code.co_name == "_thread_loop" else None
        if owner is not None and hasattr(owner, "_exit_thread_unexpectedly"):
            owner._exit_thread_unexpectedly()
            return True
        frame = frame.f_back
    return False


def fail_reader(error):
    """Raise ``error`` from a dataset so that the process fails instead of hanging.

    The message is logged first (so it shows in each rank's log and in the output of
    ``paddle.distributed.launch``).  Inside paddle's single-process DataLoader thread
    (``num_workers=0``) the loader is stopped first, so the main thread's ``next(loader)`` raises
    paddle's "Blocking queue is killed" error right after this message and its traceback, rather
    than waiting forever.  In the main thread and in DataLoader worker processes (whose errors
    paddle forwards to the main process) the error is simply raised.

    Args:
        error: the exception instance to raise (its message should name the files).

    Raises:
        ``error``, always.
    """
    logger.error("%s", error)
    if threading.current_thread() is not threading.main_thread():
        _stop_paddle_loader_thread()
    raise error


class SkippingDataset(paddle.io.Dataset):
    """Base class of map-style datasets whose samples may fail to load.

    A subclass implements :meth:`load_sample` (sample ``i``, or an exception when it cannot be
    read), optionally :meth:`sample_name` (a path for messages) and :meth:`check_sample`, calls
    ``super().__init__(what)`` first and :meth:`check_usable` at the end of its ``__init__``.

    ``dataset[i]`` returns ``load_sample(i)``; when that fails, the sample is counted, logged
    (:class:`BadSampleLog`, first few by name) and remembered, and the next index ``i+1, i+2, ...``
    (wrapping around) that loads is returned instead.  The replacement depends only on ``i`` and
    the files, so batches stay full and of the right size, and a resumed run sees the same
    samples.  When more than ``max_bad_fraction`` of all samples turned out bad in this process,
    :func:`fail_reader` raises a ``ValueError`` naming the first bad ones (so a mostly broken
    dataset fails instead of silently training on a few samples).

    Attributes:
        max_bad_fraction: float in ``[0, 1]``, default :data:`DEFAULT_MAX_BAD_FRACTION`.
        probe_size: at most this many samples (default 16) are checked by :meth:`check_usable`.
        bad_log: the :class:`BadSampleLog`; ``num_skipped`` is its count (per process: each
            DataLoader worker counts the samples it read).
    """

    max_bad_fraction = DEFAULT_MAX_BAD_FRACTION
    probe_size = 16

    def __init__(self, what):
        super().__init__()
        self.what = what
        self.bad_log = BadSampleLog(what)
        self._bad = {}

    # -- to implement ------------------------------------------------------------------------
    def load_sample(self, i):
        """Sample ``i`` (``0 <= i < len(self)``); raise any exception when it cannot be read."""
        raise NotImplementedError

    def sample_name(self, i):
        """Name of sample ``i`` in messages (a path); default ``"sample <i>"``."""
        return f"sample {i}"

    def check_sample(self, i):
        """Raise when sample ``i`` cannot be read; used by :meth:`check_usable`.  Default: load it
        (override for a check without side effects or a cheaper one)."""
        self.load_sample(i)

    # -- provided ----------------------------------------------------------------------------
    @property
    def num_skipped(self):
        """Number of distinct bad samples found in this process (int)."""
        return len(self._bad)

    def _mark_bad(self, i, error):
        self._bad[i] = _reason(error)
        self.bad_log.record(self.sample_name(i), error)
        n = len(self)
        if len(self._bad) > self.max_bad_fraction * n:
            fail_reader(ValueError(
                f"{self.what}: {len(self._bad)} of {n} samples cannot be read (more than max_bad_fraction="
                f"{self.max_bad_fraction:g}); the first ones:\n  " + "\n  ".join(self.bad_log.first)
            ))

    def try_load(self, i):
        """``load_sample(i)``, or ``None`` when sample ``i`` is bad (then counted and logged).

        Raises:
            ValueError: (via :func:`fail_reader`) more than ``max_bad_fraction`` bad samples.
        """
        if i in self._bad:
            return None
        try:
            return self.load_sample(i)
        except Exception as e:  # any failure of one sample: skip it, count it
            self._mark_bad(i, e)
            return None

    def check_usable(self):
        """Fail at start when nothing is usable: check samples spread evenly over the dataset
        (index 0 first, up to ``probe_size`` of them) until one reads.

        Raises:
            ValueError: the dataset is empty, none of the checked samples reads (the message
                names them and why), or more than ``max_bad_fraction`` of all samples are bad.
        """
        n = len(self)
        if n == 0:
            raise ValueError(f"{self.what}: no samples")
        for i in sorted({k * n // min(n, self.probe_size) for k in range(min(n, self.probe_size))}):
            if i in self._bad:
                continue
            try:
                self.check_sample(i)
                return
            except Exception as e:
                self._mark_bad(i, e)
        checked = f"its {n} samples" if n <= self.probe_size else f"{self.probe_size} samples checked (spread over all {n})"
        raise ValueError(f"{self.what}: none of {checked} can be read:\n  " + "\n  ".join(self.bad_log.first))

    def __getitem__(self, i):
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.what}: index {i} out of range for {n} samples")
        i %= n
        for j in range(i, i + n):
            sample = self.try_load(j % n)
            if sample is not None:
                return sample
        return fail_reader(ValueError(f"{self.what}: no sample of {n} can be read ({self.bad_log.summary()})"))


def iter_jsonl(path, bad=None, required=()):
    """Yield ``(line_number, record)`` for each usable line of the JSON-lines file ``path``.

    Blank lines are ignored.  A line that is not UTF-8, not JSON, not a JSON object, or lacks one
    of the ``required`` keys is skipped and recorded in ``bad`` as ``"<path>:<line>"`` (so the
    first few are logged with the reason); nothing is raised for it.

    Args:
        path: the file (a UTF-8 BOM at its start is accepted).
        bad: a :class:`BadSampleLog` (one is made when ``None``; pass your own to read its count).
        required: keys every record must have.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    bad = bad if bad is not None else BadSampleLog(f"json lines {path!r}")
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                bad.record(f"{path}:{n}", f"not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1})")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                bad.record(f"{path}:{n}", f"not JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(record, dict):
                bad.record(f"{path}:{n}", f"expected a JSON object, got {type(record).__name__}")
                continue
            missing = [k for k in required if k not in record]
            if missing:
                bad.record(f"{path}:{n}", f"missing key(s) {missing} (has {sorted(record)[:8]})")
                continue
            yield n, record


_NPY_MAGIC = b"\x93NUMPY"
_NPY_HEADERS = {}  # (version, header bytes) -> (dtype, shape, fortran_order): one parse per distinct header
_NPY_HEADERS_MAX = 256


def _npy_header(f):
    """``(dtype, shape, fortran_order)`` of the ``.npy`` file ``f`` (opened in binary mode, at
    its start), leaving ``f`` at the first data byte.  A header seen before is not parsed again
    (numpy's own parser evaluates it as a Python literal, the main cost of ``np.load`` on a small
    file); one seen first is parsed with ``numpy.lib.format.read_array_header_1_0`` / ``_2_0``.

    Raises:
        ValueError: not a ``.npy`` file, a truncated header, an unsupported format version, or
            an object dtype (that would need pickles).
    """
    start = f.read(8)  # magic string + format version (major, minor)
    if len(start) < 8 or start[:6] != _NPY_MAGIC:
        raise ValueError("not a .npy file (no NUMPY magic string)" if len(start) >= 6 else "file too short for a .npy header")
    major, minor = start[6], start[7]
    if (major, minor) not in ((1, 0), (2, 0)):
        raise ValueError(f"unsupported .npy format version {major}.{minor}")
    size_bytes = f.read(2 if major == 1 else 4)
    header = f.read(int.from_bytes(size_bytes, "little")) if len(size_bytes) == (2 if major == 1 else 4) else b""
    if not header or len(header) != int.from_bytes(size_bytes, "little"):
        raise ValueError("truncated .npy header")
    key = (major, header)
    meta = _NPY_HEADERS.get(key)
    if meta is None:
        reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = reader(io.BytesIO(size_bytes + header))
        if dtype.hasobject:
            raise ValueError("object arrays are not read (they need pickles)")
        meta = (dtype, tuple(int(n) for n in shape), bool(fortran_order))
        if len(_NPY_HEADERS) < _NPY_HEADERS_MAX:
            _NPY_HEADERS[key] = meta
    return meta


def load_npy(path, what="array"):
    """Read a ``.npy`` file (no pickles) with errors that name the file: the same array as
    ``numpy.load(path, allow_pickle=False)``, about twice as fast on the small per-sample feature
    files (a header seen before is not parsed again, :func:`_npy_header`; then one read of the
    data into a fresh array).  Memory-mapping (``mmap_mode="r"``) was measured slower for files of
    16-240 KB (bench/README.md "Readers").

    Returns:
        a writable ``numpy.ndarray`` of the stored shape and dtype.

    Raises:
        ValueError: the file is missing, truncated or not a ``.npy`` file, or holds objects
            (``path`` and ``what`` in the message).
    """
    try:
        with open(path, "rb") as f:
            dtype, shape, fortran_order = _npy_header(f)
            count = int(np.prod(shape, dtype=np.int64))
            data = np.fromfile(f, dtype=dtype, count=count) if count else np.empty(0, dtype)
            if data.size != count:
                raise ValueError(f"truncated data: {data.size} of {count} values")
        return data.reshape(shape, order="F" if fortran_order else "C")
    except Exception as e:  # FileNotFoundError, truncated file, bad header, ...
        raise ValueError(f"{path!r}: cannot load {what} ({type(e).__name__}: {e})") from None
