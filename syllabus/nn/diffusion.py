"""Diffusion noise schedules as scheduler objects: DDPM ancestral sampling and DDIM.

The forward process adds Gaussian noise with variances beta_1..beta_T (Ho et al. 2020):

    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),   abar_t = prod_{s<=t} (1 - beta_s)     (eq. 4)

A network predicts the noise eps from (x_t, t); the clean sample it implies is

    x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)                                       (eq. 15)

DDPM steps to the posterior q(x_{t-1} | x_t, x0_hat) of eq. 6-7, with variance beta-tilde
(Algorithm 2, sigma_t^2 = beta-tilde_t). DDIM (Song et al. 2021, eq. 12) steps deterministically
(eta = 0) along the implied noise and can skip timesteps. Neither clips x0_hat: latents are
unbounded. Indices run 0..T-1 as in diffusers, whose `DDPMScheduler` / `DDIMScheduler` (with
`clip_sample=False`, `timestep_spacing="leading"`) these match; see tests/test_diffusion.py.

The schedule knows nothing of the network, and the network nothing of the schedule:
`sample_loop` joins them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

BETA_SCHEDULES = ("linear", "scaled_linear")


def make_betas(schedule: str, beta_start: float, beta_end: float, num_train_timesteps: int) -> torch.Tensor:
    """beta_1..beta_T, (T,) float64.

    `linear` spaces the betas evenly (the DDPM paper, and the assignment); `scaled_linear`
    spaces their square roots evenly (latent diffusion's schedule, used by SlotDiffusion).
    """
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    if schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    raise ValueError(f"unknown beta schedule {schedule!r}; valid: {', '.join(BETA_SCHEDULES)}")


class StepOutput(NamedTuple):
    prev_sample: torch.Tensor  # x_{t-1} (or x at the previous kept timestep)
    pred_original_sample: torch.Tensor  # x0_hat


class Scheduler:
    """The noise schedule, the forward process and the timesteps to sample at.

    Subclasses supply `_coefficients(abar_t, abar_prev)`: the floats (c_x0, c_eps, sigma) of
    x_prev = c_x0 * x0_hat + c_eps * eps + sigma * z, precomputed once per kept timestep.

    Args:
        num_train_timesteps: T.
        beta_start, beta_end: beta_1 and beta_T.
        beta_schedule: "linear" or "scaled_linear" (see `make_betas`).
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0015, beta_end: float = 0.0195,
                 beta_schedule: str = "linear"):
        self.num_train_timesteps = num_train_timesteps
        betas = make_betas(beta_schedule, beta_start, beta_end, num_train_timesteps)  # (T,) float64
        self._abar64 = torch.cumprod(1.0 - betas, 0)  # (T,) float64, exact enough for the coefficients
        self.betas = betas.float()
        self.alphas_cumprod = self._abar64.float()  # (T,)
        self._sqrt_abar: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self.set_timesteps(num_train_timesteps)

    # ------------------------------------------------------------------ forward process

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (eq. 4); x0, noise (B, ...), timesteps (B,)."""
        if x0.device not in self._sqrt_abar:
            a = self.alphas_cumprod.to(x0.device)
            self._sqrt_abar[x0.device] = (a.sqrt(), (1.0 - a).sqrt())
        s, s1 = (v[timesteps].to(x0.dtype).view(-1, *[1] * (x0.dim() - 1)) for v in self._sqrt_abar[x0.device])
        return s * x0 + s1 * noise

    # ------------------------------------------------------------------ reverse process

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Sample at `num_inference_steps` timesteps k*r (r = T // n), largest first, as diffusers' "leading"."""
        if not 1 <= num_inference_steps <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps={num_inference_steps}: must be in 1..{self.num_train_timesteps}")
        self.num_inference_steps = num_inference_steps
        ratio = self.num_train_timesteps // num_inference_steps
        self.timesteps = torch.arange(num_inference_steps - 1, -1, -1) * ratio  # (n,) int64, descending
        self._coef: dict[int, tuple[float, float, float]] = {}
        for t in self.timesteps.tolist():
            prev = t - ratio
            abar_prev = float(self._abar64[prev]) if prev >= 0 else 1.0
            self._coef[t] = self._coefficients(float(self._abar64[t]), abar_prev)

    def previous_timestep(self, t: int) -> int:
        return int(t) - self.num_train_timesteps // self.num_inference_steps

    def _coefficients(self, abar_t: float, abar_prev: float) -> tuple[float, float, float]:
        raise NotImplementedError

    def step(self, model_output: torch.Tensor, t: int | torch.Tensor, sample: torch.Tensor,
             noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> StepOutput:
        """One reverse step from x_t (`sample`) given the predicted noise (`model_output`).

        Args:
            model_output: eps_theta(x_t, t), shaped like `sample` (B, ...).
            t: a timestep of `self.timesteps`.
            sample: x_t.
            noise: z ~ N(0, I) for the stochastic part; drawn like `torch.randn(shape,
                generator=generator)` when None (the draw diffusers makes). Unused when sigma = 0.
        """
        t = int(t)
        if t not in self._coef:
            raise ValueError(f"timestep {t} is not one of the {self.num_inference_steps} set by set_timesteps")
        c_x0, c_eps, sigma = self._coef[t]
        abar = float(self._abar64[t])
        x0 = (sample - math.sqrt(1.0 - abar) * model_output) / math.sqrt(abar)  # eq. 15
        prev = c_x0 * x0 + c_eps * model_output
        if sigma > 0:
            if noise is None:
                noise = torch.randn(sample.shape, generator=generator, dtype=sample.dtype).to(sample.device)
            prev = prev + sigma * noise
        return StepOutput(prev, x0)


class DDPMScheduler(Scheduler):
    """Ancestral sampling (Ho et al. 2020, Algorithm 2) with sigma_t^2 = beta-tilde_t.

    Between kept timesteps t > s (s = t - 1 for all T steps), with beta = 1 - abar_t / abar_s:
    mean = sqrt(abar_s) beta / (1 - abar_t) x0_hat + sqrt(1 - beta) (1 - abar_s) / (1 - abar_t) x_t  (eq. 7),
    variance beta-tilde = (1 - abar_s) / (1 - abar_t) beta; no noise is added at t = 0.
    """

    def _coefficients(self, abar_t: float, abar_prev: float) -> tuple[float, float, float]:
        beta = 1.0 - abar_t / abar_prev
        c_x0 = math.sqrt(abar_prev) * beta / (1.0 - abar_t)
        c_xt = math.sqrt(1.0 - beta) * (1.0 - abar_prev) / (1.0 - abar_t)
        # x_t = sqrt(abar_t) x0_hat + sqrt(1 - abar_t) eps: write the x_t term in x0_hat and eps
        variance = max((1.0 - abar_prev) / (1.0 - abar_t) * beta, 1e-20) if abar_prev < 1.0 else 0.0
        return c_x0 + c_xt * math.sqrt(abar_t), c_xt * math.sqrt(1.0 - abar_t), math.sqrt(variance)


class DDIMScheduler(Scheduler):
    """DDIM (Song et al. 2021, eq. 12): x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps + sigma z,
    sigma = eta * sqrt((1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s)) (eq. 16); eta = 0 is deterministic.

    Args:
        eta: 0 for DDIM, 1 for the DDPM variance.
        **kwargs: as `Scheduler`.
    """

    def __init__(self, *args, eta: float = 0.0, **kwargs):
        self.eta = eta
        super().__init__(*args, **kwargs)

    def _coefficients(self, abar_t: float, abar_prev: float) -> tuple[float, float, float]:
        sigma = self.eta * math.sqrt((1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev))
        return math.sqrt(abar_prev), math.sqrt(max(1.0 - abar_prev - sigma**2, 0.0)), sigma


SCHEDULERS: dict[str, type[Scheduler]] = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}


@torch.no_grad()
def sample_loop(eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], scheduler: Scheduler,
                x_T: torch.Tensor, generator: torch.Generator | None = None,
                keep: Sequence[int] = ()) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Run the reverse process from x_T over `scheduler.timesteps`.

    Args:
        eps_model: (x_t (B, ...), t (B,) int64) -> predicted noise (B, ...).
        scheduler: a scheduler whose `set_timesteps` has been called.
        x_T: (B, ...) the starting noise.
        generator: for the noise of stochastic steps.
        keep: timesteps t whose x_t (the input of that step) is returned, for a denoising strip.

    Returns:
        (x_0 (B, ...), {t: x_t} for each kept t that was visited).
    """
    x, kept = x_T, {}
    wanted = set(int(k) for k in keep)
    for t in scheduler.timesteps.tolist():
        if t in wanted:
            kept[t] = x
        tb = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        x = scheduler.step(eps_model(x, tb), t, x, generator=generator).prev_sample
    return x, kept
