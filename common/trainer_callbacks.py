"""paddlenlp ``Trainer`` pieces shared by the Trainer-based examples.

:class:`EMACallback` keeps an exponential moving average of the model's parameters next to the
Trainer: it updates after every optimisation step, writes ``ema_state.pdparams`` (and optionally
an exported EMA model) into each checkpoint and restores the EMA when training resumes.

:class:`ResumeRNGCallback` makes a resume -- mid-epoch or at an epoch end -- continue the same
data order and random stream (noise, timesteps, dropout) as the uninterrupted run.

Both write their files through ``write_checkpoint_files(folder, args, state)``, which
:class:`common.safe_trainer.SafeTrainerMixin` calls on every rank while the checkpoint is still
the temporary folder, so the files are inside before the folder is published (no ``on_save``,
which paddlenlp calls only after the checkpoint folder exists).
"""
import math
import os

import paddle
from paddlenlp.trainer import TrainerCallback

from common.checkpoint import get_rng_state, resolve_checkpoint, set_rng_state
from common.images import sample_grid_path  # lives in images.py so plain loops need not import paddlenlp
from common.logging_utils import get_logger

__all__ = ["EMA_STATE_FILE", "EPOCH_RNG_FILE", "TRAINER_REQUIRED_FILES", "EMACallback", "ImageLoggingCallback", "ResumeRNGCallback",
           "SetEpochCallback", "resolve_trainer_checkpoint", "sample_grid_path"]

EMA_STATE_FILE = "ema_state.pdparams"
EPOCH_RNG_FILE = "epoch_rng_state.pdparams"  # every rank's RNG state at the start of the checkpoint's epoch
# what a Trainer checkpoint written before the completeness marker existed must hold to be resumed
TRAINER_REQUIRED_FILES = ("trainer_state.json", "optimizer.pdopt", "scheduler.pdparams")
logger = get_logger("trainer")


def resolve_trainer_checkpoint(resume_from_checkpoint, output_dir):
    """Map ``--resume_from_checkpoint`` (``None``, ``"latest"``/``"true"`` or a folder) to a
    complete Trainer checkpoint folder or ``None`` (``latest`` with no complete checkpoint; logged
    as "no checkpoint in <output_dir>: starting from step 0").

    Raises:
        FileNotFoundError: a folder that is not a complete checkpoint; the message names the
            missing or truncated files (e.g. ``trainer_state.json``, ``optimizer.pdopt``).
    """
    return resolve_checkpoint(resume_from_checkpoint, output_dir, legacy_required=TRAINER_REQUIRED_FILES)


def _gather(obj, args):
    if args.world_size <= 1:
        return [obj]
    gathered = []
    paddle.distributed.all_gather_object(gathered, obj)
    return gathered


class EMACallback(TrainerCallback):
    """Update, checkpoint and restore a ppdiffusers ``EMAModel`` alongside a paddlenlp Trainer.

    Use with a :class:`common.safe_trainer.SafeTrainerMixin` Trainer (it calls
    :meth:`write_checkpoint_files`).

    Args:
        ema: ``ppdiffusers.training_utils.EMAModel`` built from ``parameters``.
        parameters: the list of parameters the EMA tracks (same order as at construction).
        resume_from_checkpoint: checkpoint folder the Trainer resumes from (or ``None``); its
            ``ema_state.pdparams`` is loaded at train start.
        export_fn: optional ``f(checkpoint_dir)`` called on rank 0 at each save while the EMA
            weights are swapped into ``parameters`` (e.g. to write ``unet_ema/`` with
            ``save_pretrained``); the raw weights are restored afterwards.

    Raises:
        FileNotFoundError: at train start, when resuming from a folder without EMA state.
    """

    def __init__(self, ema, parameters, resume_from_checkpoint=None, export_fn=None):
        self.ema = ema
        self.parameters = list(parameters)
        self.resume_from_checkpoint = resume_from_checkpoint
        self.export_fn = export_fn

    def on_train_begin(self, args, state, control, **kwargs):
        if self.resume_from_checkpoint:
            path = os.path.join(self.resume_from_checkpoint, EMA_STATE_FILE)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"resuming with EMA but {path!r} does not exist")
            self.ema.load_state_dict(paddle.load(path))

    def on_step_end(self, args, state, control, **kwargs):
        self.ema.step(self.parameters)

    def write_checkpoint_files(self, folder, args, state):
        """Write ``ema_state.pdparams`` (and the ``export_fn`` output) into ``folder`` (rank 0)."""
        if not state.is_world_process_zero:
            return
        paddle.save(self.ema.state_dict(), os.path.join(folder, EMA_STATE_FILE))
        if self.export_fn is not None:
            self.ema.store(self.parameters)
            self.ema.copy_to(self.parameters)
            try:
                self.export_fn(folder)
            finally:
                self.ema.restore(self.parameters)


