"""Training logs: a console line every ``logging_steps`` (loss, lr, images/s, peak memory) and
VisualDL scalars + image grids under ``<output_dir>/logs`` (rank 0 only)."""
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

    Use :meth:`step` once per optimisation step with the batch's loss and image count.
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
        """Record one step; every ``logging_steps`` print and log the window's mean values.

        Returns the logged dict on logging steps, else ``None``.
        """
        self._losses.append(float(loss))
        self._images += num_images
        if self.progress is not None:
            self.progress.update(1)
            self.progress.set_postfix(loss=f"{float(loss):.4f}")
        if global_step % self.logging_steps:
            return None
        elapsed = max(time.time() - self._t0, 1e-9)
        record = {"loss": float(np.mean(self._losses)), "images_per_sec": self._images / elapsed, "peak_mem_mb": peak_memory_mb()}
        if lr is not None:
            record["lr"] = float(lr)
        record.update(extra or {})
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
