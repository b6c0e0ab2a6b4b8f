"""Timestep respacing (Nichol & Dhariwal 2021, Sec. 4): sample with a subset of the training steps.

``space_timesteps(1000, "250")`` keeps 250 evenly strided steps; ``"ddim25"`` keeps the DDIM
stride ``range(0, 1000, 40)``; ``"10,15,20"`` splits the steps into three equal sections and keeps
10/15/20 evenly spaced steps in each.  The kept steps get new betas computed from the original
cumulative alphas, so q(x_t | x_0) at every kept step is unchanged.  The model still sees the
ORIGINAL timestep values (``timestep_map``).
"""
import numpy as np
import paddle

from .gaussian_diffusion import GaussianDiffusion

__all__ = ["space_timesteps", "SpacedDiffusion"]


def space_timesteps(num_timesteps, section_counts):
    """Set of original timesteps to keep.

    Args:
        num_timesteps: steps of the original process.
        section_counts: ``"ddimN"``, ``"N"``, ``"a,b,c"`` or a list of ints.

    Raises:
        ValueError: a count larger than its section, or no exact DDIM stride for ``ddimN``.
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(f"cannot make exactly {desired} DDIM steps from {num_timesteps} with an integer stride")
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, kept = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if count > size:
            raise ValueError(f"cannot keep {count} steps from a section of {size}")
        stride = (size - 1) / (count - 1) if count > 1 else 1
        cur = 0.0
        for _ in range(count):
            kept.append(start + round(cur))
            cur += stride
        start += size
    return set(kept)


class SpacedDiffusion(GaussianDiffusion):
    """A :class:`GaussianDiffusion` over the kept steps ``use_timesteps`` of ``base_betas``.

    ``timestep_map[i]`` is the original timestep of new step ``i``; model calls receive it.
    ``kwargs`` (``learn_sigma``, ``sigma_small``, ``rescale_learned_sigmas``) go to
    :class:`GaussianDiffusion`.
    """

    def __init__(self, use_timesteps, base_betas, **kwargs):
        base = GaussianDiffusion(base_betas, **kwargs)
        self.use_timesteps = sorted(use_timesteps)
        self.original_num_steps = len(base_betas)
        last, new_betas = 1.0, []
        for i, abar in enumerate(base.alphas_cumprod):
            if i in use_timesteps:
                new_betas.append(1 - abar / last)
                last = abar
        self.timestep_map = np.array(self.use_timesteps, dtype=np.int64)
        super().__init__(np.array(new_betas), **kwargs)

    def _model_call(self, model, x, t, model_kwargs):
        mapped = paddle.to_tensor(self.timestep_map)[t.astype("int64")]
        return model(x, mapped, **(model_kwargs or {}))
