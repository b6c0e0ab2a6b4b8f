"""Stable Diffusion training pieces: model + objective, datasets, Trainer subclass, pipeline helpers,
and the offline text side (tokenizer training, text encoder from a config)."""
