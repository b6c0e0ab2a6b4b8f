"""Interpolant paths of SiT (Ma et al. 2024, "SiT: Exploring Flow and Diffusion-based Generative
Models with Scalable Interpolant Transformers", Sec. 2-3).

A path mixes noise ``x0 ~ N(0, I)`` and data ``x1``:  ``x_t = alpha_t * x1 + sigma_t * x0`` for
``t`` in [0, 1] (t = 0: noise, t = 1: data), with velocity target
``u_t = d(alpha_t)/dt * x1 + d(sigma_t)/dt * x0``.

* ``Linear`` (rectified flow / stochastic interpolant): alpha_t = t, sigma_t = 1 - t.
* ``GVP`` (generalised variance preserving): alpha_t = sin(pi t / 2), sigma_t = cos(pi t / 2).
* ``VP`` (score-SDE VP, time reversed): alpha_t = exp(-(1-t)^2 (b_max - b_min) / 4 - (1-t) b_min / 2),
  sigma_t = sqrt(1 - alpha_t^2), b_min = 0.1, b_max = 20; at t = 0, alpha_0 ~ 0.0066 (almost noise).

The probability-flow drift follows from ``E[x0 | x_t] = -sigma_t * score``:
``v(x, t) = (alpha'/alpha) x + (alpha'/alpha sigma^2 - sigma sigma') * score``;
:meth:`Path.compute_drift` returns its two pieces.
"""
import math

import paddle

__all__ = ["Path", "LinearPath", "GVPPath", "VPPath", "PATHS", "expand_t_like_x"]


def expand_t_like_x(t, x):
    """``(N,)`` times -> ``(N, 1, ..., 1)`` broadcastable against ``x``."""
    return t.reshape([-1] + [1] * (x.ndim - 1))


class Path:
    """Base class: subclasses define ``alpha(t)`` and ``sigma(t)`` returning ``(value, d/dt)``."""

    def alpha(self, t):
        raise NotImplementedError

    def sigma(self, t):
        raise NotImplementedError

    def d_alpha_alpha_ratio(self, t):
        a, da = self.alpha(t)
        return da / a

    def compute_drift(self, x, t):
        """``(drift_x, diffusion)`` with v = drift_x + diffusion * score (see module docstring);
        ``t`` is ``(N,)``."""
        t = expand_t_like_x(t, x)
        ratio = self.d_alpha_alpha_ratio(t)
        s, ds = self.sigma(t)
        return ratio * x, ratio * s**2 - s * ds

    def compute_mu_t(self, t, x0, x1):
        t = expand_t_like_x(t, x1)
        return self.alpha(t)[0] * x1 + self.sigma(t)[0] * x0

    def compute_ut(self, t, x0, x1):
        t = expand_t_like_x(t, x1)
        return self.alpha(t)[1] * x1 + self.sigma(t)[1] * x0

    def plan(self, t, x0, x1):
        """``(t, x_t, u_t)`` for times ``(N,)``, noise ``x0`` and data ``x1`` of shape ``(N, ...)``."""
        return t, self.compute_mu_t(t, x0, x1), self.compute_ut(t, x0, x1)

    def score_from_velocity(self, velocity, x, t):
        """Invert the drift relation: score = (alpha/alpha' v - x) / (sigma^2 - alpha/alpha' sigma sigma')."""
        t = expand_t_like_x(t, x)
        a, da = self.alpha(t)
        s, ds = self.sigma(t)
        r = a / da
        return (r * velocity - x) / (s**2 - r * ds * s)


class LinearPath(Path):
    def alpha(self, t):
        return t, paddle.ones_like(t)

    def sigma(self, t):
        return 1 - t, -paddle.ones_like(t)

    def d_alpha_alpha_ratio(self, t):
        return 1.0 / t


class GVPPath(Path):
    def alpha(self, t):
        return paddle.sin(t * math.pi / 2), math.pi / 2 * paddle.cos(t * math.pi / 2)

    def sigma(self, t):
        return paddle.cos(t * math.pi / 2), -math.pi / 2 * paddle.sin(t * math.pi / 2)

    def d_alpha_alpha_ratio(self, t):
        return math.pi / (2 * paddle.tan(t * math.pi / 2))


class VPPath(Path):
    def __init__(self, beta_min=0.1, beta_max=20.0):
        self.beta_min, self.beta_max = beta_min, beta_max

    def _log_mean_coeff(self, t):
        return -0.25 * (1 - t) ** 2 * (self.beta_max - self.beta_min) - 0.5 * (1 - t) * self.beta_min

    def _d_log_mean_coeff(self, t):
        return 0.5 * (1 - t) * (self.beta_max - self.beta_min) + 0.5 * self.beta_min

    def alpha(self, t):
        a = paddle.exp(self._log_mean_coeff(t))
        return a, a * self._d_log_mean_coeff(t)

    def sigma(self, t):
        p = 2 * self._log_mean_coeff(t)
        s = paddle.sqrt(1 - paddle.exp(p))
        ds = paddle.exp(p) * (2 * self._d_log_mean_coeff(t)) / (-2 * s)
        return s, ds

    def d_alpha_alpha_ratio(self, t):
        return self._d_log_mean_coeff(t)


PATHS = {"Linear": LinearPath, "GVP": GVPPath, "VP": VPPath}
