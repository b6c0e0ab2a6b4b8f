"""paddlenlp ``Trainer`` pieces for Stable Diffusion: the trainer (loss, data loader, what a
checkpoint holds, resume) and the prompt-grid sampler that the shared image-logging callback calls."""
import os

import paddle
from paddle.io import DataLoader, IterableDataset
from paddlenlp.trainer import Trainer

from common.safe_trainer import SafeTrainerMixin
from common.logging_utils import get_logger

from sd_dataset import collate_fn
from sd_pipeline_utils import build_pipeline, make_inference_scheduler, sample_prompt_grid

__all__ = ["StableDiffusionTrainer", "PromptGridSampler"]

logger = get_logger("sd")
WEIGHTS_NAME = "model_state.pdparams"


def _unwrap(model):
    return model._layers if isinstance(model, paddle.DataParallel) else model


class StableDiffusionTrainer(SafeTrainerMixin, Trainer):
    """``Trainer`` whose model (:class:`sd_model.StableDiffusionModel`) returns its loss, with the
    atomic checkpoints, rotation, NaN/signal guard and exact resume of
    :class:`common.safe_trainer.SafeTrainerMixin` (keyword ``skip_nan_steps``).

    * the laion reader shards itself over ranks and workers, so its DataLoader is built without
      paddlenlp's ``IterableDatasetShard`` (which would shard a second time);
    * a checkpoint holds ``unet/`` (and ``text_encoder/`` when trained) as ``save_pretrained``
      folders; with ``--only_save_updated_model False`` also the whole ``model_state.pdparams``;
    * resuming loads the weights back from whichever of the two the checkpoint has;
    * log records (with ``peak_mem_mb``) go to ``<output_dir>/train_log.jsonl`` as in every
      :class:`common.safe_trainer.SafeTrainerMixin` Trainer.
    """

    def compute_loss(self, model, inputs, return_outputs=False):
        loss = model(**inputs)
        return (loss, None) if return_outputs else loss

    def get_train_dataloader(self):
        if isinstance(self.train_dataset, IterableDataset):
            return DataLoader(
                self.train_dataset,
                batch_size=self.args.per_device_train_batch_size,
                num_workers=self.args.dataloader_num_workers,
                collate_fn=self.data_collator or collate_fn,
                drop_last=True,
            )
        return super().get_train_dataloader()

    def _save(self, output_dir=None, state_dict=None, merge_tensor_parallel=False):
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = _unwrap(self.model)
        model.unet.save_pretrained(os.path.join(output_dir, "unet"))
        if model.train_text_encoder:
            model.text_encoder.save_pretrained(os.path.join(output_dir, "text_encoder"))
        if not self.args.only_save_updated_model:
            paddle.save(state_dict if state_dict is not None else model.state_dict(), os.path.join(output_dir, WEIGHTS_NAME))
        with open(os.path.join(output_dir, "training_args.json"), "w") as f:
            f.write(self.args.to_json_string())

    def _load_from_checkpoint(self, resume_from_checkpoint=None):
        if not resume_from_checkpoint or os.path.isfile(os.path.join(resume_from_checkpoint, WEIGHTS_NAME)):
            return super()._load_from_checkpoint(resume_from_checkpoint)
        from ppdiffusers import UNet2DConditionModel
        from ppdiffusers.transformers import CLIPTextModel

        model = _unwrap(self.model)
        unet_dir = os.path.join(resume_from_checkpoint, "unet")
        if not os.path.isdir(unet_dir):
            raise FileNotFoundError(f"--resume_from_checkpoint {resume_from_checkpoint!r} holds neither {WEIGHTS_NAME} nor unet/")
        model.unet.set_state_dict(UNet2DConditionModel.from_pretrained(unet_dir).state_dict())
        if model.train_text_encoder:
            te_dir = os.path.join(resume_from_checkpoint, "text_encoder")
            if not os.path.isdir(te_dir):
                raise FileNotFoundError(f"resuming with --train_text_encoder but {te_dir!r} does not exist")
            model.text_encoder.set_state_dict(CLIPTextModel.from_pretrained(te_dir).state_dict())
        logger.info("resumed weights from %s", resume_from_checkpoint)


class PromptGridSampler:
    """``step -> list of PIL images`` for :class:`common.trainer_callbacks.ImageLoggingCallback`:
    one image per prompt from the current weights (DDIM, ``num_inference_steps``, guidance 7.5,
    the same seed for every prompt and step, so grids of one run compare step to step).  The
    models are put back in train mode and the RNG state is restored (:func:`sd_pipeline_utils.sample_prompt_grid`)."""

    def __init__(self, model, tokenizer, prompts, resolution, num_inference_steps, seed=0):
        self.model, self.tokenizer, self.prompts = model, tokenizer, list(prompts)
        self.resolution, self.num_inference_steps, self.seed = resolution, num_inference_steps, seed

    def __call__(self, step):
        m = self.model
        pipe = build_pipeline(m.vae, m.text_encoder, self.tokenizer, m.unet, make_inference_scheduler(m.noise_scheduler, "ddim"))
        return sample_prompt_grid(pipe, self.prompts, self.resolution, self.num_inference_steps, seed=self.seed)
