"""U-ViT with the call convention of ``LDMTextToImagePipeline``.

ppdiffusers' ``LDMTextToImagePipeline`` calls its denoiser as
``unet(latents, t, encoder_hidden_states=text_embeddings).sample`` (the UNet convention), while
``UViTT2IModel.forward`` is ``(img, timesteps, context)``.  :class:`LDMUViTT2IModel` is
``UViTT2IModel`` with the same parameters and config plus that keyword, so a U-ViT can sit in the
``unet/`` folder of an ``LDMTextToImagePipeline``.  ``generate_pipelines.py`` copies this file
into ``unet/`` and names it in ``model_index.json``; ``DiffusionPipeline.from_pretrained`` then
imports it from the folder (ppdiffusers' custom-component loading), so the exported pipeline
needs only ppdiffusers to load.

Image size.  ``LDMTextToImagePipeline`` makes latents of ``height // 8`` (it assumes an f8
autoencoder) and its default ``height`` is ``unet.config.sample_size * vae_scale_factor``.  So
the config keeps two sizes: ``latent_size``, the side of the latents the U-ViT takes (its
``UViTT2IModel`` ``sample_size``; default: ``sample_size``), and ``sample_size``, the size the
pipeline reads, which must be ``latent_size * 8 / vae_scale_factor`` for the default call to
make latents the U-ViT takes (:func:`pipeline_sample_size`).  With an f8 autoencoder (the SD
VAE) both are equal; with the f4 demo VAE the export writes ``sample_size`` 16 and
``latent_size`` 8, and ``pipe(prompt)`` makes 8x8 latents that decode to 32x32 images.

``timestep_offset`` (config, default 0) is added to every timestep before the network sees it:
official U-ViT checkpoints (baofff/U-ViT ``train_t2i_discrete.py``) were trained with noise levels
``n = t + 1`` in 1..1000 for the scheduler's ``t`` in 0..999, so ``convert_official_uvit.py``
writes ``timestep_offset: 1``; models this project trains see ``t`` itself (offset 0).

This file must stay self-contained (it is imported on its own from the pipeline folder).
"""
import paddle
from ppdiffusers import UViTT2IModel
from ppdiffusers.configuration_utils import register_to_config


def pipeline_sample_size(latent_size, vae_scale_factor):
    """The ``sample_size`` for which ``LDMTextToImagePipeline``'s default call makes latents of
    side ``latent_size``: its default height is ``sample_size * vae_scale_factor`` and it makes
    ``height // 8`` latents, so ``sample_size = latent_size * 8 / vae_scale_factor``.

    Args:
        latent_size: int > 0, the latent side the U-ViT takes.
        vae_scale_factor: int > 0, ``2 ** (len(vqvae.config.block_out_channels) - 1)`` (the
            pipeline's ``vae_scale_factor``): 8 for the SD VAE, 4 for the demo VAE.

    Returns:
        int: e.g. ``(32, 8) -> 32``, ``(8, 4) -> 16``.

    Raises:
        ValueError: a size is not a positive int, or ``latent_size * 8`` is not a multiple of
            ``vae_scale_factor`` (no default height gives those latents).
    """
    for name, value in (("latent_size", latent_size), ("vae_scale_factor", vae_scale_factor)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if (latent_size * 8) % vae_scale_factor:
        raise ValueError(f"latent_size {latent_size} * 8 is not a multiple of vae_scale_factor {vae_scale_factor}: "
                         "LDMTextToImagePipeline's default height cannot give these latents")
    return latent_size * 8 // vae_scale_factor


class LDMUViTT2IModel(UViTT2IModel):
    """``UViTT2IModel`` that also accepts ``encoder_hidden_states`` (UNet-style keyword).

    Call as ``model(sample, timestep, encoder_hidden_states=context)`` or
    ``model(sample, timestep, context)``:

    * ``sample``: float latents ``(B, in_channels, latent_size, latent_size)``.
    * ``timestep``: int/float scalar or tensor of shape ``[]``, ``[1]`` or ``[B]`` (the scheduler's
      step; ``timestep_offset`` is added before the embedding).
    * ``context``: text features ``(B, num_text_tokens, clip_dim)``.

    Returns ``UViTT2IModelOutput`` with ``sample`` of the shape of the input (predicted noise),
    or a 1-tuple when ``return_dict=False``.

    Config: as ``UViTT2IModel``, plus ``latent_size`` (the U-ViT's latent side; ``None``: equal to
    ``sample_size``, which is then also the size the pipeline reads, see the module docstring) and
    ``timestep_offset``.

    Raises:
        ValueError: neither or both of ``context`` / ``encoder_hidden_states`` given, or latents
            that are not ``latent_size x latent_size``.
    """

    @register_to_config
    def __init__(self, sample_size=None, in_channels=None, out_channels=None, patch_size=2, num_layers=28, num_attention_heads=16,
                 attention_head_dim=72, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, pos_drop_rate=0.0, drop_rate=0.0, attn_drop_rate=0.0,
                 norm_type="layer_norm", clip_dim=768, num_text_tokens=77, conv=True, timestep_offset=0, latent_size=None):
        super().__init__(sample_size=latent_size or sample_size, in_channels=in_channels, out_channels=out_channels, patch_size=patch_size,
                         num_layers=num_layers, num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim,
                         mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, pos_drop_rate=pos_drop_rate, drop_rate=drop_rate,
                         attn_drop_rate=attn_drop_rate, norm_type=norm_type, clip_dim=clip_dim, num_text_tokens=num_text_tokens, conv=conv)
        self.register_to_config(sample_size=sample_size)  # UViTT2IModel.__init__ registered its own (the latent side)
        self.timestep_offset = timestep_offset

    def forward(self, sample, timestep, context=None, encoder_hidden_states=None, return_dict=True, **kwargs):
        if (context is None) == (encoder_hidden_states is None):
            raise ValueError("pass the text features as exactly one of `context` or `encoder_hidden_states`")
        context = context if context is not None else encoder_hidden_states
        if tuple(sample.shape[-2:]) != tuple(self.img_size):
            raise ValueError(
                f"latents of {sample.shape[-2]}x{sample.shape[-1]}, but this U-ViT takes {self.img_size[0]}x{self.img_size[1]} "
                f"(latent_size); LDMTextToImagePipeline makes height // 8 latents, so leave height/width unset or pass "
                f"height = width = {8 * self.img_size[0]}"
            )
        if not isinstance(timestep, paddle.Tensor):
            timestep = paddle.to_tensor(timestep)
        timestep = timestep.reshape([-1]) if timestep.ndim > 0 else timestep
        if self.timestep_offset:
            timestep = timestep + self.timestep_offset
        return super().forward(sample, timestep, context, return_dict=return_dict)
