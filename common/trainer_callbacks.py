"""paddlenlp ``Trainer`` pieces shared by the Trainer-based examples.

:class:`EMACallback` keeps an exponential moving average of the model's parameters next to the
Trainer: it updates after every optimisation step, writes ``ema_state.pdparams`` (and optionally
an exported EMA model) into each ``checkpoint-<step>`` folder the Trainer saves, and restores
the EMA when training resumes from such a folder.

:class:`ResumeRNGCallback` makes a resume at an epoch boundary continue the same random stream
(noise, timesteps, dropout) as the uninterrupted run.
"""
import os

import paddle
from paddlenlp.trainer import TrainerCallback
from paddlenlp.trainer.trainer_utils import get_last_checkpoint

__all__ = ["EMA_STATE_FILE", "EMACallback", "ResumeRNGCallback", "resolve_trainer_checkpoint"]

EMA_STATE_FILE = "ema_state.pdparams"


def resolve_trainer_checkpoint(resume_from_checkpoint, output_dir):
    """Map ``--resume_from_checkpoint`` (``None``, ``"latest"``/``"true"`` or a folder) to a
    Trainer checkpoint folder or ``None``.

    Raises:
        FileNotFoundError: a folder that does not exist.
    """
    if resume_from_checkpoint in (None, "", False, "none", "None"):
        return None
    if str(resume_from_checkpoint).lower() in ("latest", "true"):
        return get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    if not os.path.isdir(resume_from_checkpoint):
        raise FileNotFoundError(f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a folder")
    return resume_from_checkpoint


class EMACallback(TrainerCallback):
    """Update, checkpoint and restore a ppdiffusers ``EMAModel`` alongside a paddlenlp Trainer.

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

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, EMA_STATE_FILE + ".tmp")
        paddle.save(self.ema.state_dict(), tmp)
        os.replace(tmp, os.path.join(folder, EMA_STATE_FILE))
        if self.export_fn is not None:
            self.ema.store(self.parameters)
            self.ema.copy_to(self.parameters)
            try:
                self.export_fn(folder)
            finally:
                self.ema.restore(self.parameters)


class ResumeRNGCallback(TrainerCallback):
    """Restore a Trainer checkpoint's RNG states when training resumes at an epoch boundary.

    paddlenlp 2.8's ``Trainer`` saves the python, numpy and paddle generator states in every
    checkpoint (``rng_state.pth`` / ``rng_state_<world>.pth``) but restores them only after it has
    skipped the already-trained batches of a partly trained epoch.  A checkpoint that ends an
    epoch leaves nothing to skip, the restore never runs, and the resumed run draws different
    noise and timesteps than the uninterrupted one.  This callback restores the states at the
    first epoch start after resuming.  For a mid-epoch checkpoint the Trainer's own restore runs
    later (after the skip) and sets the same states again.

    Args:
        trainer: the paddlenlp ``Trainer`` (its ``_load_rng_state`` reads the files and hands each
            rank its own state; a checkpoint without RNG files is logged by it and skipped).
        resume_from_checkpoint: the checkpoint folder training resumes from, or ``None`` (no-op).

    Usage: ``trainer.add_callback(ResumeRNGCallback(trainer, resume_from_checkpoint))``.
    """

    def __init__(self, trainer, resume_from_checkpoint):
        self.trainer = trainer
        self.resume_from_checkpoint = resume_from_checkpoint
        self.done = not resume_from_checkpoint

    def on_epoch_begin(self, args, state, control, **kwargs):
        if not self.done:
            self.done = True
            self.trainer._load_rng_state(self.resume_from_checkpoint)  # the Trainer's reader (handles ranks)
