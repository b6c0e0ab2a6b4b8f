"""Training logs: a console line every ``logging_steps`` (loss, lr, images/s, peak memory) and
VisualDL scalars + image grids under ``<output_dir>/logs`` (rank 0 only).

The logged loss is what facebookresearch/DiT logs: the mean over the window's steps, over the
gradient-accumulation micro-batches of each step and over all ranks (one all-reduce per logging
step), not rank 0's last micro-batch."""
import logging
import os
import resource
import sys
import time

import numpy as np

__all__ = ["get_logger", "peak_memory_mb", "TrainLogger"]


def get_logger(name="train"):
    """A stderr logger with timestamps (configured once)."""
    logger = logging.getLogger(name)
    if not logging.getLogger().handlers and not logger.handlers:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return logger


def peak_memory_mb():
    """Peak memory in MiB: the device allocator's peak on GPU, else this process's peak RSS."""
    try:
        import paddle

        if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
            return paddle.device.cuda.max_memory_allocated() / 2**20
    except Exception:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


class TrainLogger:
    """Console + VisualDL logging for a training loop.

    Args:
        output_dir: run folder; VisualDL files go to ``<output_dir>/logs``.
        logging_steps: print/log every this many optimisation steps.
        enabled: False on ranks other than 0 (nothing is written).
        use_visualdl: write VisualDL records (needs the ``visualdl`` package).
        total_steps: when given and stderr is a terminal, a tqdm progress bar tracks the steps.

    Use :meth:`step` once per optimisation step, on every rank, with this rank's loss(es) of the
    step and the images it consumed.  On logging steps the window's values are averaged over the
    ranks (:func:`common.distributed.mean_over_ranks`, a collective), so every rank must call
    :meth:`step` for every step; ``history`` and the returned records are then the same on every rank.
    """

    def __init__(self, output_dir, logging_steps=10, enabled=True, use_visualdl=True, name="train", total_steps=None, initial_step=0):
        self.logging_steps = max(1, int(logging_steps))
        self.enabled = enabled
        self.logger = get_logger(name)
        self.writer = None
        if enabled and use_visualdl:
            from visualdl import LogWriter

            self.writer = LogWriter(logdir=os.path.join(output_dir, "logs"))
        self.progress = None
        if enabled and total_steps and sys.stderr.isatty():
            from tqdm import tqdm

            self.progress = tqdm(total=total_steps, initial=initial_step, desc=name, dynamic_ncols=True)
        self._losses, self._images, self._t0 = [], 0, time.time()
        self.history = []  # (step, mean loss) per logged window, for tests and summaries

    def step(self, global_step, loss, lr=None, num_images=0, extra=None):
        """Record one optimisation step; every ``logging_steps`` print and log the window's values.

        Args:
            global_step: the step just taken (int, 1-based).
            loss: this rank's loss of the step: a float, or the list of its gradient-accumulation
                micro-batch losses (unscaled; their mean is taken).
            lr: learning rate (logged as is).
            num_images: images this step consumed (all ranks together, for ``images_per_sec``).
            extra: more scalars of this step (dict name -> float, the same names on every rank),
                logged as their mean over ranks.

        Returns:
            On logging steps ``{"loss": window mean over steps, micro-batches and ranks,
            "images_per_sec", "peak_mem_mb" (this process), "lr", **extra}``, else ``None``.
        """
        micro = [float(v) for v in loss] if isinstance(loss, (list, tuple)) else [float(loss)]
        if not micro:
            raise ValueError("loss: an empty list of micro-batch losses")
        step_loss = float(np.mean(micro))
        self._losses.append(step_loss)
        self._images += num_images
        if self.progress is not None:
            self.progress.update(1)
            self.progress.set_postfix(loss=f"{step_loss:.4f}")
        if global_step % self.logging_steps:
            return None
        from common.distributed import mean_over_ranks

        extra = dict(extra or {})
        names = sorted(extra)
        reduced = mean_over_ranks([float(np.mean(self._losses))] + [float(extra[k]) for k in names])
        elapsed = max(time.time() - self._t0, 1e-9)
        record = {"loss": reduced[0], "images_per_sec": self._images / elapsed, "peak_mem_mb": peak_memory_mb()}
        if lr is not None:
            record["lr"] = float(lr)
        record.update(zip(names, reduced[1:]))
        self.history.append((global_step, record["loss"]))
        self._losses, self._images, self._t0 = [], 0, time.time()
        if self.enabled:
            self.logger.info("step %d " % global_step + " ".join(f"{k}={v:.4g}" for k, v in record.items()))
            if self.writer is not None:
                for k, v in record.items():
                    self.writer.add_scalar(tag=f"train/{k}", step=global_step, value=v)
        return record

    def log_images(self, tag, grid, global_step):
        """Log a PIL image grid to VisualDL (rank 0)."""
        if self.enabled and self.writer is not None:
            self.writer.add_image(tag=tag, img=np.asarray(grid.convert("RGB")), step=global_step)

    def close(self):
        if self.progress is not None:
            self.progress.close()
        if self.writer is not None:
            self.writer.close()
