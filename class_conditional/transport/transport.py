"""SiT objective and samplers (Ma et al. 2024; code structure of the SiT reference, written anew).

``Transport(path_type, prediction, loss_weight, train_eps, sample_eps)``:

* ``prediction="velocity"``: the model predicts u_t; loss = ||v - u_t||^2.
* ``"score"``: the model predicts the score s = -x0 / sigma_t; loss = w(t) ||sigma_t s + x0||^2.
* ``"noise"``: the model predicts x0 (the noise); loss = w(t) ||eps - x0||^2.
  ``loss_weight``: ``None`` (w = 1), ``"velocity"`` (w = (D_t / sigma_t)^2), ``"likelihood"``
  (w = D_t / sigma_t^2), D_t = the diffusion part of the drift (:meth:`Path.compute_drift`).

Times are drawn uniformly from ``[t0, t1]`` given by :meth:`Transport.check_interval` (the end
points are moved by ``train_eps``/``sample_eps`` where the path or the prediction is singular).
"""
import enum

import numpy as np
import paddle

from .path import PATHS, expand_t_like_x

__all__ = ["Transport", "Sampler", "mean_flat", "DIFFUSION_FORMS", "LAST_STEPS"]

DIFFUSION_FORMS = ("constant", "SBDM", "sigma", "linear", "decreasing", "increasing-decreasing")
LAST_STEPS = ("Mean", "Tweedie", "Euler", None)
SDE_MIN_EPS = 1e-3


def mean_flat(x):
    return x.reshape([x.shape[0], -1]).mean(axis=1)


class Prediction(enum.Enum):
    VELOCITY = "velocity"
    SCORE = "score"
    NOISE = "noise"


