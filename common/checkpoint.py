"""Training-state checkpoints: atomic folders, ``latest`` resume, ``save_total_limit``.

A checkpoint is a folder ``<output_dir>/checkpoint-<step>/`` holding ``training_state.pdparams``
(one ``paddle.save`` dict of everything needed to continue: model/EMA/optimizer/lr-scheduler
state dicts, ``step``, RNG states, data position, args) plus any extra files the caller writes
into it (e.g. a ``save_pretrained`` model folder).  It is first written as
``checkpoint-<step>.tmp-<pid>`` and then renamed, so a crash mid-save never leaves a
half-written ``checkpoint-<step>`` and the previous checkpoint stays loadable.
"""
import contextlib
import os
import random
import re
import shutil

import numpy as np
import paddle

__all__ = ["optimizer_state", "load_optimizer_state", "get_rng_state", "set_rng_state", "preserve_rng_state", "save_checkpoint", "list_checkpoints", "resolve_checkpoint", "load_checkpoint", "replace_dir", "STATE_FILE"]

STATE_FILE = "training_state.pdparams"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def optimizer_state(optimizer, parameters):
    """``optimizer.state_dict()`` together with the names of ``parameters`` (in order).

    Paddle keys optimizer slots by each parameter's generated unique name (``conv2d_8.w_0``),
    which differs when the model is built again in the same process; storing the names lets
    :func:`load_optimizer_state` map the slots onto any freshly built copy of the model.
    """
    return {"state": optimizer.state_dict(), "param_names": [p.name for p in parameters]}


def load_optimizer_state(optimizer, saved, parameters):
    """Restore a dict from :func:`optimizer_state` into ``optimizer`` whose parameters are
    ``parameters`` (same architecture and order as when saved).

    Raises:
        ValueError: the number of parameters differs from the saved one.
    """
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


def list_checkpoints(output_dir):
    """Complete checkpoint folders in ``output_dir`` as ``[(step, path)]`` sorted by step."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        m = _CKPT_RE.match(name)
        path = os.path.join(output_dir, name)
        if m and os.path.isfile(os.path.join(path, STATE_FILE)):
            found.append((int(m.group(1)), path))
    return sorted(found)


def replace_dir(tmp, final):
    """Move the finished folder ``tmp`` to ``final``, replacing an existing ``final`` without
    ever leaving ``final`` half-written (the old one is moved aside first, then deleted)."""
    if os.path.exists(final):
        old = f"{final}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def save_checkpoint(output_dir, step, state, write_extra=None, save_total_limit=None):
    """Atomically write ``checkpoint-<step>`` and prune old ones. Call on rank 0 only.

    Args:
        output_dir: folder holding the checkpoints (created if missing).
        step: global optimisation step (int), used in the folder name.
        state: dict for ``paddle.save`` (state dicts, ints, numpy/RNG states, args dict).
        write_extra: optional ``f(tmp_folder)`` writing more files (e.g. ``model.save_pretrained``).
        save_total_limit: keep only this many newest checkpoints (``None``/``<=0`` keeps all).

    Returns:
        the final checkpoint path.
    """
    os.makedirs(output_dir, exist_ok=True)
    final = os.path.join(output_dir, f"checkpoint-{step}")
    tmp = f"{final}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    if write_extra is not None:
        write_extra(tmp)
    paddle.save(state, os.path.join(tmp, STATE_FILE))
    replace_dir(tmp, final)
    if save_total_limit and save_total_limit > 0:
        for _, path in list_checkpoints(output_dir)[:-save_total_limit]:
            shutil.rmtree(path, ignore_errors=True)
    return final


def resolve_checkpoint(resume_from_checkpoint, output_dir):
    """Turn ``--resume_from_checkpoint`` into a checkpoint folder, or ``None`` for a fresh start.

    ``"latest"`` picks the newest complete checkpoint in ``output_dir`` (``None`` if there is
    none); a path must be a checkpoint folder.

    Raises:
        FileNotFoundError: a path that is not a complete checkpoint folder.
    """
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        found = list_checkpoints(output_dir)
        return found[-1][1] if found else None
    if not os.path.isfile(os.path.join(resume_from_checkpoint, STATE_FILE)):
        raise FileNotFoundError(
            f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a checkpoint folder (no {STATE_FILE} inside)"
        )
    return resume_from_checkpoint


def load_checkpoint(path):
    """Load the state dict saved by :func:`save_checkpoint` from checkpoint folder ``path``."""
    return paddle.load(os.path.join(path, STATE_FILE))
