"""Never lose a run: one run per output folder, a clean stop on SIGTERM/SIGINT, a stop on NaN/inf.

Every training script (plain loops and the paddlenlp-Trainer examples, see
:mod:`common.safe_trainer`) uses the same three pieces:

* :func:`start_run` once at start: takes the lock file ``<output_dir>/.run.lock`` (a second run
  into the same folder fails at once with :class:`OutputDirInUseError`; a lock whose process is
  dead is taken over), removes unfinished ``checkpoint-*.tmp-<pid>`` folders of dead processes,
  validates ``--resume_from_checkpoint`` (``latest`` = newest *complete* checkpoint) and moves
  checkpoints newer than the resume point into ``abandoned-<time>/``.  Rank 0 does the work and
  every rank gets the same answer (or the same error).
* :class:`TrainingGuard` around the training loop: :meth:`TrainingGuard.check_step` after the
  backward pass and before the optimizer step all-reduces one flag per step, so that every rank
  agrees on (a) whether the loss or a gradient is non-finite -- the run stops with
  :class:`NonFiniteError` naming the step, before the bad update is applied and before anything
  is saved (``--skip_nan_steps N`` skips up to N such steps instead) -- and (b) whether SIGTERM or
  SIGINT arrived on any rank: the loop then saves a checkpoint at this step boundary and calls
  :meth:`TrainingGuard.interrupted`, which exits with status ``128 + signal``.  A second SIGINT
  stops at once; repeated SIGTERMs (``paddle.distributed.launch`` sends several, then SIGKILLs
  its workers after 30 s) do not interrupt the save.  :meth:`TrainingGuard.check_weights` refuses to save non-finite weights.
* ``--skip_nan_steps`` comes from :func:`add_guard_arguments` (argparse) or
  :class:`GuardArguments` (``PdArgumentParser``).
"""
import atexit
import datetime
import json
import math
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from common.checkpoint import (COMPLETE_FILE, STATE_FILE, checkpoint_step, clean_stale_tmp, list_checkpoints, pid_alive, resolve_checkpoint,
                               set_aside_newer_checkpoints)
from common.logging_utils import get_logger

__all__ = ["LOCK_FILE", "OutputDirInUseError", "NonFiniteError", "TrainingInterrupted", "OutputDirLock", "Run", "start_run", "TrainingGuard",
           "GuardArguments", "add_guard_arguments"]

LOCK_FILE = ".run.lock"
SKIP_NAN_HELP = ("skip up to N optimisation steps whose loss or gradient is NaN/inf (the update is not applied) before stopping; "
                 "0 (default): the first one stops the run with an error naming the step")
logger = get_logger("run_guard")


class OutputDirInUseError(RuntimeError):
    """Another live run holds the output folder's lock file."""


class NonFiniteError(RuntimeError):
    """The loss, a gradient or the weights became NaN/inf; the run stopped without saving them."""


class TrainingInterrupted(SystemExit):
    """SIGTERM/SIGINT: a checkpoint was saved at a step boundary; exits with ``128 + signal``."""

    def __init__(self, signum, message):
        super().__init__(128 + int(signum))
        self.signum, self.message = int(signum), message

    def __str__(self):
        return self.message


