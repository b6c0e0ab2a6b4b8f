"""Losses for training an AutoencoderKL: LPIPS, a PatchGAN discriminator and the combined
"LPIPS with discriminator" objective of latent diffusion.

Sources of the formulas:

* LPIPS: Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
  Metric", eq. 1 -- unit-normalise VGG16 activations channel-wise at 5 layers, square their
  difference, weight channels with a learned 1x1 conv (the "lin" heads), average over space,
  sum over layers.
* PatchGAN discriminator: Isola et al. 2017 (pix2pix) ``NLayerDiscriminator``.
* Reconstruction NLL with one learned log-variance, KL to N(0, I), hinge GAN loss and the
  adaptive generator weight ``||grad nll|| / (||grad g_loss|| + 1e-4)`` taken at the decoder's
  last layer: Esser et al. 2021 (Taming Transformers, eq. 7) and Rombach et al. 2022 (latent
  diffusion), ``LPIPSWithDiscriminator``.

Images everywhere are float32 ``(B, 3, H, W)`` in ``[-1, 1]``.
"""
import os

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

__all__ = [
    "VGG16_URL",
    "lpips_heads_path",
    "LPIPS",
    "NLayerDiscriminator",
    "hinge_d_loss",
    "vanilla_d_loss",
    "adaptive_generator_weight",
    "LPIPSWithDiscriminator",
]

# paddle.vision's ImageNet VGG16 (what ``paddle.vision.models.vgg16(pretrained=True)`` fetches)
VGG16_URL = "https://paddle-hapi.bj.bcebos.com/models/vgg16.pdparams"
VGG16_MD5 = "89bbffc0f87d260be9b8cdc169c991c4"
# indices (in vgg16().features) of the ReLUs whose outputs LPIPS compares: relu1_2 .. relu5_3
_LPIPS_TAPS = (3, 8, 15, 22, 29)
_LPIPS_CHANNELS = (64, 128, 256, 512, 512)


def lpips_heads_path():
    """Path of the learned LPIPS v0.1 VGG heads shipped in the ``paddle-lpips`` wheel.

    Raises:
        ImportError: ``paddle_lpips`` is not installed (it is in requirements.txt).
        FileNotFoundError: the wheel does not contain ``weights/v0.1/vgg.pdparams``.
    """
    try:
        import paddle_lpips
    except ImportError as e:
        raise ImportError("LPIPS needs the learned heads from the 'paddle-lpips' package (pip install paddle-lpips), or pass --perceptual_weight 0") from e
    path = os.path.join(os.path.dirname(paddle_lpips.__file__), "weights", "v0.1", "vgg.pdparams")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"paddle-lpips is installed but has no LPIPS VGG heads at {path!r}")
    return path


def _load_vgg16_features_state(vgg_path):
    """Return a ``features.*`` state dict of ImageNet VGG16 from a local file or the paddle URL."""
    if vgg_path:
        if not os.path.isfile(vgg_path):
            raise FileNotFoundError(
                f"--lpips_backbone_path {vgg_path!r} does not exist; expected paddle.vision VGG16 ImageNet weights "
                f"(vgg16.pdparams from {VGG16_URL}), or pass --perceptual_weight 0 to train without LPIPS"
            )
        path = vgg_path
    else:
        from paddle.utils.download import get_weights_path_from_url

        try:
            path = get_weights_path_from_url(VGG16_URL, VGG16_MD5)
        except Exception as e:
            raise RuntimeError(
                f"LPIPS needs ImageNet VGG16 weights: none given with --lpips_backbone_path and downloading {VGG16_URL} failed "
                f"({type(e).__name__}: {e}). Download that file and pass its path with --lpips_backbone_path, "
                "or pass --perceptual_weight 0 to train without the perceptual loss"
            ) from None
    state = paddle.load(path)
    feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if not feats:  # a features-only state dict ("0.weight", ...)
        feats = {k: v for k, v in state.items() if k.split(".")[0].isdigit()}
    if not feats:
        raise ValueError(f"{path!r} holds no VGG16 'features.*' weights (keys: {list(state)[:5]} ...)")
    return feats


