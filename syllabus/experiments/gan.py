"""`gan`: training dynamics of a vanilla GAN on handwritten digits (ATML task 3).

A generator and a discriminator (`model.arch=mlp|conv`) are trained on scikit-learn's
digits (the embedded default) or MNIST (`full`). Every step logs both losses, the mean
D(x) and D(G(z)) and both gradient norms; every period of `train.eval_every` steps
measures the samples of a fixed noise batch with a digit classifier trained in the run
on the real training digits:

- classes covered (classes given at least `eval.min_share` of the samples) and
  KL(class histogram || uniform): mode collapse, measured;
- Fréchet distance between generated and held-out real images in the classifier's
  penultimate features (not Inception FID);
- mean D(x) on D's training images and on held-out images: their gap is D overfitting.

`gan.scenario` provokes one failure (`baseline`, `vanishing`, `collapse`, `overfit`);
the mitigations switch on one by one (`gan.non_saturating`, `gan.label_smoothing`,
`gan.instance_noise`, `gan.spectral_norm`, `gan.diffaug`, `gan.minibatch_std`), or by
name through `gan.mitigation`, the sweep axis:

    syllabus run gan --sweep gan.scenario=baseline,vanishing,collapse,overfit --sweep \\
        gan.mitigation=none,non_saturating,label_smoothing,instance_noise,spectral_norm,diffaug,minibatch_std

puts every scenario under every mitigation in one comparison table (28 quick runs, ~6 min on 2 CPU cores).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from syllabus.classify import ClassificationTask, predict
from syllabus.config import choice, nested
from syllabus.data.digits import MNIST_KEY, digits_splits, mnist_location, mnist_present, mnist_splits
from syllabus.errors import UsageError
from syllabus.experiments import Experiment, register
from syllabus.gan_train import GanTrainConfig, Objective, fit_gan
from syllabus.metrics.frechet import frechet_distance, gaussian_stats
from syllabus.nn.gan import DISCRIMINATORS, GENERATORS
from syllabus.nn.resnet import ResNet
from syllabus.runs import Run
from syllabus.train import TrainConfig, fit, seed_everything

NUM_CLASSES = 10


# --------------------------------------------------------------------------- config


@dataclass
class DataConfig:
    name: str = choice("digits", ["digits", "mnist"])
    root: str = ""  # MNIST folder (torchvision layout); default <data dir>/mnist
    image_size: int = 8  # digits are 8x8 (resized if larger); MNIST is 28x28
    train_fraction: float = 1.0  # share of the training images the GAN sees (the scenario may cut it)
    seed: int = 0  # split seed, and which images the fraction keeps


@dataclass
class ModelConfig:
    arch: str = choice("mlp", ["mlp", "conv"])
    z_dim: int = 32
    g_width: int = 128  # MLP hidden units / conv channels of G's last hidden layer
    d_width: int = 128  # MLP hidden units / conv channels of D's first layer


@dataclass(frozen=True)
class Scenario:
    """How a scenario changes the profile's settings: factors, so it means the same in every profile."""

    what: str
    minimax: bool = False  # the original minimax generator loss, unless gan.non_saturating says otherwise
    d_steps: int = 1  # x train.d_steps
    g_steps: int = 1  # x train.g_steps
    lr_g: float = 1.0  # x train.lr_g
    d_width: int = 1  # x model.d_width
    train_fraction: float = 1.0  # x data.train_fraction