class Transport:
    """Training objective + drift/score for the samplers.

    Args:
        path_type: ``Linear`` | ``GVP`` | ``VP``.
        prediction: ``velocity`` | ``score`` | ``noise``.
        loss_weight: ``None``/``"None"`` | ``velocity`` | ``likelihood``.
        train_eps, sample_eps: end-point offsets for training/sampling times.

    Raises:
        ValueError: an unknown option (named with the allowed values).
    """

    def __init__(self, path_type="Linear", prediction="velocity", loss_weight=None, train_eps=0.0, sample_eps=0.0):
        if path_type not in PATHS:
            raise ValueError(f"--path_type must be one of {sorted(PATHS)}, got {path_type!r}")
        if prediction not in [p.value for p in Prediction]:
            raise ValueError(f"--prediction must be one of velocity|score|noise, got {prediction!r}")
        if loss_weight in ("None", "none", ""):
            loss_weight = None
        if loss_weight not in (None, "velocity", "likelihood"):
            raise ValueError(f"--loss_weight must be None|velocity|likelihood, got {loss_weight!r}")
        self.path_type, self.path = path_type, PATHS[path_type]()
        self.prediction = Prediction(prediction)
        self.loss_weight = loss_weight
        self.train_eps, self.sample_eps = train_eps, sample_eps

    def check_interval(self, train_eps, sample_eps, diffusion_form="SBDM", sde=False, reverse=False, eval=False, last_step_size=0.0):
        """Time interval ``(t0, t1)``: the ends are pulled in by eps where x_t/score are singular
        (VP never reaches pure data; score/noise predictions and SDEs divide by sigma_t or alpha_t)."""
        t0, t1 = 0.0, 1.0
        eps = sample_eps if eval else train_eps
        if self.path_type == "VP":
            t1 = 1 - eps if (not sde or last_step_size == 0) else 1 - last_step_size
        elif self.prediction != Prediction.VELOCITY or sde:
            t0 = eps if (diffusion_form == "SBDM" and sde) or self.prediction != Prediction.VELOCITY else 0.0
            t1 = 1 - eps if (not sde or last_step_size == 0) else 1 - last_step_size
        if reverse:
            t0, t1 = 1 - t0, 1 - t1
        return t0, t1

    def sample(self, x1):
        """``(t, x0, x1)``: uniform times in the training interval and Gaussian noise like ``x1``."""
        x0 = paddle.randn(x1.shape, dtype=x1.dtype)
        t0, t1 = self.check_interval(self.train_eps, self.sample_eps)
        t = paddle.rand([x1.shape[0]], dtype=x1.dtype) * (t1 - t0) + t0
        return t, x0, x1

    def training_losses(self, model, x_start, model_kwargs=None, t=None, noise=None):
        """Loss for data ``x_start`` (float32 ``(N, C, ...)``); ``model(x_t, t, **model_kwargs)`` gets
        float times in [0, 1] and may return ``2C`` channels (learned sigma, ignored here).

        Returns dict with ``loss`` (scalar), per-sample ``per_sample``, and ``pred``.
        """
        model_kwargs = model_kwargs or {}
        ts, x0, x1 = self.sample(x_start)
        t = ts if t is None else t
        x0 = x0 if noise is None else noise
        t, xt, ut = self.path.plan(t, x0, x1)
        out = model(xt, t, **model_kwargs)
        out = out[:, : x1.shape[1]]
        if self.prediction == Prediction.VELOCITY:
            per = mean_flat((out - ut) ** 2)
        else:
            _, drift_var = self.path.compute_drift(xt, t)
            sigma_t = self.path.sigma(expand_t_like_x(t, xt))[0]
            if self.loss_weight == "velocity":
                weight = (drift_var / sigma_t) ** 2
            elif self.loss_weight == "likelihood":
                weight = drift_var / sigma_t**2
            else:
                weight = paddle.ones_like(drift_var)
            if self.prediction == Prediction.NOISE:
                per = mean_flat(weight * (out - x0) ** 2)
            else:
                per = mean_flat(weight * (out * sigma_t + x0) ** 2)
        return {"loss": per.mean(), "per_sample": per, "pred": out}

    # ---- drift and score ------------------------------------------------------------------
    def _model(self, model, x, t, model_kwargs):
        return model(x, t, **model_kwargs)[:, : x.shape[1]]

    def drift(self, x, t, model, model_kwargs):
        """Probability-flow ODE velocity at ``(x, t)`` (``t`` shape ``(N,)``)."""
        out = self._model(model, x, t, model_kwargs)
        if self.prediction == Prediction.VELOCITY:
            return out
        drift_x, drift_var = self.path.compute_drift(x, t)
        if self.prediction == Prediction.SCORE:
            return drift_x + drift_var * out
        sigma_t = self.path.sigma(expand_t_like_x(t, x))[0]
        return drift_x + drift_var * (out / -sigma_t)

    def score(self, x, t, model, model_kwargs):
        """Score of p_t at ``(x, t)`` from the model's prediction."""
        out = self._model(model, x, t, model_kwargs)
        if self.prediction == Prediction.SCORE:
            return out
        if self.prediction == Prediction.NOISE:
            return out / -self.path.sigma(expand_t_like_x(t, x))[0]
        return self.path.score_from_velocity(out, x, t)

    def diffusion_coefficient(self, x, t, form="SBDM", norm=1.0):
        """w(t) of the SDE dx = [v + w s] dt + sqrt(2 w) dW (SiT eq. 9); ``form`` in :data:`DIFFUSION_FORMS`.

        Raises:
            ValueError: unknown form.
        """
        te = expand_t_like_x(t, x)
        if form == "constant":
            return paddle.full_like(te, norm)
        if form == "SBDM":
            return norm * self.path.compute_drift(x, t)[1]
        if form == "sigma":
            return norm * self.path.sigma(te)[0]
        if form == "linear":
            return norm * (1 - te)
        if form == "decreasing":
            return 0.25 * (norm * paddle.cos(np.pi * te) + 1) ** 2
        if form == "increasing-decreasing":
            return norm * paddle.sin(np.pi * te) ** 2
        raise ValueError(f"--diffusion_form must be one of {DIFFUSION_FORMS}, got {form!r}")