class LPIPS(nn.Layer):
    """Learned perceptual distance (LPIPS v0.1, VGG16 trunk) that passes gradients to its inputs.

    Args:
        backbone_path: local ``vgg16.pdparams`` (paddle.vision ImageNet weights, full model or
            ``features`` only); ``None`` downloads :data:`VGG16_URL` (needs a network).
        heads_path: learned linear heads; default: the ones in the ``paddle-lpips`` wheel.

    Every parameter is frozen (``stop_gradient=True``) and the layer stays in eval mode, but
    the graph to the inputs is kept, so ``LPIPS(x, y).mean().backward()`` gives ``x.grad``.

    ``forward(x, y)``: ``(B, 3, H, W)`` images in ``[-1, 1]`` -> ``(B, 1, 1, 1)`` distances (>= 0).

    Raises:
        FileNotFoundError / RuntimeError: backbone weights missing or unreachable (message says
            to pass ``--lpips_backbone_path`` or ``--perceptual_weight 0``).
    """

    def __init__(self, backbone_path=None, heads_path=None):
        super().__init__()
        from paddle.vision.models import vgg16

        self.features = vgg16(pretrained=False, with_pool=False, num_classes=0).features[: _LPIPS_TAPS[-1] + 1]
        feats = _load_vgg16_features_state(backbone_path)
        wanted = {k: v for k, v in feats.items() if int(k.split(".")[0]) <= _LPIPS_TAPS[-1]}
        missing = [k for k in self.features.state_dict() if k not in wanted]
        if missing:
            raise ValueError(f"VGG16 weights file is missing {missing[:4]} (expected paddle.vision vgg16 'features.*' keys)")
        self.features.set_state_dict(wanted)
        self.lins = nn.LayerList([nn.Conv2D(c, 1, 1, bias_attr=False) for c in _LPIPS_CHANNELS])
        heads = paddle.load(heads_path or lpips_heads_path())
        for i, lin in enumerate(self.lins):
            key = f"lin{i}.model.1.weight"
            if key not in heads:
                raise ValueError(f"LPIPS heads file {heads_path or lpips_heads_path()!r} has no {key!r}")
            lin.weight.set_value(heads[key])
        # ImageNet-style input scaling used by LPIPS (inputs in [-1, 1])
        self.register_buffer("shift", paddle.to_tensor([-0.030, -0.088, -0.188], dtype="float32").reshape([1, 3, 1, 1]))
        self.register_buffer("scale", paddle.to_tensor([0.458, 0.448, 0.450], dtype="float32").reshape([1, 3, 1, 1]))
        for p in self.parameters():
            p.stop_gradient = True
        self.eval()

    def _taps(self, x):
        outs = []
        h = (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _LPIPS_TAPS:
                outs.append(h)
        return outs

    def forward(self, x, y):
        total = 0.0
        for lin, fx, fy in zip(self.lins, self._taps(x), self._taps(y)):
            fx = fx / (paddle.sqrt(paddle.sum(fx * fx, axis=1, keepdim=True)) + 1e-10)
            fy = fy / (paddle.sqrt(paddle.sum(fy * fy, axis=1, keepdim=True)) + 1e-10)
            total = total + lin((fx - fy) ** 2).mean(axis=[2, 3], keepdim=True)
        return total


class NLayerDiscriminator(nn.Layer):
    """PatchGAN discriminator (pix2pix): ``(B, C, H, W)`` image -> ``(B, 1, h, w)`` logits.

    Args:
        input_nc: image channels.
        ndf: filters of the first conv (doubled per layer up to 8x).
        n_layers: number of stride-2 convs after the first (3 gives a 70x70 receptive field).

    Weights start as N(0, 0.02) for convs and N(1, 0.02) for batch-norm scales (pix2pix).
    """

    def __init__(self, input_nc=3, ndf=64, n_layers=3):
        super().__init__()
        kw, pad = 4, 1
        layers = [nn.Conv2D(input_nc, ndf, kw, stride=2, padding=pad), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2D(ndf * prev, ndf * mult, kw, stride=stride, padding=pad, bias_attr=False), nn.BatchNorm2D(ndf * mult), nn.LeakyReLU(0.2)]
        layers += [nn.Conv2D(ndf * mult, 1, kw, stride=1, padding=pad)]
        self.main = nn.Sequential(*layers)
        for layer in self.sublayers():
            if isinstance(layer, nn.Conv2D):
                layer.weight.set_value(paddle.normal(0.0, 0.02, layer.weight.shape))
            elif isinstance(layer, nn.BatchNorm2D):
                layer.weight.set_value(paddle.normal(1.0, 0.02, layer.weight.shape))
                layer.bias.set_value(paddle.zeros_like(layer.bias))

    def forward(self, x):
        return self.main(x)


def hinge_d_loss(logits_real, logits_fake):
    """Hinge discriminator loss ``0.5 * (E[relu(1 - D(x))] + E[relu(1 + D(x_hat))])``."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real, logits_fake):
    """Non-saturating GAN discriminator loss ``0.5 * (E[softplus(-D(x))] + E[softplus(D(x_hat))])``."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def adaptive_generator_weight(nll_loss, g_loss, last_layer, disc_weight=1.0):
    """Balance the GAN term against the reconstruction term (Taming Transformers eq. 7).

    ``lambda = ||d nll / d w_L|| / (||d g_loss / d w_L|| + 1e-4)``, clipped to ``[0, 1e4]``,
    detached and multiplied by ``disc_weight``; ``w_L`` is ``last_layer`` (the decoder's
    output conv weight).  Both losses must still hold their graphs (``retain_graph`` is used).

    Returns a 0-d float32 tensor without gradient.
    """
    nll_grad = paddle.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grad = paddle.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = paddle.linalg.norm(nll_grad) / (paddle.linalg.norm(g_grad) + 1e-4)
    return (paddle.clip(weight, 0.0, 1e4) * disc_weight).detach()


class LPIPSWithDiscriminator(nn.Layer):
    """Reconstruction (L1 + LPIPS) NLL with a learned log-variance, KL and a PatchGAN loss.

    Args:
        disc_start: first global step (0-based count of finished steps) at which the GAN terms
            are on; before it the generator loss has no GAN term and the discriminator is not
            trained.
        logvar_init: initial value of the learned scalar log-variance (a trainable parameter:
            put :attr:`logvar` in the generator optimizer).
        kl_weight, pixelloss_weight, perceptual_weight, disc_factor, disc_weight: term weights.
        disc_num_layers, disc_in_channels, disc_ndf: discriminator shape.
        disc_loss: ``"hinge"`` or ``"vanilla"``.
        lpips_backbone_path: VGG16 weights for LPIPS (see :class:`LPIPS`); unused when
            ``perceptual_weight == 0`` (then no LPIPS is built and nothing is loaded).

    The LPIPS network is kept outside ``state_dict`` (it is fixed), so checkpoints hold only the
    discriminator and ``logvar``.
    """

    def __init__(self, disc_start, logvar_init=0.0, kl_weight=1.0, pixelloss_weight=1.0, disc_num_layers=3, disc_in_channels=3, disc_factor=1.0, disc_weight=1.0, perceptual_weight=1.0, disc_loss="hinge", disc_ndf=64, lpips_backbone_path=None):
        super().__init__()
        if disc_loss not in ("hinge", "vanilla"):
            raise ValueError(f"disc_loss must be 'hinge' or 'vanilla', got {disc_loss!r}")
        self.disc_start = int(disc_start)
        self.kl_weight = kl_weight
        self.pixel_weight = pixelloss_weight
        self.perceptual_weight = perceptual_weight
        self.disc_factor = disc_factor
        self.discriminator_weight = disc_weight
        self.logvar = self.create_parameter([1], dtype="float32", default_initializer=nn.initializer.Constant(logvar_init))
        self.discriminator = NLayerDiscriminator(input_nc=disc_in_channels, ndf=disc_ndf, n_layers=disc_num_layers)
        self.disc_loss_fn = hinge_d_loss if disc_loss == "hinge" else vanilla_d_loss
        # a plain attribute (not a sublayer): fixed weights, kept out of state_dict/parameters()
        object.__setattr__(self, "_lpips", LPIPS(lpips_backbone_path) if perceptual_weight > 0 else None)

    def disc_active(self, global_step):
        """Whether the GAN terms are on at ``global_step``."""
        return global_step >= self.disc_start and self.disc_factor > 0

    def generator_loss(self, inputs, reconstructions, post_mean, post_logvar, global_step, last_layer=None, discriminator=None):
        """Loss for the autoencoder (and ``logvar``) update.

        Args:
            inputs, reconstructions: ``(B, C, H, W)`` in ``[-1, 1]`` (same shape).
            post_mean, post_logvar: posterior parameters ``(B, z, h, w)``.
            global_step: finished steps so far (decides whether the GAN term is on).
            last_layer: decoder output-conv weight, for the adaptive weight (needed when the GAN
                term is on).
            discriminator: the layer to call (e.g. a data-parallel wrapper); default own one.

        Returns:
            ``(loss, logs)``: scalar tensor with gradient, dict of floats.
        """
        if inputs.shape != reconstructions.shape:
            raise ValueError(f"reconstruction shape {reconstructions.shape} != target shape {inputs.shape}")
        rec_loss = paddle.abs(inputs - reconstructions)
        l1 = rec_loss.mean()
        p_loss = paddle.zeros([1])
        if self.perceptual_weight > 0:
            p_loss = self._lpips(inputs, reconstructions)  # (B,1,1,1), graph to reconstructions kept
            rec_loss = self.pixel_weight * rec_loss + self.perceptual_weight * p_loss
        else:
            rec_loss = self.pixel_weight * rec_loss
        batch = inputs.shape[0]
        nll = rec_loss / paddle.exp(self.logvar) + self.logvar
        nll_loss = nll.sum() / batch
        kl = 0.5 * paddle.sum(post_mean**2 + paddle.exp(post_logvar) - 1.0 - post_logvar, axis=[1, 2, 3])
        kl_loss = kl.sum() / batch
        loss = nll_loss + self.kl_weight * kl_loss
        logs = {"rec_loss": float(l1), "p_loss": float(p_loss.mean()), "nll_loss": float(nll_loss), "kl_loss": float(kl_loss), "logvar": float(self.logvar.item())}
        if self.disc_active(global_step):
            disc = discriminator or self.discriminator
            g_loss = -disc(reconstructions).mean()
            if last_layer is None:
                raise ValueError("generator_loss needs last_layer (decoder.conv_out.weight) once the discriminator is on")
            d_weight = adaptive_generator_weight(nll_loss, g_loss, last_layer, self.discriminator_weight)
            loss = loss + d_weight * self.disc_factor * g_loss
            logs.update(g_loss=float(g_loss), d_weight=float(d_weight))
        logs["ae_loss"] = float(loss)
        return loss, logs

    def discriminator_loss(self, inputs, reconstructions, global_step, discriminator=None):
        """Loss for the discriminator update (``reconstructions`` are detached here).

        Returns ``(loss, logs)``; the loss is zero-weighted before ``disc_start``.
        """
        disc = discriminator or self.discriminator
        logits_real = disc(inputs.detach())
        logits_fake = disc(reconstructions.detach())
        factor = self.disc_factor if self.disc_active(global_step) else 0.0
        loss = factor * self.disc_loss_fn(logits_real, logits_fake)
        return loss, {"disc_loss": float(loss), "logits_real": float(logits_real.mean()), "logits_fake": float(logits_fake.mean())}
