"""Command-line arguments of ``train_txt2img_laion400m_trainer.py`` (upstream names), parsed by
``paddlenlp.trainer.PdArgumentParser`` together with paddlenlp's ``TrainingArguments``
(``--output_dir``, ``--max_steps``, ``--learning_rate``, ``--save_steps``, ``--fp16`` ...).

Behaviour is set by these arguments only; the upstream ``FLAG_*`` environment variables
(``FLAG_USE_EMA``, ``FLAG_RECOMPUTE``, ``FLAG_XFORMERS``) are not read.
"""
import math
import os
from dataclasses import dataclass, field
from typing import List, Optional

from paddlenlp.trainer import TrainingArguments

from common.arg_checks import check_trainer_arguments, read_json_config, require_non_negative, require_positive, require_range, require_vae_multiple
from common.fast_ops import FAST_OPS_HELP

__all__ = ["SDTrainingArguments", "SDModelArguments", "SDDataArguments", "HERE", "DEMO_FILE_LIST", "check_args"]

HERE = os.path.dirname(os.path.abspath(__file__))  # stable_diffusion/
REPO_ROOT = os.path.dirname(HERE)
DEMO_FILE_LIST = os.path.join(REPO_ROOT, "data", "demo", "laion_digits", "filelist", "digits.filelist.list")


@dataclass
class SDTrainingArguments(TrainingArguments):
    image_logging_steps: int = field(default=1000, metadata={"help": "Sample a prompt grid every X steps (rounded up to a multiple of --logging_steps; <= 0 disables)."})
    resolution: int = field(default=512, metadata={"help": "Training image side in pixels (images are resized + center-cropped)."})
    use_ema: bool = field(default=False, metadata={"help": "Keep an EMA of the UNet weights (saved as unet_ema/ in checkpoints)."})
    ema_decay: float = field(default=0.9999, metadata={"help": "EMA decay cap; the decay warms up as (1 + step) / (10 + step)."})
    enable_xformers_memory_efficient_attention: bool = field(default=False, metadata={"help": "Memory-efficient attention in the UNet (GPU kernel; kept off with a warning where unsupported)."})
    fast_ops: bool = field(default=True, metadata={"help": FAST_OPS_HELP})
    only_save_updated_model: bool = field(default=True, metadata={"help": "Checkpoints hold only the trained parts (unet/, text_encoder/ when trained); False also writes the whole model_state.pdparams."})
    unet_learning_rate: Optional[float] = field(default=None, metadata={"help": "UNet learning rate (default: --learning_rate)."})
    text_encoder_learning_rate: Optional[float] = field(default=None, metadata={"help": "Text encoder learning rate with --train_text_encoder (default: --learning_rate)."})
    report_to: Optional[List[str]] = field(default_factory=lambda: ["visualdl"], metadata={"help": "Integrations to log to (visualdl, or none)."})

    def __post_init__(self):
        super().__post_init__()
        if self.image_logging_steps > 0:
            self.image_logging_steps = math.ceil(self.image_logging_steps / self.logging_steps) * self.logging_steps
        else:
            self.image_logging_steps = -1
        if self.unet_learning_rate is None:
            self.unet_learning_rate = self.learning_rate
        if self.text_encoder_learning_rate is None:
            self.text_encoder_learning_rate = self.learning_rate
        self.learning_rate = self.unet_learning_rate  # the optimizer's base lr; the text encoder gets a ratio


@dataclass
class SDModelArguments:
    vae_name_or_path: Optional[str] = field(default=None, metadata={"help": "VAE: hub id (CompVis/stable-diffusion-v1-4/vae), folder, 'auto' (demo VAE) or 'random'. Default: the pretrained pipeline's vae/, else 'auto'."})
    text_encoder_name_or_path: Optional[str] = field(default=None, metadata={"help": "CLIPTextModel: a JSON config (random init) or weights folder/hub id. Default: the pretrained pipeline's text_encoder/, else config/text_encoder_demo.json."})
    unet_name_or_path: Optional[str] = field(default=None, metadata={"help": "UNet2DConditionModel: a JSON config (random init) or weights folder/hub id. Default: the pretrained pipeline's unet/, else config/unet_demo.json."})
    tokenizer_name: Optional[str] = field(default=None, metadata={"help": "CLIPTokenizer folder/hub id. Default: the pretrained pipeline's tokenizer/, the text encoder's sibling "
                                                                  "tokenizer/, else one is trained on the training captions into <output_dir>/tokenizer."})
    pretrained_model_name_or_path: Optional[str] = field(default=None, metadata={"help": "A full Stable Diffusion folder or hub id (tokenizer/, text_encoder/, vae/, unet/, scheduler/); the four *_name_or_path arguments take priority."})
    model_max_length: Optional[int] = field(default=None, metadata={"help": "Tokenizer padding/truncation length (default: the loaded tokenizer's own; 77 for one trained on the captions)."})
    tokenizer_vocab_size: int = field(default=1024, metadata={"help": "Vocabulary size bound when a tokenizer is trained on the captions."})
    prediction_type: Optional[str] = field(default=None, metadata={"help": "UNet target: epsilon or v_prediction. Default: the pretrained pipeline's scheduler's (fine-tuning), else epsilon (upstream train_text_to_image)."})
    num_inference_steps: int = field(default=50, metadata={"help": "Sampling steps of the prompt grids logged during training."})
    train_text_encoder: bool = field(default=False, metadata={"help": "Train the text encoder too (on in the from-scratch demo)."})
    noise_offset: float = field(default=0.0, metadata={"help": "Offset-noise scale (per-sample, per-channel constant added to the noise)."})
    snr_gamma: Optional[float] = field(default=None, metadata={"help": "Min-SNR-gamma loss weighting (arXiv 2303.09556); 5.0 recommended."})
    input_perturbation: float = field(default=0.0, metadata={"help": "Input perturbation scale (arXiv 2301.11706); 0.1 recommended."})
    proportion_empty_prompts: float = field(default=0.1, metadata={"help": "Probability of replacing a caption by '' (needed for classifier-free guidance)."})