class Sampler:
    """ODE and SDE samplers for a :class:`Transport`; all integrate from noise (t0) to data (t1).

    Each ``sample_*`` method returns a function ``f(x_init, model, **model_kwargs) -> x`` mapping
    float32 noise ``(N, C, ...)`` to samples of the same shape.
    """

    def __init__(self, transport):
        self.transport = transport

    # ---- ODE ----
    def sample_ode(self, sampling_method="dopri5", num_steps=50, atol=1e-6, rtol=1e-3, reverse=False):
        """Probability-flow ODE.

        ``euler``/``heun``: fixed steps on ``linspace(t0, t1, num_steps)``; ``dopri5``: adaptive
        Dormand-Prince RK45 from scipy (``scipy.integrate.solve_ivp``, float64 on numpy) with
        ``atol``/``rtol``.

        Raises:
            ValueError: unknown method.
        """
        tr = self.transport
        t0, t1 = tr.check_interval(tr.train_eps, tr.sample_eps, sde=False, eval=True, reverse=reverse)
        if sampling_method not in ("euler", "heun", "dopri5"):
            raise ValueError(f"--sampling_method must be euler|heun|dopri5 for the ODE, got {sampling_method!r}")

        def velocity(x, t, model, kw):
            tt = paddle.full([x.shape[0]], float(t), dtype="float32")
            v = tr.drift(x, 1 - tt if reverse else tt, model, kw)
            return -v if reverse else v

        def sample(x, model, **kw):
            with paddle.no_grad():
                return integrate_ode(lambda xx, t: velocity(xx, t, model, kw), x, t0, t1, sampling_method, num_steps, atol, rtol)

        return sample

    # ---- SDE ----
    def sample_sde(self, sampling_method="Euler", diffusion_form="SBDM", diffusion_norm=1.0, last_step="Mean", last_step_size=0.04, num_steps=250):
        """Reverse-time SDE dx = [v + w s] dt + sqrt(2 w) dW from t0 to ``1 - last_step_size``,
        then one deterministic last step (``Mean``: drift step without noise, ``Tweedie``:
        E[x1 | x] = (x + sigma^2 s) / alpha, ``Euler``: ODE step, ``None``: stop).

        The model is evaluated at ``linspace(t0, t1, num_steps)[:-1]`` (Heun also at each next
        time) and the last step at ``t1``, with ``(t0, t1)`` from :meth:`Transport.check_interval`
        exactly as in willisma/SiT ``Sampler.sample_sde`` (e.g. VP starts at t = 0, Linear/GVP
        velocity with ``diffusion_form="sigma"`` too).  Intentional departure: where SiT evaluates
        an infinite coefficient and returns NaN (SBDM form on Linear/GVP at t = 0; the Linear
        path's score at t = 1, reached by Heun or a zero last step), that end moves in by
        ``SDE_MIN_EPS`` = 1e-3.

        Raises:
            ValueError: unknown method, diffusion form or last step.
        """
        tr = self.transport
        if sampling_method not in ("Euler", "Heun"):
            raise ValueError(f"--sampling_method must be Euler|Heun for the SDE, got {sampling_method!r}")
        if diffusion_form not in DIFFUSION_FORMS:
            raise ValueError(f"--diffusion_form must be one of {DIFFUSION_FORMS}, got {diffusion_form!r}")
        if last_step in ("None", "none", ""):
            last_step = None
        if last_step not in LAST_STEPS:
            raise ValueError(f"--last_step must be one of Mean|Tweedie|Euler|None, got {last_step!r}")
        if last_step is None:
            last_step_size = 0.0
        t0, t1 = tr.check_interval(tr.train_eps, tr.sample_eps, diffusion_form=diffusion_form, sde=True, eval=True, last_step_size=last_step_size)
        # Same interval as SiT's Sampler.sample_sde, except at the two points where SiT's own
        # arithmetic is infinite and its samples come out NaN: the SBDM diffusion coefficient of
        # Linear/GVP is infinite at t = 0 (alpha_t = 0), and the score is singular at t = 1
        # of the Linear path (sigma_t = 1 - t is exactly 0), which Heun's second evaluation or a
        # zero-size last step reaches (GVP's cos(pi/2) is not exactly 0 and stays finite in SiT).
        # There the end is moved in by SDE_MIN_EPS; everywhere else the times equal SiT's.
        if t0 == 0.0 and diffusion_form == "SBDM" and tr.path_type in ("Linear", "GVP"):
            t0 = SDE_MIN_EPS
        if t1 == 1.0 and tr.path_type == "Linear" and (sampling_method == "Heun" or (last_step is not None and last_step_size == 0.0)):
            t1 = 1.0 - SDE_MIN_EPS

        def sde_drift(x, t, model, kw):
            w = tr.diffusion_coefficient(x, t, diffusion_form, diffusion_norm)
            return tr.drift(x, t, model, kw) + w * tr.score(x, t, model, kw)

        def sample(x, model, **kw):
            n = x.shape[0]
            ts = np.linspace(t0, t1, num_steps)
            dt = float(ts[1] - ts[0])
            with paddle.no_grad():
                for ti in ts[:-1]:
                    t = paddle.full([n], float(ti), dtype="float32")
                    dw = paddle.randn(x.shape) * np.sqrt(dt)
                    g = paddle.sqrt(2 * tr.diffusion_coefficient(x, t, diffusion_form, diffusion_norm))
                    if sampling_method == "Euler":  # Euler-Maruyama
                        x = x + sde_drift(x, t, model, kw) * dt + g * dw
                    else:  # stochastic Heun: add noise, then a Heun step of the drift
                        xh = x + g * dw
                        k1 = sde_drift(xh, t, model, kw)
                        k2 = sde_drift(xh + dt * k1, t + dt, model, kw)
                        x = xh + 0.5 * dt * (k1 + k2)
                t = paddle.full([n], float(ts[-1]), dtype="float32")
                if last_step == "Mean":
                    x = x + sde_drift(x, t, model, kw) * last_step_size
                elif last_step == "Tweedie":
                    te = expand_t_like_x(t, x)
                    a, s = tr.path.alpha(te)[0], tr.path.sigma(te)[0]
                    x = x / a + s**2 / a * tr.score(x, t, model, kw)
                elif last_step == "Euler":
                    x = x + tr.drift(x, t, model, kw) * last_step_size
            return x

        return sample


