"""A paddlenlp ``Trainer`` that never loses a run: atomic checkpoints, exact resume, NaN and
signal guard, ``--save_total_limit`` in every launch mode.

paddlenlp 2.8.1 writes ``checkpoint-<step>/`` in place and then lets callbacks add files, so a
kill or a full disk during a save leaves a folder that ``latest`` picks and cannot load; it
rotates checkpoints only when ``local_rank == 0`` (never in one process) and may delete the one a
run resumed from.  :class:`SafeTrainerMixin` (put it before ``Trainer`` in the bases, or use
:class:`SafeTrainer`) changes that:

* **atomic checkpoints**: ``_save_checkpoint`` writes the Trainer's files into
  ``checkpoint-<step>.tmp-<pid>/checkpoint-<step>/``, then every callback's
  ``write_checkpoint_files(folder, args, state)`` adds its files there (EMA, epoch RNG states,
  run info), then :func:`common.checkpoint.finalize_checkpoint` writes the completeness marker,
  fsyncs and renames the folder to ``checkpoint-<step>``.  Weights that are NaN/inf are never
  saved (:class:`common.run_guard.NonFiniteError`).
* **rotation** by step after every save on the writing rank, keeping the newest
  ``--save_total_limit`` complete checkpoints and never the one resumed from.
* **NaN/inf guard**: before every optimizer step, all ranks agree whether some rank's loss or
  gradient is non-finite; the run stops with an error naming the step before the update is
  applied (``skip_nan_steps`` skips up to that many such steps instead).
* **SIGTERM/SIGINT**: the checkpoint of the step in progress is saved, then ``train()`` raises
  :class:`common.run_guard.TrainingInterrupted` (exit status ``128 + signal``).
* **exact resume**: a :class:`common.trainer_callbacks.ResumeRNGCallback` is always attached.

Use ``resume = start_run(output_dir, resume_from_checkpoint, legacy_required=TRAINER_REQUIRED_FILES).resume``
before building the callbacks, then ``trainer.train(resume_from_checkpoint=resume)``.
"""
import json
import os
import shutil

import paddle
from paddlenlp.trainer import Trainer, TrainerCallback

from common.checkpoint import finalize_checkpoint, prune_checkpoints
from common.distributed import barrier
from common.logging_utils import peak_memory_mb
from common.run_guard import TrainingGuard
from common.trainer_callbacks import TRAINER_REQUIRED_FILES, ResumeRNGCallback, resolve_trainer_checkpoint
from common.weights import load_state_dict_strict

__all__ = ["SafeTrainerMixin", "SafeTrainer", "TRAIN_LOG_FILE"]

TRAIN_LOG_FILE = "train_log.jsonl"  # every Trainer log record, one JSON object per line


class _StopOnSignalCallback(TrainerCallback):
    """Once all ranks know of a stop signal: save this step's checkpoint and end the loop."""

    def __init__(self, guard):
        self.guard = guard

    def on_step_end(self, args, state, control, **kwargs):
        if self.guard.stop_requested:
            control.should_save = True
            control.should_training_stop = True
        return control


