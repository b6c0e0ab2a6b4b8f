"""SiT transport: interpolant paths, predictions and ODE/SDE samplers.

``create_transport(...)`` gives an object with ``training_losses(model, x_start, model_kwargs)
-> {"loss": ...}`` like :mod:`diffusion`.
"""
from .path import PATHS, GVPPath, LinearPath, VPPath, expand_t_like_x  # noqa: F401
from .transport import DIFFUSION_FORMS, LAST_STEPS, Sampler, Transport, integrate_ode  # noqa: F401


def create_transport(path_type="Linear", prediction="velocity", loss_weight=None, train_eps=None, sample_eps=None):
    """A :class:`Transport` with SiT's default end-point offsets: for ``VP`` 1e-5 (train and
    sample); for ``GVP``/``Linear`` with score/noise prediction 1e-3; otherwise 0."""
    if path_type == "VP":
        default_train, default_sample = 1e-5, 1e-3
    elif path_type in ("GVP", "Linear") and prediction != "velocity":
        default_train, default_sample = 1e-3, 1e-3
    else:
        default_train, default_sample = 0.0, 0.0
    return Transport(path_type, prediction, loss_weight,
                     default_train if train_eps is None else train_eps,
                     default_sample if sample_eps is None else sample_eps)
