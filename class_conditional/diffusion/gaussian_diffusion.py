"""Gaussian diffusion with a learned variance, as trained by DiT.

Forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) with a linear beta schedule
(Ho et al. 2020).  The model predicts eps (first ``C`` channels) and, with ``learn_sigma``, a
value ``v`` in [-1, 1] (last ``C`` channels) that interpolates the log-variance between beta_t and
the posterior variance beta~_t (Nichol & Dhariwal 2021, "Improved DDPM", eq. 15).  The training
loss is their hybrid objective: MSE on eps plus the variational-bound term, where the VB term
sees the predicted mean with gradients stopped, so it only trains the variance (eq. 16).  As in
facebookresearch/DiT ``create_diffusion`` the VB term is rescaled by ``num_timesteps / 1000``
only with ``rescale_learned_sigmas=True`` (off by default), and a model without learned sigma
samples with the fixed variance ``FIXED_LARGE`` (beta_t, with beta~_1 at t = 0) unless
``sigma_small=True`` (``FIXED_SMALL``: the posterior variance beta~_t).

Timesteps are integers in ``[0, num_timesteps)``; ``x_0`` are latents (any shape ``(N, ...)``),
float32.  Schedules are kept in float64 numpy and gathered per batch.
"""
import math

import numpy as np
import paddle

from .losses import discretized_gaussian_log_likelihood, normal_kl

__all__ = ["get_named_beta_schedule", "GaussianDiffusion", "mean_flat"]


def mean_flat(x):
    """Mean over every axis but the batch axis: ``(N, ...)`` -> ``(N,)``."""
    return x.reshape([x.shape[0], -1]).mean(axis=1)


def get_named_beta_schedule(name, num_timesteps):
    """``"linear"``: DDPM's 1e-4..0.02 rescaled to ``num_timesteps`` steps; ``"squaredcos_cap_v2"``:
    Improved DDPM's cosine schedule. Returns float64 ``(num_timesteps,)``.

    Raises:
        ValueError: unknown schedule name.
    """
    if name == "linear":
        scale = 1000.0 / num_timesteps
        return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
    if name == "squaredcos_cap_v2":
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        return np.array([min(1 - f((i + 1) / num_timesteps) / f(i / num_timesteps), 0.999) for i in range(num_timesteps)])
    raise ValueError(f"unknown beta schedule {name!r}; expected 'linear' or 'squaredcos_cap_v2'")


def _gather(arr, t, ndim):
    """``arr[t]`` as float32 tensor shaped ``(N, 1, ..., 1)`` with ``ndim`` dims."""
    out = paddle.to_tensor(arr, dtype="float64")[t.astype("int64")].astype("float32")
    return out.reshape([-1] + [1] * (ndim - 1))


