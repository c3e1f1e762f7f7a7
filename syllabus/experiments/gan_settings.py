"""Scenarios and mitigations of `gan`: what each changes in the settings a run trains with.

A scenario provokes one failure by scaling the profile's settings (so it means the same in
every profile); a mitigation switches one remedy on. `resolve(cfg)` gives the `Settings` in force.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from syllabus.config import choice, ranged
from syllabus.gan_step import GanTrainConfig, Objective


@dataclass(frozen=True)
class Scenario:
    """How a scenario changes the profile's settings: factors, so it means the same in every profile."""

    what: str
    remedy: str = "none"  # the mitigation `gan.mitigation=remedy` switches on
    minimax: bool = False  # the original minimax generator loss, unless gan.non_saturating says otherwise
    d_steps: int = 1  # x train.d_steps
    g_steps: int = 1  # x train.g_steps
    lr_g: float = 1.0  # x train.lr_g
    d_width: int = 1  # x model.d_width
    train_fraction: float = 1.0  # x data.train_fraction


SCENARIOS = {
    "baseline": Scenario("non-saturating loss, one D update per G update"),
    "vanishing": Scenario("minimax loss against a strong D: 4x the D updates, D twice as wide",
                          "non_saturating", minimax=True, d_steps=4, d_width=2),
    "collapse": Scenario("G overshoots: 3x G's learning rate, 4 G updates per step", "minibatch_std", g_steps=4,
                         lr_g=3.0),
    "overfit": Scenario("little data: 5% of the training images, D twice as wide", "diffaug",
                        train_fraction=0.05, d_width=2),
}

# `gan.mitigation=<name>` switches one mitigation on at these settings (the sweep axis).
MITIGATIONS = {
    "none": {},
    "non_saturating": {"non_saturating": True},
    "label_smoothing": {"label_smoothing": 0.1},
    "instance_noise": {"instance_noise": 0.3},
    "spectral_norm": {"spectral_norm": True},
    "diffaug": {"diffaug": True},
    "minibatch_std": {"minibatch_std": True},
}


@dataclass
class GanConfig:
    scenario: str = choice("baseline", SCENARIOS)
    mitigation: str = choice("none", [*MITIGATIONS, "remedy"])  # one mitigation by name; remedy: the scenario's
    non_saturating: bool | None = None  # None: the scenario's loss (minimax for "vanishing")
    label_smoothing: float = ranged(0.0, 0, 1, hi_open=True)  # one-sided: D's target for real images is 1 - this
    instance_noise: float = ranged(0.0, 0)  # std of noise on D's inputs (images in [-1, 1]), annealed to 0
    spectral_norm: bool = False
    diffaug: bool = False
    minibatch_std: bool = False


@dataclass
class Settings:
    """Everything a run actually trains with, after the scenario and the mitigations."""

    train: GanTrainConfig
    objective: Objective
    d_width: int
    spectral_norm: bool
    minibatch_std: bool
    train_fraction: float

    def flat(self) -> dict:
        return {**dataclasses.asdict(self.train), **dataclasses.asdict(self.objective), "d_width": self.d_width,
                "spectral_norm": self.spectral_norm, "minibatch_std": self.minibatch_std,
                "train_fraction": self.train_fraction}


def resolve(cfg: Any) -> Settings:
    """The settings of `cfg` (a `gan` Config), changed by `gan.scenario`, with the mitigations switched on."""
    sc = SCENARIOS[cfg.gan.scenario]
    gan = _with_mitigation(cfg.gan, sc)
    train = dataclasses.replace(cfg.train, d_steps=cfg.train.d_steps * sc.d_steps,
                                g_steps=cfg.train.g_steps * sc.g_steps, lr_g=cfg.train.lr_g * sc.lr_g)
    loss = gan.non_saturating if gan.non_saturating is not None else not sc.minimax
    objective = Objective(non_saturating=loss, label_smoothing=gan.label_smoothing,
                          instance_noise=gan.instance_noise, diffaug=gan.diffaug)
    return Settings(train, objective, cfg.model.d_width * sc.d_width, gan.spectral_norm, gan.minibatch_std,
                    cfg.data.train_fraction * sc.train_fraction)


def _with_mitigation(gan: GanConfig, scenario: Scenario) -> GanConfig:
    """`gan` with the mitigation named by `gan.mitigation` switched on (a strength set explicitly is kept)."""
    name = scenario.remedy if gan.mitigation == "remedy" else gan.mitigation
    changes = {k: v for k, v in MITIGATIONS[name].items() if getattr(gan, k) in (None, False, 0.0)}
    return dataclasses.replace(gan, **changes)


def mitigations_on(settings: Settings) -> list[str]:
    """Names of the mitigations in force (the non-saturating loss counts as one)."""
    obj = settings.objective
    flags = {"non_saturating": obj.non_saturating, "label_smoothing": obj.label_smoothing > 0,
             "instance_noise": obj.instance_noise > 0, "spectral_norm": settings.spectral_norm,
             "diffaug": obj.diffaug, "minibatch_std": settings.minibatch_std}
    return [name for name, on in flags.items() if on]