def integrate_ode(f, x, t0, t1, method="dopri5", num_steps=50, atol=1e-6, rtol=1e-3):
    """Integrate dx/dt = f(x, t) from t0 to t1 and return x(t1).

    Args:
        f: ``f(x, t)`` with ``x`` a float32 paddle tensor and ``t`` a python float.
        x: initial value, paddle tensor of any shape.
        method: ``euler`` | ``heun`` (fixed ``num_steps`` grid points, i.e. ``num_steps - 1``
            steps) | ``dopri5`` (scipy ``solve_ivp`` RK45, adaptive, ``atol``/``rtol``).
    """
    if method in ("euler", "heun"):
        ts = np.linspace(t0, t1, num_steps)
        for a, b in zip(ts[:-1], ts[1:]):
            h = float(b - a)
            k1 = f(x, float(a))
            if method == "euler":
                x = x + h * k1
            else:
                k2 = f(x + h * k1, float(b))
                x = x + 0.5 * h * (k1 + k2)
        return x
    if method == "dopri5":
        from scipy.integrate import solve_ivp

        shape = x.shape

        def rhs(t, y):
            xt = paddle.to_tensor(y.reshape(shape), dtype="float32")
            return f(xt, float(t)).numpy().astype(np.float64).reshape(-1)

        sol = solve_ivp(rhs, (t0, t1), x.numpy().astype(np.float64).reshape(-1), method="RK45", atol=atol, rtol=rtol)
        if not sol.success:
            raise RuntimeError(f"dopri5 ODE solve failed: {sol.message}")
        return paddle.to_tensor(sol.y[:, -1].reshape(shape), dtype="float32")
    raise ValueError(f"unknown ODE method {method!r}")