# ---------------------------------------------------------------------------------- lock file
def _process_start(pid):
    """Start time of ``pid`` in clock ticks since boot (``/proc``), or ``None`` where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


class OutputDirLock:
    """Lock file ``<output_dir>/.run.lock`` holding the owner's pid, host, start time and command.

    Args:
        output_dir: the run folder (created if missing).
        arg_name: the command-line option naming the folder, for the error message.

    :meth:`acquire` raises :class:`OutputDirInUseError` when a live process holds the lock.  A lock
    written on this host by a process that is gone (or whose pid now belongs to a process started
    later) is stale and taken over; a lock from another host cannot be checked and counts as held.
    """

    def __init__(self, output_dir, arg_name="--output_dir"):
        self.output_dir, self.arg_name = str(output_dir), arg_name
        self.path = os.path.join(self.output_dir, LOCK_FILE)
        self.held = False

    def _read(self, path=None):
        try:
            with open(path or self.path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _is_stale(self, holder):
        if not holder:  # empty / unreadable: a writer crashed between create and write
            try:
                return time.time() - os.path.getmtime(self.path) > 5
            except OSError:
                return True
        if holder.get("host") != socket.gethostname():
            return False
        pid = int(holder.get("pid", -1))
        if pid == os.getpid() and not self.held:
            return False  # another run inside this very process
        if not pid_alive(pid):
            return True
        start = holder.get("start")
        return start is not None and _process_start(pid) not in (None, start)

    def acquire(self):
        """Take the lock (see the class doc). Returns ``self``.

        Raises:
            OutputDirInUseError: a live run holds it; the message names its pid, host, start and command.
        """
        os.makedirs(self.output_dir, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid()),
              "time": datetime.datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv)}
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                if holder is None:
                    continue  # released meanwhile
                if not self._is_stale(holder):
                    raise OutputDirInUseError(
                        f"{self.arg_name} {self.output_dir!r} is in use by another training run (pid {holder.get('pid')} on "
                        f"{holder.get('host')}, started {holder.get('time')}: {holder.get('command')!r}); lock file {self.path}. "
                        f"Wait for that run to end or pass another {self.arg_name}; if that run is gone (e.g. it ran on "
                        "another host), delete the lock file."
                    )
                # take the stale lock over: rename it away (only one contender wins), re-check what was renamed
                aside = f"{self.path}.stale-{os.getpid()}"
                try:
                    os.replace(self.path, aside)
                except FileNotFoundError:
                    continue
                if self._read(aside) != holder and not os.path.exists(self.path):
                    os.replace(aside, self.path)  # a fresh lock appeared meanwhile: put it back, try again
                    continue
                os.remove(aside)
                logger.warning("took over the stale lock of pid %s (%s, no longer running): %s", holder.get("pid"), holder.get("time"), self.path)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return self
        raise OutputDirInUseError(f"could not take the lock file {self.path} (it keeps changing); is another run starting in {self.output_dir!r}?")

    def release(self):
        """Remove the lock file if this object holds it (idempotent)."""
        if self.held:
            self.held = False
            holder = self._read()
            if holder and holder.get("pid") == os.getpid():
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# ---------------------------------------------------------------------------------- start of a run
class Run:
    """What :func:`start_run` returns: ``output_dir``, ``resume`` (checkpoint folder or ``None``)
    and the lock (released by :meth:`close`, on ``with`` exit, or at interpreter exit)."""

    def __init__(self, output_dir, resume, lock):
        self.output_dir, self.resume, self.lock = output_dir, resume, lock

    def close(self):
        """Release the output folder's lock (idempotent)."""
        if self.lock is not None:
            self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _start_step(path):
    """Global step of a checkpoint folder: from its marker, else from its name (``None`` if unknown)."""
    try:
        with open(os.path.join(path, COMPLETE_FILE)) as f:
            return int(json.load(f)["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return checkpoint_step(path)


def start_run(output_dir, resume_from_checkpoint=None, legacy_required=(STATE_FILE,), arg_name="--output_dir"):
    """Prepare ``output_dir`` for a run; call on every rank once the arguments are parsed.

    Rank 0 takes the lock (:class:`OutputDirLock`), removes unfinished checkpoint folders of dead
    processes, resolves ``resume_from_checkpoint`` (``None`` / ``"latest"`` / a folder, see
    :func:`common.checkpoint.resolve_checkpoint`) and moves every checkpoint newer than the step
    resumed from (all of them on a fresh start) into ``abandoned-<time>/``.  The other ranks get
    rank 0's result, or fail with its error, so no rank is left waiting.

    Args:
        output_dir: the run folder (checkpoints, lock file).
        resume_from_checkpoint: the ``--resume_from_checkpoint`` value.
        legacy_required: files a checkpoint without completeness marker must hold to count as
            complete (``training_state.pdparams`` for the plain loops, the Trainer's files for
            the Trainer examples).
        arg_name: the option naming ``output_dir``, for messages (``--results_dir`` ...).

    Returns:
        a :class:`Run` (use it in ``with`` or call ``close()``; the lock is also released at exit).

    Raises:
        OutputDirInUseError: another live run uses ``output_dir``.
        FileNotFoundError: the checkpoint to resume from is incomplete (the message names what is missing).
        RuntimeError: on ranks > 0, when rank 0 failed with one of these.
    """
    from common.distributed import get_rank, get_world_size, init_distributed

    init_distributed()
    output_dir = str(output_dir)
    lock = OutputDirLock(output_dir, arg_name) if get_rank() == 0 else None
    resume, error = None, None
    if lock is not None:
        try:
            lock.acquire()
            clean_stale_tmp(output_dir)
            resume = resolve_checkpoint(resume_from_checkpoint, output_dir, legacy_required)
            step = _start_step(resume) if resume else 0
            if step is None:
                logger.warning("cannot tell the step of %s: checkpoints in %s are left in place", resume, output_dir)
            else:
                set_aside_newer_checkpoints(output_dir, step)
        except Exception as e:  # noqa: BLE001 -- re-raised below, after telling the other ranks
            error = e
            lock.release()
    if get_world_size() > 1:
        import paddle.distributed as dist

        shared = [None if error is None else f"{type(error).__name__}: {error}", resume]
        dist.broadcast_object_list(shared, src=0)
        if get_rank() != 0:
            if shared[0] is not None:
                raise RuntimeError(f"rank 0 could not start the run: {shared[0]}")
            resume = shared[1]
    if error is not None:
        raise error
    if resume:
        logger.info("resuming from %s", resume)
    run = Run(output_dir, resume, lock)
    atexit.register(run.close)
    return run


# ---------------------------------------------------------------------------------- NaN + signals
def _is_tensor(x):
    import paddle

    return isinstance(x, paddle.Tensor)


def _value(x):
    if _is_tensor(x):
        return float(x.detach().astype("float32").sum())
    return float(x)


def _all_finite(tensors):
    """True when every tensor in ``tensors`` holds only finite values (one fused reduction)."""
    import paddle

    sums = [t.astype("float32").sum() if t.dtype in (paddle.float16, paddle.bfloat16) else t.sum() for t in tensors]
    if not sums:
        return True
    return bool(paddle.isfinite(paddle.stack([s.astype("float32") for s in sums]).sum()))


def _agree(values):
    """Element-wise maximum of a list of ints over all ranks (identity in one process)."""
    from common.distributed import get_world_size

    if get_world_size() <= 1:
        return values
    import paddle
    import paddle.distributed as dist

    t = paddle.to_tensor(values, dtype="int64")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [int(v) for v in t.numpy()]


class TrainingGuard:
    """Per-step NaN/inf check and SIGTERM/SIGINT handling, identical on every rank.

    Args:
        output_dir: run folder; error messages name its newest complete checkpoint.
        skip_nan_steps: how many non-finite steps to skip (not applied) before stopping.
        signals: signals that request a checkpoint-and-stop (handlers installed by ``with``).
        legacy_required: passed to :func:`common.checkpoint.list_checkpoints` for messages.

    Use ``with TrainingGuard(...) as guard:`` around the loop (installs and restores the signal
    handlers; usable without ``with``, then signals keep their default behaviour); per step::

        loss.backward()
        if guard.check_step(step + 1, loss, model.parameters()):   # all ranks, every step
            optimizer.step()
        ...
        if guard.stop_requested:
            save_checkpoint(...)                                     # the usual save
            guard.interrupted(step, path)                            # raises TrainingInterrupted
    """

    def __init__(self, output_dir=None, skip_nan_steps=0, signals=(signal.SIGTERM, signal.SIGINT), legacy_required=(STATE_FILE,)):
        if skip_nan_steps is None or int(skip_nan_steps) < 0:
            raise ValueError(f"--skip_nan_steps must be >= 0, got {skip_nan_steps!r}")
        self.output_dir, self.skip_nan_steps, self.legacy_required = output_dir, int(skip_nan_steps), legacy_required
        self.signals, self._previous = tuple(signals), {}
        self.skipped = 0
        self.received = 0  # signal number seen by this process
        self.stop_signal = 0  # signal number agreed by all ranks at the last check

    # -- signals
    def _handler(self, signum, frame):
        if self.received:
            if signum == signal.SIGINT:  # Ctrl-C twice: give up at once
                self.restore_signals()
                raise KeyboardInterrupt
            # repeated SIGTERM: paddle.distributed.launch sends several within a second when it stops
            # its workers (and SIGKILLs them 30 s later), so it must not cut the save short
            logger.warning("received %s again: still saving the checkpoint (SIGKILL stops at once)", signal.Signals(signum).name)
            return
        self.received = signum
        logger.warning("received %s: saving a checkpoint after the current step, then stopping%s", signal.Signals(signum).name,
                       " (Ctrl-C again stops at once)" if signum == signal.SIGINT else "")

    def install_signals(self):
        """Route the stop signals to this guard (main thread only; elsewhere a no-op)."""
        import threading

        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handler)

    def restore_signals(self):
        """Put back the signal handlers that were installed before :meth:`install_signals`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def __enter__(self):
        self.install_signals()
        return self

    def __exit__(self, *exc):
        self.restore_signals()

    @property
    def stop_requested(self):
        """True once every rank knows that one of them received a stop signal (set by :meth:`check_step`)."""
        return bool(self.stop_signal)

    # -- checks
    def _newest(self):
        if not self.output_dir:
            return "none"
        found = list_checkpoints(self.output_dir, self.legacy_required)
        return found[-1][1] if found else "none yet"

    def check_step(self, step, loss, parameters=None):
        """Decide, identically on every rank, whether to apply the update of ``step``.

        Call after the backward pass and before ``optimizer.step()`` on every rank, every step.

        Args:
            step: the global step this update would complete (for messages).
            loss: this rank's loss (tensor or float).
            parameters: parameters whose gradients must be finite too (``None``: loss only, e.g.
                with a GradScaler, whose scaled gradients may legitimately overflow).

        Returns:
            True: apply it.  False: skip it (non-finite, within ``--skip_nan_steps``).

        Raises:
            NonFiniteError: the loss or a gradient is NaN/inf on some rank and the skip budget is spent.
        """
        loss_value = _value(loss) if loss is not None else 0.0
        grads = [p.grad for p in parameters if getattr(p, "grad", None) is not None] if parameters is not None else []
        grads_ok = _all_finite(grads)
        bad_here = int(not math.isfinite(loss_value) or not grads_ok)
        bad, sig = _agree([bad_here, int(self.received)])
        if sig:
            self.stop_signal = sig
        if not bad:
            return True
        self.skipped += 1
        detail = f"this rank: loss {loss_value:.6g}, gradients {'finite' if grads_ok else 'NOT finite'}"
        if self.skipped > self.skip_nan_steps:
            raise NonFiniteError(
                f"non-finite loss or gradient at step {step} ({detail}): training stopped before applying this update; "
                f"nothing was saved after it. Newest complete checkpoint: {self._newest()}. Lower --learning_rate or check "
                "the data, then resume with --resume_from_checkpoint latest (--skip_nan_steps N skips up to N such steps)."
            )
        logger.warning("step %d: non-finite loss or gradient (%s): update skipped (%d of --skip_nan_steps %d)", step, detail,
                       self.skipped, self.skip_nan_steps)
        return False

    def check_weights(self, step, parameters, what="checkpoint"):
        """Refuse to save NaN/inf weights; call on every rank before a save.

        Raises:
            NonFiniteError: some rank's ``parameters`` hold NaN/inf (nothing has been written).
        """
        params = [p for p in parameters]
        (bad,) = _agree([int(not _all_finite(params))])
        if bad:
            raise NonFiniteError(
                f"the weights are NaN/inf at step {step}: the {what} of step {step} was NOT written, the older checkpoints are kept. "
                f"Newest complete checkpoint: {self._newest()}. Lower --learning_rate and resume with --resume_from_checkpoint latest."
            )

    def interrupted(self, step, checkpoint=None):
        """After the checkpoint of ``step`` was saved because of a stop signal: log and exit.

        Raises:
            TrainingInterrupted: always (a ``SystemExit`` with status ``128 + signal``).
        """
        name = signal.Signals(self.stop_signal or self.received or signal.SIGTERM).name
        where = f"saved {checkpoint}" if checkpoint else "checkpoint saved"
        message = f"stopped by {name} at step {step}: {where}; continue with --resume_from_checkpoint latest"
        logger.warning(message)
        raise TrainingInterrupted(self.stop_signal or self.received or signal.SIGTERM, message)


# ---------------------------------------------------------------------------------- arguments
@dataclass
class GuardArguments:
    """``--skip_nan_steps`` for scripts parsed with ``PdArgumentParser``."""

    skip_nan_steps: int = field(default=0, metadata={"help": SKIP_NAN_HELP})


def add_guard_arguments(parser):
    """Add ``--skip_nan_steps`` to an ``argparse`` parser; returns the parser."""
    parser.add_argument("--skip_nan_steps", type=int, default=0, help=SKIP_NAN_HELP)
    return parser
