"""The one distributed idiom every script uses (works single-process and under
``python -m paddle.distributed.launch``; on CPU paddle uses the gloo backend):

* :func:`init_distributed` once at start; ``rank``/``world_size`` from the launcher's env.
* seed = ``global_seed * world_size + rank`` (:func:`seed_everything`).
* data sharded with a distributed batch sampler and ``set_epoch``.
* rank 0 writes checkpoints/logs; the others wait at :func:`barrier`.
"""
import os
import random

import numpy as np
import paddle
import paddle.distributed as dist

__all__ = ["shutdown_distributed", "init_distributed", "get_rank", "get_world_size", "is_main_process", "barrier", "seed_everything", "wrap_data_parallel"]


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


def seed_everything(global_seed):
    """Seed python, numpy and paddle with ``global_seed * world_size + rank``; returns that seed."""
    seed = int(global_seed) * get_world_size() + get_rank()
    random.seed(seed)
    np.random.seed(seed % (2**32))
    paddle.seed(seed)
    return seed


def wrap_data_parallel(model):
    """``paddle.DataParallel(model)`` when world_size > 1 (gradients all-reduced), else ``model``."""
    return paddle.DataParallel(model) if get_world_size() > 1 else model