class SafeTrainerMixin:
    """Mixin for a paddlenlp ``Trainer`` subclass; see the module doc for what it changes.

    Args:
        skip_nan_steps: keyword-only, default 0: how many non-finite steps to skip before
            stopping with :class:`common.run_guard.NonFiniteError`.
        other arguments: those of ``paddlenlp.trainer.Trainer``.
    """

    def __init__(self, *args, skip_nan_steps=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.guard = TrainingGuard(self.args.output_dir, skip_nan_steps, legacy_required=TRAINER_REQUIRED_FILES)
        self.rng_callback = ResumeRNGCallback(self, None)
        self.add_callback(self.rng_callback)
        self.add_callback(_StopOnSignalCallback(self.guard))
        self.protected_checkpoints = []
        self.last_checkpoint = None
        self._micro_bad = False

    def log(self, logs, **kwargs):
        """paddlenlp's log line, plus ``peak_mem_mb`` (peak resident memory of this process, MiB) on
        training-loss lines; the writing rank also appends every record, with its ``step``, to
        ``<output_dir>/train_log.jsonl`` (one JSON object per line; a resumed run appends)."""
        if "loss" in logs:
            logs["peak_mem_mb"] = round(peak_memory_mb(), 1)
        super().log(logs, **kwargs)
        if self.args.should_save:
            os.makedirs(self.args.output_dir, exist_ok=True)
            with open(os.path.join(self.args.output_dir, TRAIN_LOG_FILE), "a") as f:
                f.write(json.dumps({**logs, "step": self.state.global_step}) + "\n")

    def _set_state_dict_in_model(self, state_dict):
        """Resume loads the checkpoint's weights strictly: another model's checkpoint fails with the
        missing / unexpected / mis-shaped keys listed (paddlenlp only logs ``set_state_dict``'s warnings)."""
        load_state_dict_strict(self.model, state_dict, getattr(self, "_resume_source", "the checkpoint resumed from"))

    # -- training entry point
    def train(self, resume_from_checkpoint=None, **kwargs):
        """``Trainer.train`` plus the guards; ``resume_from_checkpoint`` may also be ``True``/``"latest"``.

        Raises:
            NonFiniteError: a non-finite loss/gradient (beyond ``skip_nan_steps``) or NaN weights.
            TrainingInterrupted: SIGTERM/SIGINT (after saving the checkpoint of that step).
            FileNotFoundError: the checkpoint folder to resume from is incomplete.
        """
        if resume_from_checkpoint is True or str(resume_from_checkpoint).lower() in ("latest", "true"):
            resume_from_checkpoint = resolve_trainer_checkpoint("latest", self.args.output_dir)
        elif resume_from_checkpoint:
            resume_from_checkpoint = resolve_trainer_checkpoint(resume_from_checkpoint, self.args.output_dir)
        self.rng_callback.set_resume(resume_from_checkpoint)
        self._seek_stream(resume_from_checkpoint)
        self._resume_source = resume_from_checkpoint or "the checkpoint resumed from"
        self.protected_checkpoints = [resume_from_checkpoint] if resume_from_checkpoint else []
        with self.guard:
            output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        if self.guard.stop_requested:
            self.guard.interrupted(self.state.global_step, self.last_checkpoint)
        self.guard.check_weights(self.state.global_step, self.model.parameters(), what="final model")
        return output

    def _seek_stream(self, resume_from_checkpoint):
        """A resumable stream (a dataset with ``resume_at``, e.g. :class:`common.laion.LaionDataset`)
        seeks to the checkpoint's step itself, without decoding what was consumed; paddlenlp's own
        skip (iterating, and so decoding, every consumed batch) is turned off for it."""
        if not resume_from_checkpoint or not hasattr(self.train_dataset, "resume_at"):
            return
        import json

        with open(os.path.join(resume_from_checkpoint, "trainer_state.json")) as f:
            global_step = int(json.load(f)["global_step"])
        self.train_dataset.resume_at(global_step * self.args.gradient_accumulation_steps, self.args.per_device_train_batch_size)
        self.args.ignore_data_skip = True

    # -- NaN/inf guard: losses seen per micro-batch, one agreed decision before each optimizer step
    def training_step(self, model, inputs):
        loss = super().training_step(model, inputs)
        if not bool(paddle.isfinite(loss.astype("float32")).all()):
            self._micro_bad = True
            self._micro_loss = loss
            return paddle.zeros_like(loss)  # keeps the logged running loss readable when steps are skipped
        return loss

    def _guarded_step(self, step_fn):
        def step(*args, **kwargs):
            bad_loss = paddle.to_tensor(float("nan")) if self._micro_bad else 0.0
            self._micro_bad = False
            if self.guard.check_step(self.state.global_step + 1, bad_loss, self.model.parameters()):
                return step_fn(*args, **kwargs)
            return None  # skipped: the loop clears the gradients next

        return step

    def _inner_training_loop(self, *args, **kwargs):
        opt = self.optimizer
        name = "_step" if type(opt).__name__ == "HybridParallelOptimizer" else "step"
        if not getattr(opt, "_safe_trainer_guarded", False):
            setattr(opt, name, self._guarded_step(getattr(opt, name)))
            opt._safe_trainer_guarded = True
        return super()._inner_training_loop(*args, **kwargs)

    # -- atomic checkpoints + rotation
    def _save_checkpoint(self, model, metrics=None):
        step = self.state.global_step
        self.guard.check_weights(step, self.model.parameters())
        out = self.args.output_dir
        final = os.path.join(out, f"checkpoint-{step}")
        shared = [f"{final}.tmp-{os.getpid()}"]
        if self.args.world_size > 1:
            paddle.distributed.broadcast_object_list(shared, src=0)  # one staging folder for all ranks
        staging = shared[0]
        folder = os.path.join(staging, f"checkpoint-{step}")
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
            os.makedirs(staging)
        try:
            self.args.output_dir = staging  # the Trainer writes <output_dir>/checkpoint-<step>
            try:
                super()._save_checkpoint(model, metrics=metrics)  # its own rotation sees only the staging folder
            finally:
                self.args.output_dir = out
            for callback in self.callback_handler.callbacks:
                write = getattr(callback, "write_checkpoint_files", None)
                if write is not None:
                    write(folder, self.args, self.state)
            barrier()
            if self.args.should_save:
                finalize_checkpoint(folder, final, step)
                shutil.rmtree(staging, ignore_errors=True)
                if self.state.best_model_checkpoint == folder:
                    self.state.best_model_checkpoint = final
                prune_checkpoints(out, self.args.save_total_limit, protect=self.protected_checkpoints, legacy_required=TRAINER_REQUIRED_FILES)
        except OSError:
            if self.args.should_save:  # e.g. a full disk: free the space, keep the older checkpoints
                shutil.rmtree(staging, ignore_errors=True)
            raise
        self.last_checkpoint = final
        barrier()


class SafeTrainer(SafeTrainerMixin, Trainer):
    """``paddlenlp.trainer.Trainer`` with :class:`SafeTrainerMixin`."""