class ResumeRNGCallback(TrainerCallback):
    """Exact resume of a paddlenlp Trainer run, mid-epoch and at epoch ends.

    paddlenlp 2.8's ``Trainer`` saves each rank's python, numpy and paddle generator states in
    every checkpoint (``rng_state.pth`` / ``rng_state_<world>.pth``) and restores them only after
    it has skipped the already-trained batches of a partly trained epoch.  Two things go wrong:

    * a checkpoint that ends an epoch leaves nothing to skip, the restore never runs, and the
      resumed run draws different noise and timesteps;
    * the single-process sampler draws the epoch's permutation from the global numpy RNG when
      the epoch starts, so the order skipped and trained after a mid-epoch resume comes from
      whatever state the process happens to have, not from the one the interrupted run had.

    This callback records every rank's RNG state at each epoch start and writes it into every
    checkpoint (``epoch_rng_state.pdparams``).  At the first epoch start after resuming it
    restores, for a mid-epoch checkpoint, that epoch-start state (same permutation; the Trainer's
    own restore after the skip then sets the step's state), and for an epoch-end checkpoint the
    checkpoint's state (the uninterrupted run's state at the next epoch start).
    :class:`common.safe_trainer.SafeTrainerMixin` adds one automatically.

    Args:
        trainer: the paddlenlp ``Trainer`` (its ``_load_rng_state`` reads the Trainer's RNG files
            and hands each rank its own state; a checkpoint without them is logged and skipped).
        resume_from_checkpoint: the checkpoint folder training resumes from, or ``None``
            (then only the epoch-start states are recorded).
    """

    def __init__(self, trainer, resume_from_checkpoint=None):
        self.trainer = trainer
        self.epoch_state = None
        self.set_resume(resume_from_checkpoint)

    def set_resume(self, resume_from_checkpoint):
        """Set the checkpoint folder the next ``train()`` resumes from (``None``: fresh start)."""
        self.resume_from_checkpoint = resume_from_checkpoint
        self.done = not resume_from_checkpoint

    @staticmethod
    def _mid_epoch(args, state, train_dataloader):
        """Whether the resumed step lies inside an epoch -- the Trainer's own arithmetic."""
        if args.ignore_data_skip:
            return False
        try:
            per_epoch = max(len(train_dataloader) // args.gradient_accumulation_steps, 1)
        except (TypeError, ValueError, NotImplementedError):  # no length (iterable dataset): the Trainer treats max_steps as one epoch
            per_epoch = max(int(state.max_steps), 1)
        return state.global_step % per_epoch != 0

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        if not self.done:
            self.done = True
            ckpt = self.resume_from_checkpoint
            path = os.path.join(ckpt, EPOCH_RNG_FILE)
            if self._mid_epoch(args, state, train_dataloader) and os.path.isfile(path):
                states = paddle.load(path, return_numpy=True)
                if len(states) == args.world_size:
                    set_rng_state(states[args.process_index if args.world_size > 1 else 0])
                else:
                    logger.warning("%s holds %d rank(s), this run has %d: the data order after the resume may differ", path, len(states), args.world_size)
            else:
                if not os.path.isfile(path) and self._mid_epoch(args, state, train_dataloader):
                    logger.warning("%s has no %s (older version): the data order of the resumed epoch may differ", ckpt, EPOCH_RNG_FILE)
                self.trainer._load_rng_state(ckpt)  # the Trainer's reader (handles ranks)
        self.epoch_state = get_rng_state()

    def write_checkpoint_files(self, folder, args, state):
        """Write every rank's epoch-start RNG state into ``folder`` (a collective: all ranks call it)."""
        states = _gather(self.epoch_state if self.epoch_state is not None else get_rng_state(), args)
        if args.should_save:
            paddle.save(states, os.path.join(folder, EPOCH_RNG_FILE))


class SetEpochCallback(TrainerCallback):
    """Tell a dataset (anything with ``set_epoch(int)``) the epoch at every epoch start, so its
    per-epoch draws (stored flips, caption choice, CFG drop) change from epoch to epoch and a
    resumed run draws the same ones as the uninterrupted run.

    The epoch is ``floor(state.epoch)``: paddlenlp reports fractional epochs after a mid-epoch resume.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(math.floor((state.epoch or 0.0) + 1e-6)))


class ImageLoggingCallback(TrainerCallback):
    """Every ``every`` optimisation steps (rank 0 only): ``images = sample_fn(step)`` (a list of PIL
    images or ``[-1, 1]`` arrays ``(3, H, W)``), saved as one grid to :func:`sample_grid_path` and to
    VisualDL (tag ``samples``) under ``args.logging_dir``.  ``every <= 0`` means never (the scripts
    write their final grid themselves).

    Args:
        sample_fn: ``step -> images``; it must leave the model as it found it (train mode, raw weights).
        every: the script's ``--image_logging_steps``.
        nrow: images per grid row (default: square).
        upscale: nearest-neighbour enlargement of small samples, so a person can see them.
    """

    def __init__(self, sample_fn, every, nrow=None, upscale=1):
        self.sample_fn, self.every, self.nrow, self.upscale = sample_fn, int(every or 0), nrow, upscale
        self.writer = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.every <= 0 or state.global_step % self.every or not state.is_world_process_zero:
            return
        from common.images import make_grid, save_grid

        images = self.sample_fn(state.global_step)
        path = save_grid(images, sample_grid_path(args.output_dir, state.global_step), nrow=self.nrow, upscale=self.upscale)
        logger.info("step %d: sample grid -> %s", state.global_step, path)
        try:
            import numpy as np
            from visualdl import LogWriter

            if self.writer is None:
                self.writer = LogWriter(logdir=args.logging_dir)
            self.writer.add_image(tag="samples", img=np.asarray(make_grid(images, nrow=self.nrow)), step=state.global_step)
        except ImportError:
            pass

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