class GaussianDiffusion:
    """Discrete-time diffusion with eps prediction and (optionally) learned range variance.

    Args:
        betas: float64 array ``(T,)`` in (0, 1).
        learn_sigma: the model outputs ``2C`` channels (eps, v) and the variance is learned
            (DiT's ``LEARNED_RANGE``); else ``C`` channels (eps) and a fixed variance.
        sigma_small: with ``learn_sigma=False``, sample with the posterior variance beta~_t
            (``FIXED_SMALL``); the default ``False`` uses ``FIXED_LARGE``, the variance
            ``[beta~_1, beta_1, ..., beta_{T-1}]`` (DiT's default, ``create_diffusion``).
        rescale_learned_sigmas: multiply the VB term by ``num_timesteps / 1000`` (DiT's
            ``LossType.RESCALED_MSE``); off by default, as in DiT.

    Raises:
        ValueError: betas outside (0, 1] or not 1-D.
    """

    def __init__(self, betas, learn_sigma=True, sigma_small=False, rescale_learned_sigmas=False):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or (betas <= 0).any() or (betas > 1).any():
            raise ValueError("betas must be a 1-D array with values in (0, 1]")
        self.betas = betas
        self.learn_sigma = learn_sigma
        self.sigma_small = sigma_small
        self.rescale_learned_sigmas = rescale_learned_sigmas
        self.num_timesteps = len(betas)
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        # posterior q(x_{t-1} | x_t, x_0) (DDPM eq. 6-7)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # beta~_0 is 0: use beta~_1 for the log so it stays finite
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:])) if len(betas) > 1 else np.log(betas)
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        # the fixed sampling variance when the model does not learn it (DiT p_mean_variance):
        # FIXED_SMALL = beta~_t; FIXED_LARGE = beta_t, with beta~_1 at t = 0 for a good decoder NLL
        if sigma_small:
            self.fixed_variance, self.fixed_log_variance = self.posterior_variance, self.posterior_log_variance_clipped
        else:
            large = np.append(self.posterior_variance[1], betas[1:]) if len(betas) > 1 else betas
            self.fixed_variance, self.fixed_log_variance = large, np.log(large)

    # ---- forward process -------------------------------------------------------------------
    def q_sample(self, x_start, t, noise=None):
        """Sample x_t ~ q(x_t | x_0) = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
        noise = paddle.randn(x_start.shape, dtype=x_start.dtype) if noise is None else noise
        nd = x_start.ndim
        return _gather(self.sqrt_alphas_cumprod, t, nd) * x_start + _gather(self.sqrt_one_minus_alphas_cumprod, t, nd) * noise

    def q_posterior_mean_variance(self, x_start, x_t, t):
        """Mean, variance, log-variance of q(x_{t-1} | x_t, x_0)."""
        nd = x_t.ndim
        mean = _gather(self.posterior_mean_coef1, t, nd) * x_start + _gather(self.posterior_mean_coef2, t, nd) * x_t
        return mean, _gather(self.posterior_variance, t, nd), _gather(self.posterior_log_variance_clipped, t, nd)

    # ---- model -----------------------------------------------------------------------------
    def p_mean_variance(self, model_output, x_t, t, clip_denoised=False):
        """Turn a model output into p(x_{t-1} | x_t): dict with ``mean``, ``variance``,
        ``log_variance``, ``pred_xstart``, ``eps``.

        Raises:
            ValueError: the output channel count does not fit ``learn_sigma``.
        """
        nd, c = x_t.ndim, x_t.shape[1]
        if self.learn_sigma:
            if model_output.shape[1] != 2 * c:
                raise ValueError(f"learn_sigma needs {2 * c} output channels, model gave {model_output.shape[1]}")
            eps, v = model_output[:, :c], model_output[:, c:]
            min_log = _gather(self.posterior_log_variance_clipped, t, nd)
            max_log = _gather(np.log(self.betas), t, nd)
            frac = (v + 1.0) / 2.0  # v in [-1, 1] -> [0, 1]
            log_variance = frac * max_log + (1.0 - frac) * min_log
            variance = paddle.exp(log_variance)
        else:
            if model_output.shape[1] != c:
                raise ValueError(f"expected {c} output channels, model gave {model_output.shape[1]}")
            eps = model_output
            variance = _gather(self.fixed_variance, t, nd)
            log_variance = _gather(self.fixed_log_variance, t, nd)
        pred_xstart = self.predict_xstart_from_eps(x_t, t, eps)
        if clip_denoised:
            pred_xstart = pred_xstart.clip(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x_t, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance, "pred_xstart": pred_xstart, "eps": eps}

    def predict_xstart_from_eps(self, x_t, t, eps):
        nd = x_t.ndim
        return _gather(self.sqrt_recip_alphas_cumprod, t, nd) * x_t - _gather(self.sqrt_recipm1_alphas_cumprod, t, nd) * eps

    def predict_eps_from_xstart(self, x_t, t, pred_xstart):
        nd = x_t.ndim
        return (_gather(self.sqrt_recip_alphas_cumprod, t, nd) * x_t - pred_xstart) / _gather(self.sqrt_recipm1_alphas_cumprod, t, nd)

    def _model_call(self, model, x, t, model_kwargs):
        return model(x, t, **(model_kwargs or {}))

    # ---- loss ------------------------------------------------------------------------------
    def vb_terms_bpd(self, model_output, x_start, x_t, t, clip_denoised=False):
        """Variational-bound term L_{t-1} in bits per dimension, ``(N,)``, >= 0 for t > 0
        (KL between true posterior and p(x_{t-1}|x_t)); at t == 0 the decoder NLL -log p(x_0|x_1)."""
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised=clip_denoised)
        kl = mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / math.log(2.0)
        nll = -mean_flat(discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"])) / math.log(2.0)
        return {"output": paddle.where(t == 0, nll, kl), "pred_xstart": out["pred_xstart"]}

    def training_losses(self, model, x_start, model_kwargs=None, t=None, noise=None):
        """Hybrid loss of Improved DDPM for a batch.

        Args:
            model: ``model(x_t, t, **model_kwargs)`` -> ``(N, C or 2C, ...)``.
            x_start: float32 ``(N, C, ...)`` clean latents.
            model_kwargs: e.g. ``{"y": labels}``.
            t: optional int64 ``(N,)`` timesteps (uniform random if None).
            noise: optional eps like ``x_start``.

        Returns:
            dict with ``loss`` (scalar mean over the batch), and per-sample ``mse``, ``vb``
            (``vb`` only with ``learn_sigma``).
        """
        n = x_start.shape[0]
        if t is None:
            t = paddle.randint(0, self.num_timesteps, [n], dtype="int64")
        noise = paddle.randn(x_start.shape, dtype=x_start.dtype) if noise is None else noise
        x_t = self.q_sample(x_start, t, noise=noise)
        model_output = self._model_call(model, x_t, t, model_kwargs)
        c = x_start.shape[1]
        terms = {}
        if self.learn_sigma:
            # VB term trains only the variance: the mean comes from eps with gradients stopped
            frozen = paddle.concat([model_output[:, :c].detach(), model_output[:, c:]], axis=1)
            terms["vb"] = self.vb_terms_bpd(frozen, x_start, x_t, t)["output"]
            if self.rescale_learned_sigmas:  # DiT RESCALED_MSE: VB weight independent of the step count
                terms["vb"] = terms["vb"] * (self.num_timesteps / 1000.0)
        terms["mse"] = mean_flat((model_output[:, :c] - noise) ** 2)
        per_sample = terms["mse"] + terms["vb"] if self.learn_sigma else terms["mse"]
        terms["loss"] = per_sample.mean()
        return terms

    # ---- sampling --------------------------------------------------------------------------
    def p_sample_loop(self, model, shape, model_kwargs=None, noise=None, clip_denoised=False, progress=False):
        """Ancestral sampling x_T -> x_0 with the learned (or fixed) variance. Returns ``(N, C, ...)``."""
        x = paddle.randn(shape) if noise is None else noise
        steps = range(self.num_timesteps - 1, -1, -1)
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps)
        with paddle.no_grad():
            for i in steps:
                t = paddle.full([shape[0]], i, dtype="int64")
                out = self.p_mean_variance(self._model_call(model, x, t, model_kwargs), x, t, clip_denoised)
                z = paddle.randn(x.shape) if i > 0 else paddle.zeros(x.shape)
                x = out["mean"] + paddle.exp(0.5 * out["log_variance"]) * z
        return x

    def ddim_sample_loop(self, model, shape, model_kwargs=None, noise=None, eta=0.0, clip_denoised=False, progress=False):
        """DDIM sampling (Song et al. 2021, eq. 12) over this diffusion's timesteps (respace it
        with ``"ddimN"`` for N steps). ``eta=0`` is deterministic. Returns ``(N, C, ...)``."""
        x = paddle.randn(shape) if noise is None else noise
        steps = range(self.num_timesteps - 1, -1, -1)
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps)
        nd = len(shape)
        with paddle.no_grad():
            for i in steps:
                t = paddle.full([shape[0]], i, dtype="int64")
                out = self.p_mean_variance(self._model_call(model, x, t, model_kwargs), x, t, clip_denoised)
                eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
                abar, abar_prev = _gather(self.alphas_cumprod, t, nd), _gather(self.alphas_cumprod_prev, t, nd)
                sigma = eta * paddle.sqrt((1 - abar_prev) / (1 - abar)) * paddle.sqrt(1 - abar / abar_prev)
                x = out["pred_xstart"] * paddle.sqrt(abar_prev) + paddle.sqrt(1 - abar_prev - sigma**2) * eps
                if i > 0 and eta > 0:
                    x = x + sigma * paddle.randn(x.shape)
        return x
