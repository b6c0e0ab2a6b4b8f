"""Training-state checkpoints: atomic folders, ``latest`` resume, ``save_total_limit``, RNG state.

A checkpoint is a folder ``<output_dir>/checkpoint-<step>/``.  The plain training loops put one
``paddle.save`` dict of everything needed to continue in ``training_state.pdparams``
(model/EMA/optimizer/lr-scheduler state dicts, ``step``, every rank's RNG state, data position,
args) plus any extra files (e.g. a ``save_pretrained`` model folder); the paddlenlp Trainer
examples write the Trainer's files (see :mod:`common.safe_trainer`).  Either way the folder is
first written as ``checkpoint-<step>.tmp-<pid>``, its files are fsynced, a completeness marker
``checkpoint_complete.json`` (every file with its size) is written last, and only then is it
renamed to ``checkpoint-<step>``: a kill or a full disk mid-save never leaves a half-written
``checkpoint-<step>``, and ``latest`` only ever picks a folder whose marker matches its files.

Around a run (all called by :func:`common.run_guard.start_run`): :func:`clean_stale_tmp` removes
``*.tmp-<pid>`` folders of dead processes, :func:`resolve_checkpoint` validates the folder to
resume from (naming what is missing), :func:`set_aside_newer_checkpoints` moves checkpoints
newer than the resume point into ``abandoned-<time>/`` so a later ``latest`` cannot jump back to
the abandoned run, and :func:`prune_checkpoints` never deletes the checkpoint resumed from.
"""
import contextlib
import datetime
import json
import os
import random
import re
import shutil
import socket

import numpy as np
import paddle

__all__ = [
    "optimizer_state", "load_optimizer_state", "get_rng_state", "set_rng_state", "preserve_rng_state", "gather_rng_states",
    "restore_rank_rng_state", "save_checkpoint", "finalize_checkpoint", "list_checkpoints", "checkpoint_problems", "resolve_checkpoint",
    "load_checkpoint", "replace_dir", "fsync_tree", "prune_checkpoints", "clean_stale_tmp", "set_aside_newer_checkpoints",
    "checkpoint_step", "pid_alive", "STATE_FILE", "COMPLETE_FILE",
]

STATE_FILE = "training_state.pdparams"
COMPLETE_FILE = "checkpoint_complete.json"  # written last, lists every file of the checkpoint with its size
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
_TMP_RE = re.compile(r"^checkpoint-\d+(?:\.tmp|\.old)-(\d+)$")
_logger = None


def _log():
    global _logger
    if _logger is None:
        from common.logging_utils import get_logger

        _logger = get_logger("checkpoint")
    return _logger


def optimizer_state(optimizer, parameters):
    """``optimizer.state_dict()`` together with the names of ``parameters`` (in order): the one
    optimizer format of every plain-loop checkpoint, ``{"state": ..., "param_names": [...]}``.

    Paddle keys optimizer slots by each parameter's generated unique name (``conv2d_8.w_0``),
    which differs when the model is built again in the same process; storing the names lets
    :func:`load_optimizer_state` map the slots onto any freshly built copy of the model.

    ``parameters`` is the exact list the optimizer was given, in its order: it may span several
    networks and loose parameters (the VAE's generator optimizer holds decoder + encoder +
    the loss's learned log-variance).  A loop with several optimizers (the VAE's generator and
    discriminator) stores one such dict per optimizer under its own key.
    """
    return {"state": optimizer.state_dict(), "param_names": [p.name for p in parameters]}


def load_optimizer_state(optimizer, saved, parameters):
    """Restore a dict from :func:`optimizer_state` into ``optimizer`` whose parameters are
    ``parameters`` (same architecture and order as when saved).

    Also reads the position-keyed format that ``autoencoder/train_vae.py`` checkpoints held
    before this helper was shared (a bare state dict whose slots are named ``param<i>_...``).

    Raises:
        ValueError: the number of parameters differs from the saved one.
    """
    parameters = list(parameters)
    if "param_names" not in saved:  # older VAE checkpoints: slots keyed by position, param<i>
        saved = {"state": saved, "param_names": [f"param{i}" for i in range(len(parameters))]}
    new_names = [p.name for p in parameters]
    if len(new_names) != len(saved["param_names"]):
        raise ValueError(f"optimizer state was saved for {len(saved['param_names'])} parameters, the model has {len(new_names)}")
    mapping = dict(zip(saved["param_names"], new_names))
    old_sorted = sorted(mapping, key=len, reverse=True)

    def rename(key):
        for old in old_sorted:
            if key == old or (key.startswith(old) and key[len(old)] == "_"):
                return mapping[old] + key[len(old):]
        return key

    state = {}
    for key, value in saved["state"].items():
        if key == "master_weights" and isinstance(value, dict):
            state[key] = {rename(k): v for k, v in value.items()}
        else:
            state[rename(key)] = value
    optimizer.set_state_dict(state)


