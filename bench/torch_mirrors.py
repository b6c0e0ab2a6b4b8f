"""PyTorch + diffusers mirrors of the Paddle bench rows, for ``--compare torch`` (see bench_common).

    <python with torch + diffusers> bench/torch_mirrors.py '<json spec>'

The spec comes from the Paddle row (``result["torch"]``): the model configs read back from the
Paddle model, the batch, the shapes, warm-up and timed steps.  Each kind builds the same network
from the diffusers class that mirrors the ppdiffusers one, runs the same training step (fp32,
same optimizer and hyper-parameters) and prints ``BENCH {json}`` with its parameter count, so the
parent can check that both sides hold the same model:

* ``unet2d`` -- ``UNet2DModel``, DDPM epsilon MSE (``DDPMScheduler.add_noise``), AdamW(1e-4).
* ``dit``    -- the class_conditional DiT (patchify, adaLN-Zero blocks, shared t/y embedders),
  assembled from the same diffusers blocks ppdiffusers provides (``PatchEmbed``, ``Timesteps``,
  ``TimestepEmbedding``, ``LabelEmbedding``, ``Attention``, ``FeedForward``), SiT Linear-path
  velocity loss, AdamW(1e-4) and an ``EMAModel`` update per step.
* ``sd``     -- frozen ``AutoencoderKL`` encode + frozen transformers ``CLIPTextModel`` +
  ``UNet2DConditionModel`` epsilon MSE, AdamW(1e-4) on the UNet.
* ``vae``    -- ``AutoencoderKL`` (diffusers ``Encoder``/``Decoder`` so the f8-encoder / f16-decoder
  channel lists are honoured), L1 (+ LPIPS when ``lpips``: VGG16 trunk to relu5_3 with random weights,
  five 1x1 heads, as autoencoder/vae_losses.LPIPS) + KL + learned log-variance, and when ``gan``: PatchGAN
  (pix2pix ``NLayerDiscriminator``) hinge loss with the adaptive generator weight
  (Esser et al. 2021, eq. 7) and a discriminator step; Adam(1e-4, betas 0.5/0.9).
* ``sampling_ddpm`` / ``sampling_dit`` / ``sampling_sd`` -- no training: diffusers' ``DDPMPipeline``
  (``UNet2DModel`` + the Paddle row's scheduler class, ``DDPMScheduler`` for the main job's ancestral sampling), ``DiTPipeline`` (``Transformer2DModel``, the ppdiffusers
  class the project exports its DiT to, + ``AutoencoderKL`` + ``DDIMScheduler``) and
  ``StableDiffusionPipeline`` (``UNet2DConditionModel`` + ``CLIPTextModel`` + ``AutoencoderKL`` +
  ``DPMSolverMultistepScheduler``, the Paddle row's CLIP BPE tokenizer files) with the Paddle
  row's model and scheduler configs; one ``warmup_steps``-step call, then ``steps`` timed full
  calls of ``num_inference_steps`` (bench/bench_sampling.py).

Threads: ``torch.set_num_threads($OMP_NUM_THREADS)`` (the parent sets it for both frameworks).
This file imports no paddle.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import emit, time_steps  # noqa: E402


def _count(module):
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def _count_all(module):
    return int(sum(p.numel() for p in module.parameters()))


def _clean(config):
    return {k: v for k, v in config.items() if not k.startswith("_")}


def run_unet2d(spec):
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, UNet2DModel

    unet = UNet2DModel.from_config(_clean(spec["config"]))
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=0.01)
    b, r = spec["batch"], spec["resolution"]
    x = torch.rand(b, spec["config"]["in_channels"], r, r) * 2 - 1

    def step():
        noise = torch.randn_like(x)
        t = torch.randint(0, 1000, (b,))
        loss = F.mse_loss(unet(scheduler.add_noise(x, noise, t), t).sample, noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()

    return unet, step


def _build_dit(cfg):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from diffusers.models.attention import FeedForward
    from diffusers.models.attention_processor import Attention
    from diffusers.models.embeddings import LabelEmbedding, PatchEmbed, TimestepEmbedding, Timesteps

    class Block(nn.Module):
        def __init__(self, d, heads, mlp_ratio):
            super().__init__()
            self.norm1 = nn.LayerNorm(d, eps=1e-6, elementwise_affine=False)
            self.adaLN_modulation = nn.Linear(d, 6 * d)
            self.attn1 = Attention(query_dim=d, heads=heads, dim_head=d // heads, bias=True)
            self.norm3 = nn.LayerNorm(d, eps=1e-6, elementwise_affine=False)
            self.ff = FeedForward(d, mult=mlp_ratio, activation_fn="gelu-approximate")

        def forward(self, x, c):
            s1, sc1, g1, s2, sc2, g2 = self.adaLN_modulation(F.silu(c)).chunk(6, dim=1)
            x = x + g1[:, None] * self.attn1(self.norm1(x) * (1 + sc1[:, None]) + s1[:, None])
            return x + g2[:, None] * self.ff(self.norm3(x) * (1 + sc2[:, None]) + s2[:, None])

    class DiT(nn.Module):
        def __init__(self, input_size, patch_size, in_channels, hidden_size, depth, num_heads, mlp_ratio=4.0,
                     class_dropout_prob=0.1, num_classes=1000, learn_sigma=True, downscale_freq_shift=0):
            super().__init__()
            self.p, self.out_channels = patch_size, in_channels * (2 if learn_sigma else 1)
            self.pos_embed = PatchEmbed(height=input_size, width=input_size, patch_size=patch_size, in_channels=in_channels,
                                        embed_dim=hidden_size, interpolation_scale=max(input_size // 64, 1))
            self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=downscale_freq_shift)
            self.timestep_embedder = TimestepEmbedding(256, hidden_size)
            self.class_embedder = LabelEmbedding(num_classes, hidden_size, class_dropout_prob)
            self.transformer_blocks = nn.ModuleList([Block(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
            self.norm_out = nn.LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
            self.proj_out_1 = nn.Linear(hidden_size, 2 * hidden_size)
            self.proj_out_2 = nn.Linear(hidden_size, patch_size * patch_size * self.out_channels)

        def forward(self, x, t, y):
            h = self.pos_embed(x)
            c = self.timestep_embedder(self.time_proj(t)) + self.class_embedder(y)
            for block in self.transformer_blocks:
                h = block(h, c)
            shift, scale = self.proj_out_1(F.silu(c)).chunk(2, dim=1)
            h = self.proj_out_2(self.norm_out(h) * (1 + scale[:, None]) + shift[:, None])
            n, tokens, _ = h.shape
            s = int(round(tokens**0.5))
            h = h.reshape(n, s, s, self.p, self.p, self.out_channels).permute(0, 5, 1, 3, 2, 4)
            return h.reshape(n, self.out_channels, s * self.p, s * self.p)

    return DiT(**cfg), torch


def run_dit(spec):
    from diffusers.training_utils import EMAModel

    model, torch = _build_dit(spec["config"])
    model.train()
    cfg, b = spec["config"], spec["batch"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    ema = EMAModel(model.parameters())
    x1 = torch.randn(b, cfg["in_channels"], cfg["input_size"], cfg["input_size"])
    y = torch.randint(0, 10, (b,))

    def step():
        # SiT Linear path, velocity target: x_t = t x1 + (1 - t) x0, u_t = x1 - x0
        x0 = torch.randn_like(x1)
        t = torch.rand(b)
        tt = t[:, None, None, None]
        out = model(tt * x1 + (1 - tt) * x0, t, y)[:, : x1.shape[1]]
        loss = ((out - (x1 - x0)) ** 2).mean(dim=[1, 2, 3]).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.step(model.parameters())
        loss.item()

    return model, step


def run_sd(spec):
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vae = AutoencoderKL.from_config(_clean(spec["vae"])).eval().requires_grad_(False)
    text_encoder = CLIPTextModel(CLIPTextConfig(**spec["text"])).eval().requires_grad_(False)
    unet = UNet2DConditionModel.from_config(_clean(spec["unet"])).train()
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=0.01)
    b, r = spec["batch"], spec["resolution"]
    pixels = torch.rand(b, 3, r, r) * 2 - 1
    ids = torch.randint(0, spec["text"]["vocab_size"], (b, spec["tokens"]))
    scaling = spec["vae"].get("scaling_factor", 0.18215)

    def step():
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * scaling
            states = text_encoder(ids)[0]
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (b,))
        pred = unet(scheduler.add_noise(latents, noise, t), t, states).sample
        loss = F.mse_loss(pred, noise, reduction="none").mean(dim=[1, 2, 3]).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()

    step.params_other = _count_all(vae) + _count_all(text_encoder)
    return unet, step


def _patchgan(input_nc, ndf, n_layers):
    import torch.nn as nn

    layers, mult = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2)], 1
    for n in range(1, n_layers + 1):
        prev, mult = mult, min(2**n, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2 if n < n_layers else 1, padding=1, bias=False),
                   nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))


def _lpips_vgg16():
    """LPIPS v0.1 on a VGG16 trunk (Zhang et al. 2018), the layout of autoencoder/vae_losses.LPIPS: input scaling,
    conv3x3+ReLU stages with max-pools, taps after relu1_2 .. relu5_3, unit-normalised channel features, squared
    difference, a 1x1 head per tap, spatial mean, summed.  Random frozen weights (timing only); the graph to the
    inputs is kept.  Returns ``lpips(x, y) -> (B, 1, 1, 1)``."""
    import torch
    import torch.nn as nn

    layers, c_in = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU()]
            c_in = v
    taps = (3, 8, 15, 22, 29)
    features = nn.Sequential(*layers[: taps[-1] + 1]).eval().requires_grad_(False)
    heads = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in (64, 128, 256, 512, 512)]).eval().requires_grad_(False)
    shift = torch.tensor([-0.030, -0.088, -0.188]).reshape(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).reshape(1, 3, 1, 1)

    def tapped(x):
        outs, h = [], (x - shift) / scale
        for i, layer in enumerate(features):
            h = layer(h)
            if i in taps:
                outs.append(h)
        return outs

    def lpips(x, y):
        total = 0.0
        for head, fx, fy in zip(heads, tapped(x), tapped(y)):
            fx = fx / (torch.sqrt(torch.sum(fx * fx, dim=1, keepdim=True)) + 1e-10)
            fy = fy / (torch.sqrt(torch.sum(fy * fy, dim=1, keepdim=True)) + 1e-10)
            total = total + head((fx - fy) ** 2).mean(dim=(2, 3), keepdim=True)
        return total

    return lpips


def run_vae(spec):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from diffusers.models.autoencoders.vae import Decoder, DiagonalGaussianDistribution, Encoder

    cfg = spec["config"]
    down = cfg.get("down_block_out_channels") or cfg["block_out_channels"]
    up = cfg.get("up_block_out_channels") or cfg["block_out_channels"]
    z = cfg["latent_channels"]

    class VAE(nn.Module):  # AutoencoderKL with separate encoder / decoder channel lists (as ppdiffusers allows)
        def __init__(self):
            super().__init__()
            common = dict(layers_per_block=cfg["layers_per_block"], norm_num_groups=cfg["norm_num_groups"], act_fn=cfg["act_fn"])
            self.encoder = Encoder(in_channels=cfg["in_channels"], out_channels=z, down_block_types=tuple(cfg["down_block_types"]),
                                   block_out_channels=tuple(down), double_z=True, **common)
            self.decoder = Decoder(in_channels=z, out_channels=cfg["out_channels"], up_block_types=tuple(cfg["up_block_types"]),
                                   block_out_channels=tuple(up), **common)
            self.quant_conv = nn.Conv2d(2 * z, 2 * z, 1)
            self.post_quant_conv = nn.Conv2d(z, z, 1)

        def forward(self, x):
            dist = DiagonalGaussianDistribution(self.quant_conv(self.encoder(x)))
            return self.decoder(self.post_quant_conv(dist.sample())), dist.mean, dist.logvar

    vae = VAE().train()
    logvar = nn.Parameter(torch.zeros(1))
    disc = _patchgan(**spec["disc"]).train() if spec["gan"] else None
    opt_ae = torch.optim.Adam(list(vae.parameters()) + [logvar], lr=1e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-4, betas=(0.5, 0.9)) if disc is not None else None
    b = spec["batch"]
    x = torch.rand(b, 3, spec["resolution"], spec["resolution"]) * 2 - 1
    last = vae.decoder.conv_out.weight
    lpips = _lpips_vgg16() if spec.get("lpips") else None

    def step():
        enc_in = F.interpolate(x, size=(spec["input_size"],) * 2, mode="area") if spec["input_size"] else x
        rec, mean, lv = vae(enc_in)
        rec_loss = torch.abs(x - rec) + (lpips(x, rec) if lpips is not None else 0.0)
        nll_loss = (rec_loss / torch.exp(logvar) + logvar).sum() / b
        kl_loss = (0.5 * torch.sum(mean**2 + torch.exp(lv) - 1.0 - lv, dim=[1, 2, 3])).sum() / b
        loss = nll_loss + kl_loss
        if disc is not None:
            g_loss = -disc(rec).mean()
            g1 = torch.autograd.grad(nll_loss, last, retain_graph=True)[0]
            g2 = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
            loss = loss + (torch.clamp(g1.norm() / (g2.norm() + 1e-4), 0.0, 1e4)).detach() * g_loss
        opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        opt_ae.step()
        if disc is not None:
            d_loss = 0.5 * (F.relu(1.0 - disc(x.detach())).mean() + F.relu(1.0 + disc(rec.detach())).mean())
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        loss.item()

    step.params_other = _count_all(disc) if disc is not None else None
    return vae, step


def _sampling_step(pipe, spec, **kwargs):
    """Warm up ``pipe`` with a ``warmup_steps``-step call (untimed, here) and return the timed full call."""
    import torch

    def call(n):
        pipe(num_inference_steps=n, generator=torch.Generator().manual_seed(0), output_type="np", **kwargs)

    pipe.set_progress_bar_config(disable=True)
    call(spec["warmup_steps"])
    return lambda: call(spec["num_inference_steps"])


def run_sampling_ddpm(spec):
    import diffusers
    from diffusers import DDPMPipeline, UNet2DModel

    unet = UNet2DModel.from_config(_clean(spec["unet"])).eval()
    scheduler_class = getattr(diffusers, spec.get("scheduler_class", "DDIMScheduler"))  # the Paddle row's sampler
    pipe = DDPMPipeline(unet=unet, scheduler=scheduler_class.from_config(_clean(spec["scheduler"])))
    return unet, _sampling_step(pipe, spec, batch_size=spec["batch"])


def run_sampling_dit(spec):
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, Transformer2DModel

    transformer = Transformer2DModel.from_config(_clean(spec["transformer"])).eval()
    vae = AutoencoderKL.from_config(_clean(spec["vae"])).eval()
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler.from_config(_clean(spec["scheduler"])))
    step = _sampling_step(pipe, spec, class_labels=spec["labels"], guidance_scale=spec["guidance_scale"])
    step.params_other = _count_all(vae)
    return transformer, step


def run_sampling_sd(spec):
    import tempfile

    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="torch_mirror_tok_") as tok_dir:  # the Paddle row's trained CLIP BPE files
        for name, text in spec["tokenizer_files"].items():
            with open(os.path.join(tok_dir, name), "w", encoding="utf-8") as f:
                f.write(text)
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    vae = AutoencoderKL.from_config(_clean(spec["vae"])).eval()
    text_encoder = CLIPTextModel(CLIPTextConfig(**spec["text"])).eval()
    unet = UNet2DConditionModel.from_config(_clean(spec["unet"])).eval()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DPMSolverMultistepScheduler.from_config(_clean(spec["scheduler"])),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    r = spec["resolution"]
    step = _sampling_step(pipe, spec, prompt=spec["prompts"], height=r, width=r, guidance_scale=spec["guidance_scale"])
    step.params_other = _count_all(vae) + _count_all(text_encoder)
    return unet, step


KINDS = {"unet2d": run_unet2d, "dit": run_dit, "sd": run_sd, "vae": run_vae,
         "sampling_ddpm": run_sampling_ddpm, "sampling_dit": run_sampling_dit, "sampling_sd": run_sampling_sd}


def main(argv=None):
    """Run the spec given as the one command-line argument (a JSON object with ``kind``)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: torch_mirrors.py '<json spec>' (written by a bench script's Paddle row)")
    spec = json.loads(argv[0])
    if spec.get("kind") not in KINDS:
        raise SystemExit(f"spec kind must be one of {sorted(KINDS)}, got {spec.get('kind')!r}")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(0)
    model, step = KINDS[spec["kind"]](spec)
    timing = time_steps(step, spec["warmup"], spec["steps"])
    extra = {"params_other": step.params_other} if hasattr(step, "params_other") else {}
    emit(dict(timing, **extra, framework="torch", params=_count(model), batch=spec["batch"],
              images_per_s=spec["batch"] * 1000.0 / timing["ms_per_step"], threads=torch.get_num_threads(),
              version=torch.__version__))


if __name__ == "__main__":
    main()
