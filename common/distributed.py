"""The one distributed idiom every script uses (works single-process and under
``python -m paddle.distributed.launch``; on CPU paddle uses the gloo backend):

* :func:`init_distributed` once at start; ``rank``/``world_size`` from the launcher's env.
* seeding (DiT's idiom): :func:`seed_model_init` (``global_seed``, the same on every rank) right
  before the models are built, so every rank starts from the same weights and ``--seed`` fixes
  them; then :func:`seed_everything` (``global_seed * world_size + rank``) for the data / noise
  draws, so the ranks draw different noise.
* the logged loss is the mean over ranks (:func:`mean_over_ranks`, one all-reduce).
* data sharded with a distributed batch sampler and ``set_epoch``.
* rank 0 writes checkpoints/logs; the others wait at :func:`barrier`.
"""
import os
import random

import numpy as np
import paddle
import paddle.distributed as dist

__all__ = ["shutdown_distributed", "init_distributed", "get_rank", "get_world_size", "is_main_process", "barrier", "seed_model_init", "seed_everything",
           "mean_over_ranks", "wrap_data_parallel"]


def get_rank():
    return int(os.environ.get("PADDLE_TRAINER_ID", "0"))


def get_world_size():
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def is_main_process():
    return get_rank() == 0


def init_distributed():
    """Initialise the parallel environment when launched with more than one process.

    Returns ``(rank, world_size)``.
    """
    if get_world_size() > 1 and not dist.is_initialized():
        dist.init_parallel_env()
    return get_rank(), get_world_size()


def barrier():
    """Wait for every rank (no-op in a single process)."""
    if get_world_size() > 1:
        dist.barrier()


def shutdown_distributed():
    """End of a run: wait for every rank, then tear the process group down explicitly so no rank
    exits while another still talks to it (no-op in a single process)."""
    if get_world_size() > 1 and dist.is_initialized():
        dist.barrier()
        try:
            dist.destroy_process_group()
        except Exception:  # older paddle builds without explicit teardown
            pass


def _seed_all(seed):
    random.seed(seed)
    np.random.seed(seed % (2**32))
    paddle.seed(seed)


def seed_model_init(global_seed):
    """Seed python, numpy and paddle with ``global_seed`` itself, the same on every rank: call it
    right before building the models, so every rank draws the same initial weights and a run's
    ``--seed`` fixes them (no reliance on a DataParallel broadcast).  Follow it with
    :func:`seed_everything` once the models are built.  Returns ``global_seed`` (int).
    """
    seed = int(global_seed)
    _seed_all(seed)
    return seed


def seed_everything(global_seed):
    """Seed python, numpy and paddle with ``global_seed * world_size + rank`` (facebookresearch/DiT
    ``train.py``'s per-rank seed), so each rank draws its own noise, timesteps and dropout; returns
    that seed.  Call it after the models are built (:func:`seed_model_init` before)."""
    seed = int(global_seed) * get_world_size() + get_rank()
    _seed_all(seed)
    return seed


def mean_over_ranks(values):
    """Mean over all ranks of a python float or a sequence of floats (one float32 all-reduce; the
    values unchanged in one process).  A collective: every rank must call it at the same point
    with the same number of values.  Returns a float, or a list of floats for a sequence.
    """
    scalar = not isinstance(values, (list, tuple))
    flat = [float(values)] if scalar else [float(v) for v in values]
    world = get_world_size()
    if world > 1 and flat:
        t = paddle.to_tensor(flat, dtype="float32")
        dist.all_reduce(t)
        flat = [v / world for v in t.numpy().tolist()]
    return flat[0] if scalar else flat


def wrap_data_parallel(model):
    """``paddle.DataParallel(model)`` when world_size > 1 (gradients all-reduced), else ``model``."""
    return paddle.DataParallel(model) if get_world_size() > 1 else model