def get_rng_state():
    """Python, numpy and paddle (CPU generator) RNG states as a picklable dict."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "paddle": paddle.get_rng_state()}


def set_rng_state(state):
    """Restore a dict made by :func:`get_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    paddle.set_rng_state(state["paddle"])


@contextlib.contextmanager
def preserve_rng_state():
    """Run a block (e.g. sampling a preview grid) without disturbing the training RNG streams,
    so a run that samples mid-training and a run resumed from its checkpoint stay identical."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def gather_rng_states():
    """Every rank's :func:`get_rng_state` as a list indexed by rank (``[own]`` in one process).

    A collective under several processes: every rank must call it at the same point (e.g. just
    before rank 0 writes a checkpoint), so a checkpoint holds every rank's RNG state.
    """
    from common.distributed import get_world_size

    if get_world_size() <= 1:
        return [get_rng_state()]
    states = []
    paddle.distributed.all_gather_object(states, get_rng_state())
    return states


def restore_rank_rng_state(saved, rank=None, world_size=None):
    """Restore this rank's RNG state from what :func:`gather_rng_states` saved (a list by rank).

    A single dict (checkpoints of older versions hold rank 0's state only) is restored on every
    rank, with a warning when there are several ranks (they then all draw the same noise).  A
    list saved by a different number of processes is not an exact continuation: each rank below
    the saved count restores its own state, the others keep their fresh per-rank seeds (warned).
    """
    from common.distributed import get_rank, get_world_size

    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if isinstance(saved, dict):
        if world_size > 1:
            _log().warning("the checkpoint holds one RNG state (saved by an older version): every rank restores rank 0's state")
        set_rng_state(saved)
        return
    if len(saved) != world_size and rank == 0:
        _log().warning("the checkpoint holds the RNG states of %d process(es), this run has %d: not an exact continuation",
                       len(saved), world_size)
    if rank < len(saved):
        set_rng_state(saved[rank])


# -- folders -----------------------------------------------------------------------------------
def checkpoint_step(path):
    """The step of a ``checkpoint-<step>`` folder path, or ``None`` for another name."""
    m = _CKPT_RE.match(os.path.basename(os.path.normpath(str(path))))
    return int(m.group(1)) if m else None


def pid_alive(pid):
    """Whether process ``pid`` exists on this host (``False`` for ``pid <= 0``)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _fsync_path(path, directory=False):
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not support fsync on directories
        pass
    finally:
        os.close(fd)


def fsync_tree(path):
    """fsync every file and folder below ``path`` (and ``path`` itself), so a rename after it
    publishes data that is on disk, not only in the page cache."""
    for root, dirs, files in os.walk(path):
        for name in files:
            _fsync_path(os.path.join(root, name))
        _fsync_path(root, directory=True)


def _file_sizes(folder):
    sizes = {}
    for root, _, files in os.walk(folder):
        for name in files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, folder)
            if rel != COMPLETE_FILE:
                sizes[rel.replace(os.sep, "/")] = os.path.getsize(full)
    return sizes


def finalize_checkpoint(tmp, final, step):
    """Publish the fully written folder ``tmp`` as checkpoint ``final``: write the completeness
    marker (every file with its size), fsync everything, rename, fsync the parent folder.

    Args:
        tmp: the folder holding every file of the checkpoint (same file system as ``final``).
        final: ``<output_dir>/checkpoint-<step>``; an existing one is replaced atomically.
        step: the global step, recorded in the marker.
    """
    marker = {"step": int(step), "files": _file_sizes(tmp), "time": datetime.datetime.now().isoformat(timespec="seconds"),
              "host": socket.gethostname(), "pid": os.getpid()}
    part = os.path.join(tmp, COMPLETE_FILE + ".part")
    with open(part, "w") as f:
        json.dump(marker, f, indent=1)
    os.replace(part, os.path.join(tmp, COMPLETE_FILE))
    fsync_tree(tmp)
    replace_dir(tmp, final)
    _fsync_path(os.path.dirname(os.path.abspath(final)), directory=True)
    return final


def checkpoint_problems(path, legacy_required=(STATE_FILE,)):
    """What is wrong with checkpoint folder ``path`` (an empty list: complete and loadable).

    A folder with the marker :data:`COMPLETE_FILE` must still hold every file the marker lists,
    with the recorded size.  A folder without it (written by an older version, or a non-atomic
    save that was interrupted) counts as complete only when every name in ``legacy_required``
    exists; otherwise the marker and the missing names are reported.
    """
    if not os.path.isdir(path):
        return [f"{path!r} is not a folder"]
    marker_path = os.path.join(path, COMPLETE_FILE)
    if os.path.isfile(marker_path):
        try:
            with open(marker_path) as f:
                files = json.load(f)["files"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            return [f"{COMPLETE_FILE} is unreadable ({e})"]
        problems = []
        for rel, size in sorted(files.items()):
            full = os.path.join(path, *rel.split("/"))
            if not os.path.isfile(full):
                problems.append(f"{rel} is missing")
            elif os.path.getsize(full) != size:
                problems.append(f"{rel} has {os.path.getsize(full)} bytes, {size} were written")
        return problems
    missing = [name for name in legacy_required if not os.path.exists(os.path.join(path, name))]
    if missing:
        return [f"no {COMPLETE_FILE} (the save did not finish)"] + [f"{name} is missing" for name in missing]
    return []


def list_checkpoints(output_dir, legacy_required=(STATE_FILE,), complete_only=True):
    """Checkpoint folders ``checkpoint-<step>`` in ``output_dir`` as ``[(step, path)]`` sorted by
    step; only complete ones (:func:`checkpoint_problems` empty) unless ``complete_only=False``."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        m = _CKPT_RE.match(name)
        path = os.path.join(output_dir, name)
        if m and os.path.isdir(path) and (not complete_only or not checkpoint_problems(path, legacy_required)):
            found.append((int(m.group(1)), path))
    return sorted(found)


def replace_dir(tmp, final):
    """Move the finished folder ``tmp`` to ``final``, replacing an existing ``final`` without
    ever leaving ``final`` half-written (the old one is moved aside first, then deleted)."""
    if os.path.exists(final):
        old = f"{final}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _same(a, b):
    return os.path.abspath(str(a)) == os.path.abspath(str(b))


def prune_checkpoints(output_dir, save_total_limit, protect=(), legacy_required=(STATE_FILE,)):
    """Keep the ``save_total_limit`` newest complete checkpoints (``None``/``<= 0``: keep all).

    Never deletes a folder in ``protect`` (the checkpoint this run resumed from) nor the newest
    complete one; incomplete ``checkpoint-<step>`` folders older than the newest complete one are
    removed too (they cannot be resumed).  Call on the writing rank only.  Returns the deleted paths.
    """
    if not save_total_limit or save_total_limit <= 0:
        return []
    every = list_checkpoints(output_dir, legacy_required, complete_only=False)
    complete = [(s, p) for s, p in every if not checkpoint_problems(p, legacy_required)]
    if not complete:
        return []
    keep = {p for _, p in complete[-save_total_limit:]}
    newest = complete[-1][0]
    deleted = []
    for step, path in every:
        if path in keep or any(_same(path, q) for q in protect):
            continue
        if (step, path) in complete or step < newest:
            shutil.rmtree(path, ignore_errors=True)
            deleted.append(path)
    return deleted


def save_checkpoint(output_dir, step, state, write_extra=None, save_total_limit=None, protect=()):
    """Atomically write ``checkpoint-<step>`` and prune old ones. Call on rank 0 only.

    Args:
        output_dir: folder holding the checkpoints (created if missing).
        step: global optimisation step (int), used in the folder name.
        state: dict for ``paddle.save`` (state dicts, ints, numpy/RNG states, args dict).
        write_extra: optional ``f(tmp_folder)`` writing more files (e.g. ``model.save_pretrained``).
        save_total_limit: keep only this many newest checkpoints (``None``/``<=0`` keeps all).
        protect: checkpoint folders pruning must never delete (the one the run resumed from).

    Returns:
        the final checkpoint path.

    Raises:
        OSError: writing failed (e.g. a full disk); the temporary folder is removed and no
            ``checkpoint-<step>`` appears.
    """
    os.makedirs(output_dir, exist_ok=True)
    final = os.path.join(output_dir, f"checkpoint-{step}")
    tmp = f"{final}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        if write_extra is not None:
            write_extra(tmp)
        paddle.save(state, os.path.join(tmp, STATE_FILE))
        finalize_checkpoint(tmp, final, step)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # e.g. ENOSPC: free the space again, keep the old checkpoints
        raise
    prune_checkpoints(output_dir, save_total_limit, protect=protect)
    return final


def clean_stale_tmp(output_dir):
    """Remove ``checkpoint-<step>.tmp-<pid>`` / ``.old-<pid>`` folders that a killed save left
    behind, but only those whose process is dead (never this process's own).  Returns the paths."""
    removed = []
    if not os.path.isdir(output_dir):
        return removed
    for name in sorted(os.listdir(output_dir)):
        m = _TMP_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            path = os.path.join(output_dir, name)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        _log().info("removed %d unfinished checkpoint folder(s) of dead processes: %s", len(removed), ", ".join(map(os.path.basename, removed)))
    return removed


def set_aside_newer_checkpoints(output_dir, step):
    """Move every ``checkpoint-<n>`` with ``n > step`` (complete or not) of ``output_dir`` into
    ``output_dir/abandoned-<time>/``, so that the run continuing from ``step`` (0 for a fresh
    start) cannot mix them into its rotation and a later ``latest`` cannot jump back to them.
    Nothing is deleted.  Call on the writing rank only.  Returns the new folder or ``None``."""
    newer = [(s, p) for s, p in list_checkpoints(output_dir, complete_only=False) if s > step]
    if not newer:
        return None
    dest = os.path.join(output_dir, "abandoned-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    base, n = dest, 1
    while os.path.exists(dest):
        dest, n = f"{base}-{n}", n + 1
    os.makedirs(dest)
    for _, path in newer:
        os.replace(path, os.path.join(dest, os.path.basename(path)))
    _log().warning("%s from step %d: moved the %d newer checkpoint(s) %s of an earlier run to %s (nothing deleted)",
                   "resuming" if step else "starting", step, len(newer), ", ".join(os.path.basename(p) for _, p in newer), dest)
    return dest


def resolve_checkpoint(resume_from_checkpoint, output_dir, legacy_required=(STATE_FILE,)):
    """Turn ``--resume_from_checkpoint`` into a checkpoint folder, or ``None`` for a fresh start.

    ``"latest"`` (or ``"true"``) picks the newest complete checkpoint in ``output_dir`` (``None``
    if there is none, logged as a warning "no checkpoint in <output_dir>: starting from step 0";
    incomplete newer folders are named in a warning and skipped); a path must be a complete
    checkpoint folder.

    Raises:
        FileNotFoundError: a path that is not a complete checkpoint folder; the message names
            every missing or truncated file.
    """
    if resume_from_checkpoint in (None, "", False) or str(resume_from_checkpoint).lower() in ("none", "false"):
        return None
    if str(resume_from_checkpoint).lower() in ("latest", "true"):
        every = list_checkpoints(output_dir, legacy_required, complete_only=False)
        for step, path in reversed(every):
            problems = checkpoint_problems(path, legacy_required)
            if not problems:
                return path
            _log().warning("--resume_from_checkpoint latest: skipping incomplete %s (%s)", path, "; ".join(problems))
        _log().warning("--resume_from_checkpoint %s: no %scheckpoint in %s: starting from step 0", resume_from_checkpoint, "complete " if every else "", output_dir)
        return None
    path = str(resume_from_checkpoint)
    problems = checkpoint_problems(path, legacy_required)
    if problems:
        raise FileNotFoundError(f"--resume_from_checkpoint {path!r} is not a checkpoint folder that can be resumed: " + "; ".join(problems))
    return path


def load_checkpoint(path):
    """Load the state dict saved by :func:`save_checkpoint` from checkpoint folder ``path``."""
    return paddle.load(os.path.join(path, STATE_FILE))