@dataclass
class SDDataArguments:
    file_list: Optional[str] = field(default=DEMO_FILE_LIST, metadata={"help": "laion400m-format *.filelist.list / *.filelist (comma-separated allowed). Default: the bundled digits demo."})
    train_data_dir: Optional[str] = field(default=None, metadata={"help": "Instead of --file_list: an image folder with metadata.jsonl captions (fine-tuning recipe)."})
    caption_column: str = field(default="text", metadata={"help": "Caption key in metadata.jsonl (--train_data_dir)."})
    image_column: str = field(default="file_name", metadata={"help": "Image path key in metadata.jsonl (--train_data_dir)."})
    buffer_size: int = field(default=256, metadata={"help": "Shuffle buffer (records) of the laion reader."})
    random_flip: bool = field(default=False, metadata={"help": "Random horizontal flips (off by default: flipped digits/text change meaning)."})
    jpeg_draft: bool = field(default=True, metadata={"help": "Decode JPEGs at the smallest power-of-two reduction that still covers --resolution (libjpeg DCT scaling, "
                                                             "the resize after it gets up to 10x cheaper; see bench/README.md \"Readers\"). --no_jpeg_draft / --jpeg_draft False: full-size decode."})
    num_logging_prompts: int = field(default=8, metadata={"help": "How many distinct training captions the logged prompt grid uses."})


def check_args(model_args, data_args, training_args):
    """Range-check the three argument groups before anything is loaded or written.

    * Trainer arguments: :func:`common.arg_checks.check_trainer_arguments` (``--max_steps`` > 0,
      or -1 with ``--do_train`` and ``--num_train_epochs`` > 0; lr, batch, logging/save steps > 0 ...),
      plus ``--unet_learning_rate`` / ``--text_encoder_learning_rate`` > 0 and ``--ema_decay`` in [0, 1];
    * ``--resolution``: a positive multiple of the VAE's downsampling factor (8 for the Stable
      Diffusion VAEs, 4 for the demo VAE), so the latents have whole pixels;
    * ``--num_inference_steps``, ``--tokenizer_vocab_size``, ``--model_max_length``, ``--snr_gamma``,
      ``--buffer_size`` > 0; ``--noise_offset``, ``--input_perturbation``, ``--num_logging_prompts`` >= 0;
      ``--proportion_empty_prompts`` in [0, 1];
    * a ``*.json`` ``--unet_name_or_path`` / ``--text_encoder_name_or_path`` is read, so a
      missing or malformed config is named now rather than after the tokenizer is trained.

    Raises:
        ValueError: the first argument out of range (flag, value and what was expected), or a
            malformed config file (named, with line and column).
        FileNotFoundError: a config file that does not exist.
    """
    check_trainer_arguments(training_args)
    require_positive(training_args, "unet_learning_rate", "text_encoder_learning_rate")
    require_range(training_args, "ema_decay", 0, 1)
    require_positive(model_args, "num_inference_steps", "tokenizer_vocab_size", "model_max_length", "snr_gamma")
    require_non_negative(model_args, "noise_offset", "input_perturbation")
    require_range(model_args, "proportion_empty_prompts", 0, 1)
    require_positive(data_args, "buffer_size")
    require_non_negative(data_args, "num_logging_prompts")
    require_vae_multiple(training_args.resolution, model_args.vae_name_or_path or model_args.pretrained_model_name_or_path or "auto")
    for flag, name in (("--unet_name_or_path", model_args.unet_name_or_path), ("--text_encoder_name_or_path", model_args.text_encoder_name_or_path)):
        if name and str(name).endswith(".json"):
            read_json_config(name, flag)
