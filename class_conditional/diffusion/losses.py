"""Likelihood terms for the variational bound (Ho et al. 2020, Sec. 3.3; Nichol & Dhariwal 2021)."""
import math

import paddle

__all__ = ["normal_kl", "approx_standard_normal_cdf", "discretized_gaussian_log_likelihood"]


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats (>= 0).

    Tensors broadcast against each other; float32.
    """
    return 0.5 * (-1.0 + logvar2 - logvar1 + paddle.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * paddle.exp(-logvar2))


def approx_standard_normal_cdf(x):
    """Fast tanh approximation of the standard normal CDF (Page 1977), as used by DDPM."""
    return 0.5 * (1.0 + paddle.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """log p(x) of data ``x`` in [-1, 1] quantised to 256 bins under N(means, exp(log_scales)^2)
    (DDPM eq. 13, the decoder term L_0).  The edge bins take the whole tail.  Returns nats,
    elementwise, <= 0; values are clipped at log(1e-12) so they stay finite."""
    centered = x - means
    inv_stdv = paddle.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = paddle.log(paddle.clip(cdf_plus, min=1e-12))
    log_one_minus_cdf_min = paddle.log(paddle.clip(1.0 - cdf_min, min=1e-12))
    log_probs = paddle.where(
        x < -0.999,
        log_cdf_plus,
        paddle.where(x > 0.999, log_one_minus_cdf_min, paddle.log(paddle.clip(cdf_plus - cdf_min, min=1e-12))),
    )
    return log_probs