SCENARIOS = {
    "baseline": Scenario("non-saturating loss, one D update per G update"),
    "vanishing": Scenario("minimax loss against a strong D: 4x the D updates, D twice as wide",
                          minimax=True, d_steps=4, d_width=2),
    "collapse": Scenario("G overshoots: 3x G's learning rate, 4 G updates per step", g_steps=4, lr_g=3.0),
    "overfit": Scenario("little data: 5% of the training images, D twice as wide", train_fraction=0.05, d_width=2),
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
    mitigation: str = choice("none", MITIGATIONS)  # one mitigation by name, at its MITIGATIONS setting
    non_saturating: bool | None = None  # None: the scenario's loss (minimax for "vanishing")
    label_smoothing: float = 0.0  # one-sided: D's target for real images is 1 - this
    instance_noise: float = 0.0  # std of noise on D's inputs (images in [-1, 1]), annealed to 0
    spectral_norm: bool = False
    diffaug: bool = False
    minibatch_std: bool = False


@dataclass
class EvalConfig:
    n_samples: int = 1000  # generated images measured per period (fixed noise)
    min_share: float = 0.02  # a class is covered when it gets at least this share of the samples
    n_grid: int = 20  # fixed-noise samples kept per period for the sample grids


def _classifier_train() -> TrainConfig:
    return TrainConfig(epochs=8, batch_size=64, optimizer="adam", lr=2e-3, weight_decay=0.0, log_every=0)


@dataclass
class Config:
    data: DataConfig = nested(DataConfig)
    model: ModelConfig = nested(ModelConfig)
    train: GanTrainConfig = nested(GanTrainConfig)
    gan: GanConfig = nested(GanConfig)
    eval: EvalConfig = nested(EvalConfig)
    classifier: TrainConfig = nested(_classifier_train)  # the digit classifier that measures samples
    seed: int = 0
    cpu_threads: int = 1  # torch CPU threads during the run (tiny networks run fastest on one); 0 = torch's


def smoke() -> Config:
    return Config(
        model=ModelConfig(z_dim=8, g_width=32, d_width=32),
        train=GanTrainConfig(steps=30, eval_every=15, batch_size=32, lr_g=1e-3, lr_d=1e-3),
        eval=EvalConfig(n_samples=200, n_grid=8),
        classifier=dataclasses.replace(_classifier_train(), epochs=1, max_steps=5),
    )


def quick() -> Config:
    return Config(train=GanTrainConfig(steps=1200, eval_every=200, batch_size=64, lr_g=1e-3, lr_d=1e-3))


def full() -> Config:
    """MNIST at 28x28 with the DCGAN-style pair (Adam 2e-4, beta1 0.5, batch 128)."""
    return Config(
        data=DataConfig(name="mnist", image_size=28),
        model=ModelConfig(arch="conv", z_dim=64, g_width=64, d_width=64),
        train=GanTrainConfig(steps=20000, eval_every=1000, batch_size=128, lr_g=2e-4, lr_d=2e-4),
        eval=EvalConfig(n_samples=5000),
        classifier=dataclasses.replace(_classifier_train(), epochs=3, batch_size=128),
    )


# --------------------------------------------------------------------------- scenario + mitigations


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


def resolve(cfg: Config) -> Settings:
    """The profile's settings, changed by `gan.scenario`, with the mitigations switched on."""
    sc = SCENARIOS[cfg.gan.scenario]
    gan = _with_mitigation(cfg.gan)
    train = dataclasses.replace(cfg.train, d_steps=cfg.train.d_steps * sc.d_steps,
                                g_steps=cfg.train.g_steps * sc.g_steps, lr_g=cfg.train.lr_g * sc.lr_g)
    loss = gan.non_saturating if gan.non_saturating is not None else not sc.minimax
    objective = Objective(non_saturating=loss, label_smoothing=gan.label_smoothing,
                          instance_noise=gan.instance_noise, diffaug=gan.diffaug)
    return Settings(train, objective, cfg.model.d_width * sc.d_width, gan.spectral_norm, gan.minibatch_std,
                    cfg.data.train_fraction * sc.train_fraction)


def _with_mitigation(gan: GanConfig) -> GanConfig:
    """`gan` with the mitigation named by `gan.mitigation` switched on (a strength set explicitly is kept)."""
    changes = {k: v for k, v in MITIGATIONS[gan.mitigation].items() if getattr(gan, k) in (None, False, 0.0)}
    return dataclasses.replace(gan, **changes)


def mitigations_on(settings: Settings) -> list[str]:
    """Names of the mitigations in force (the non-saturating loss counts as one)."""
    obj = settings.objective
    flags = {"non_saturating": obj.non_saturating, "label_smoothing": obj.label_smoothing > 0,
             "instance_noise": obj.instance_noise > 0, "spectral_norm": settings.spectral_norm,
             "diffaug": obj.diffaug, "minibatch_std": settings.minibatch_std}
    return [name for name, on in flags.items() if on]


def check(cfg: Config) -> None:
    """Fail before training: missing MNIST, or settings the networks cannot take."""
    if cfg.data.name == "mnist" and not mnist_present(cfg.data.root or None):
        raise UsageError(f"MNIST not found under {mnist_location(cfg.data.root or None)}; run "
                         f"`syllabus data prepare mnist --download` or point {MNIST_KEY}")
    if cfg.model.arch == "conv" and cfg.data.image_size % 4:
        raise UsageError(f"data.image_size={cfg.data.image_size}: model.arch=conv needs a multiple of 4")
    if not 0 < cfg.data.train_fraction <= 1:
        raise UsageError(f"data.train_fraction={cfg.data.train_fraction}: expected a share in (0, 1]")
    if not 0 <= cfg.gan.label_smoothing < 1 or cfg.gan.instance_noise < 0:
        raise UsageError("gan.label_smoothing must be in [0, 1) and gan.instance_noise >= 0")
    if cfg.eval.n_samples < 2 or cfg.eval.n_grid < 1:
        raise UsageError("eval.n_samples must be at least 2 (a covariance) and eval.n_grid at least 1")
    if cfg.cpu_threads < 0:
        raise UsageError(f"cpu_threads={cfg.cpu_threads}: expected 0 (torch's default) or more")
    if min(cfg.train.steps, cfg.train.eval_every, cfg.train.batch_size, cfg.train.d_steps, cfg.train.g_steps) < 1:
        raise UsageError("train.steps, train.eval_every, train.batch_size, train.d_steps and train.g_steps "
                         "must be at least 1")


# --------------------------------------------------------------------------- data and classifier


def load_images(cfg: DataConfig) -> dict[str, TensorDataset]:
    """train/val/test (image (1, S, S) in [-1, 1], label) datasets."""
    if cfg.name == "mnist":
        splits = mnist_splits(cfg.root or None, size=cfg.image_size, seed=cfg.seed)
    else:
        splits = digits_splits(size=cfg.image_size, seed=cfg.seed)
    return {s: TensorDataset(ds.images * 2 - 1, ds.targets) for s, ds in splits.items()}


def gan_subset(images: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """A fixed random `fraction` of `images` (at least one)."""
    n = max(1, round(fraction * len(images)))
    keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images[keep]


def train_classifier(splits: dict[str, TensorDataset], cfg: TrainConfig, run: Run, seed: int) -> tuple[ResNet, float]:
    """A ResNet-8 digit classifier on the real training digits (its own run folder); test accuracy."""
    torch.manual_seed(seed)
    model = ResNet(NUM_CLASSES, n=1, in_channels=1)
    loaders = {s: DataLoader(ds, batch_size=cfg.batch_size, shuffle=s == "train") for s, ds in splits.items()}
    sub = Run(run.path / "classifier", run.device)
    fit(model, loaders["train"], loaders["val"], ClassificationTask(NUM_CLASSES), cfg, sub, seed=seed)
    model.load_state_dict(sub.load_checkpoint("best")["model"])
    model.eval()
    out = predict(model, DataLoader(splits["test"], batch_size=256))
    return model, float((out["pred"] == out["true"]).mean())


# --------------------------------------------------------------------------- measures of the samples


def class_histogram(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(N,) integer labels -> (K,) shares summing to 1."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    return counts / max(counts.sum(), 1)


def classes_covered(hist: np.ndarray, min_share: float) -> int:
    """Classes holding at least `min_share` of the samples."""
    return int((np.asarray(hist) >= min_share).sum())


def kl_to_uniform(hist: np.ndarray) -> float:
    """KL(p || uniform) = sum_k p_k log(K p_k): 0 for a uniform histogram, log K for a single class."""
    p = np.asarray(hist, dtype=np.float64)
    nz = p > 0
    return float((p[nz] * np.log(len(p) * p[nz])).sum())


class SampleEvaluator:
    """Measures a generator's fixed-noise samples and a discriminator's view of real images.

    Args:
        classifier: digit classifier with `forward_features` / `forward_head` (a `ResNet`).
        heldout: (M, C, S, S) real images the Fréchet distance compares against.
        d_train: real images D is trained on; d_heldout: real images it never sees.
        z_dim: generator input size.
        cfg: sample count, coverage threshold and grid size.
        batch_size: batch in which D sees images (minibatch statistics depend on it).
        seed: seed of the fixed noise.
    """

    def __init__(self, classifier: nn.Module, heldout: torch.Tensor, d_train: torch.Tensor,
                 d_heldout: torch.Tensor, z_dim: int, cfg: EvalConfig, batch_size: int, seed: int):
        self.clf, self.cfg, self.batch_size = classifier, cfg, batch_size
        self.d_train, self.d_heldout = d_train[:1000], d_heldout[:1000]
        self.noise = torch.randn(cfg.n_samples, z_dim, generator=torch.Generator().manual_seed(seed + 1))
        feats, _ = self.features(heldout)
        self.reference = gaussian_stats(feats)  # mu (F,), sigma (F, F)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(N, C, S, S) -> penultimate classifier features (N, F) and predicted labels (N,)."""
        device = next(self.clf.parameters()).device
        feats, labels = [], []
        for x in images.split(256):
            f = self.clf.pool(self.clf.forward_features(x.to(device))).flatten(1)  # (B, F)
            feats.append(f.cpu()), labels.append(self.clf.fc(f).argmax(1).cpu())
        return torch.cat(feats).numpy(), torch.cat(labels).numpy()

    @torch.no_grad()
    def d_mean(self, discriminator: nn.Module, images: torch.Tensor) -> float:
        device = next(discriminator.parameters()).device
        probs = [torch.sigmoid(discriminator(x.to(device))).cpu() for x in images.split(self.batch_size)]
        return float(torch.cat(probs).mean())

    @torch.no_grad()
    def samples(self, generator: nn.Module) -> torch.Tensor:
        device = next(generator.parameters()).device
        return torch.cat([generator(z.to(device)).cpu() for z in self.noise.split(500)])  # (N, C, S, S)

    def __call__(self, generator: nn.Module, discriminator: nn.Module) -> tuple[dict, torch.Tensor]:
        """Metrics of one evaluation, and the first `n_grid` samples for the grids."""
        fake = self.samples(generator)
        feats, labels = self.features(fake)
        hist = class_histogram(labels)
        d_train, d_heldout = self.d_mean(discriminator, self.d_train), self.d_mean(discriminator, self.d_heldout)
        metrics = {"classes_covered": classes_covered(hist, self.cfg.min_share), "kl_uniform": kl_to_uniform(hist),
                   "frechet": frechet_distance(*gaussian_stats(feats), *self.reference),
                   "d_train_real": d_train, "d_heldout_real": d_heldout, "d_gap": d_train - d_heldout,
                   "class_hist": hist.tolist()}
        return metrics, fake[:self.cfg.n_grid]


# --------------------------------------------------------------------------- the run


def build_pair(cfg: Config, settings: Settings, image_size: int) -> tuple[nn.Module, nn.Module]:
    m = cfg.model
    generator = GENERATORS.get(m.arch)(m.z_dim, image_size, 1, m.g_width)
    discriminator = DISCRIMINATORS.get(m.arch)(image_size, 1, settings.d_width, spectral_norm=settings.spectral_norm,
                                               minibatch_std=settings.minibatch_std)
    return generator, discriminator


def run(cfg: Config, run: Run) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.cpu_threads or threads)
    try:
        return _run(cfg, run)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: Config, run: Run) -> dict:
    settings = resolve(cfg)
    splits = load_images(cfg.data)
    size = splits["train"].tensors[0].shape[-1]
    classifier, accuracy = train_classifier(splits, cfg.classifier, run, cfg.seed)
    real = gan_subset(splits["train"].tensors[0], settings.train_fraction, cfg.data.seed)
    seed_everything(cfg.seed)  # the pair's initial weights do not depend on the classifier having trained
    generator, discriminator = build_pair(cfg, settings, size)
    evaluator = SampleEvaluator(classifier, splits["test"].tensors[0], real, splits["val"].tensors[0],
                                cfg.model.z_dim, cfg.eval, settings.train.batch_size, cfg.seed)

    def evaluate(g: nn.Module, d: nn.Module, step: int) -> dict:
        metrics, grid = evaluator(g, d)
        run.save_checkpoint(f"samples-{step:07d}", {"step": step, "samples": grid})
        return metrics

    fit_gan(generator, discriminator, real, settings.train, settings.objective, run, seed=cfg.seed,
            evaluate=evaluate)
    summary = summarize(run.read_metrics(), settings)
    floor, _ = evaluator.features(splits["train"].tensors[0])
    summary.update(
        scenario=cfg.gan.scenario, scenario_what=SCENARIOS[cfg.gan.scenario].what,
        mitigations=mitigations_on(settings), settings=settings.flat(), classifier_accuracy=accuracy,
        frechet_real=frechet_distance(*gaussian_stats(floor), *evaluator.reference), n_gan_train=len(real),
        image_size=size, params_g=_params(generator), params_d=_params(discriminator),
    )
    run.save_summary(summary)
    return summary


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def summarize(rows: list[dict], settings: Settings) -> dict:
    """Headline numbers: the last evaluation, and per-step values averaged over the last period."""
    evals = [r for r in rows if "frechet" in r]
    steps = [r for r in rows if "g_grad_norm" in r]
    last, tail = evals[-1], [r for r in steps if r["epoch"] == evals[-1]["epoch"]]
    mean = lambda key: float(np.mean([r[key] for r in tail]))  # noqa: E731
    out = {k: last[k] for k in ("classes_covered", "kl_uniform", "frechet", "d_train_real", "d_heldout_real",
                                "d_gap", "class_hist")}
    out.update({k: mean(k) for k in ("g_grad_norm", "d_grad_norm", "d_real", "d_fake", "d_loss", "g_loss")})
    out.update(min_classes_covered=min(r["classes_covered"] for r in evals), max_d_gap=max(r["d_gap"] for r in evals),
               steps=settings.train.steps, seconds=float(sum(r["time/period"] for r in evals)))
    return out



register(Experiment(
    name="gan",
    title="GAN training dynamics: vanishing gradients, mode collapse, D overfitting, mitigations",
    profiles={"smoke": smoke, "quick": quick, "full": full},
    run=run,
    reports="syllabus.experiments.gan_report",
    check=check,
    headline=["classes_covered", "kl_uniform", "frechet", "g_grad_norm", "d_gap", "classifier_accuracy"],
))
