"""U-ViT with the call convention of ``LDMTextToImagePipeline``.

ppdiffusers' ``LDMTextToImagePipeline`` calls its denoiser as
``unet(latents, t, encoder_hidden_states=text_embeddings).sample`` (the UNet convention), while
``UViTT2IModel.forward`` is ``(img, timesteps, context)``.  :class:`LDMUViTT2IModel` is
``UViTT2IModel`` with the same parameters and config plus that keyword, so a U-ViT can sit in the
``unet/`` folder of an ``LDMTextToImagePipeline``.  ``generate_pipelines.py`` copies this file
into ``unet/`` and names it in ``model_index.json``; ``DiffusionPipeline.from_pretrained`` then
imports it from the folder (ppdiffusers' custom-component loading), so the exported pipeline
needs only ppdiffusers to load.

This file must stay self-contained (it is imported on its own from the pipeline folder).
"""
import paddle
from ppdiffusers import UViTT2IModel


class LDMUViTT2IModel(UViTT2IModel):
    """``UViTT2IModel`` that also accepts ``encoder_hidden_states`` (UNet-style keyword).

    Call as ``model(sample, timestep, encoder_hidden_states=context)`` or
    ``model(sample, timestep, context)``:

    * ``sample``: float latents ``(B, in_channels, sample_size, sample_size)``.
    * ``timestep``: int/float scalar or tensor of shape ``[]``, ``[1]`` or ``[B]``.
    * ``context``: text features ``(B, num_text_tokens, clip_dim)``.

    Returns ``UViTT2IModelOutput`` with ``sample`` of the shape of the input (predicted noise),
    or a 1-tuple when ``return_dict=False``.

    Raises:
        ValueError: neither or both of ``context`` / ``encoder_hidden_states`` given.
    """

    def forward(self, sample, timestep, context=None, encoder_hidden_states=None, return_dict=True, **kwargs):
        if (context is None) == (encoder_hidden_states is None):
            raise ValueError("pass the text features as exactly one of `context` or `encoder_hidden_states`")
        context = context if context is not None else encoder_hidden_states
        if not isinstance(timestep, paddle.Tensor):
            timestep = paddle.to_tensor(timestep)
        timestep = timestep.reshape([-1]) if timestep.ndim > 0 else timestep
        return super().forward(sample, timestep, context, return_dict=return_dict)
