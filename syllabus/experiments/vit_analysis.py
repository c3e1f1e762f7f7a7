"""`vit-analysis`: what a Vision Transformer looks at and what it can lose (ATML assignment, task 2).

Trains a ViT classifier (quick: a small ViT written here, on `shapes`; full: transformers'
ViT-B/16 with a trained head on CIFAR-10), then on the best checkpoint:

- inference: test accuracy and confusion matrix, top-5 predictions for a grid of test images;
- attention: the last block's CLS attention per head and attention rollout, overlaid; on
  `shapes` the share of each map's mass inside the object mask against a uniform and a
  centred-Gaussian map, with 95% intervals;
- patch masking: random masking at `analysis.ratios` over `analysis.seeds` seeds, the
  systematic patterns, and the most- against the least-attended patches first (ranked by each
  image's rollout), each by replacing patches with black ("zero") or the dataset's mean colour
  ("mean"), and by dropping their tokens ("drop");
- CLS against mean pooling: logistic-regression probes on the CLS token and on the mean of the
  patch tokens after the embedding and after every block, and how often the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from syllabus.classify import ClassifierTrainer, predict, split_report
from syllabus.config import choice, nested, ranged
from syllabus.errors import UsageError
from syllabus.experiments import Experiment, register
from syllabus.experiments import vit_analysis_study as study
from syllabus.experiments.vit_analysis_data import DATASETS, check_data, vit_data
from syllabus.experiments.vit_analysis_report import ANALYSIS_FILE
from syllabus.experiments.vit_analysis_report import sections as report_sections
from syllabus.nn.vit import POS_INITS, STEMS, HFViT, ViT
from syllabus.runs import Run, is_main_process, save_npz
from syllabus.train import TrainConfig, fit, fit_summary, load_best

FILLS = ("zero", "mean", "drop")


@dataclass
class DataConfig:
    name: str = choice("shapes", DATASETS)  # fake: random images, a stand-in for tests
    dir: str = ""  # cache of embedded sets; default $SYLLABUS_DATA or ~/.cache/syllabus
    root: str = ""  # CIFAR-10 folder (torchvision layout); default <data dir>/cifar
    download: bool = False  # let torchvision fetch CIFAR-10 when it is missing
    image_size: int = ranged(32, 8)  # shapes: generated at this side; cifar10/fake: resized to it
    n_train: int = ranged(4000, 0)  # shapes/fake; cifar10: 0 = all that is left after val
    n_val: int = ranged(500, 1)
    n_test: int = ranged(1000, 0)  # shapes/fake; cifar10: 0 = all 10,000
    augment: bool = True  # random horizontal flips of training images
    num_workers: int = ranged(0, 0)
    seed: int = 0  # generation seed (shapes), split seed (cifar10)


@dataclass
class ModelConfig:
    kind: str = choice("small", ["small", "hf"])  # small: the ViT written here; hf: transformers' ViT
    patch_size: int = ranged(4, 1)
    dim: int = ranged(64, 1)
    depth: int = ranged(4, 1)
    heads: int = ranged(4, 1)
    mlp_ratio: float = ranged(2.0, 0, lo_open=True)
    dropout: float = ranged(0.0, 0, 1, hi_open=True)
    stem: str = choice("conv", STEMS)  # small only: convolutional stem or the paper's patch embedding
    pos_init: str = choice("sincos", POS_INITS)  # small only: start of the learned position embeddings
    name: str = "google/vit-base-patch16-224"  # hf: hub id or folder with config.json + weights
    pretrained: bool = True  # hf: False builds a random ViTConfig model from the sizes above
    download: bool = False  # hf: let transformers fetch the weights when they are not cached
    finetune: bool = False  # hf: train every weight; False trains only the classification head


@dataclass
class AnalysisConfig:
    n_images: int = ranged(500, 1)  # test images scored for attention, masking and probes
    grid: int = ranged(16, 1)  # images shown with top-5 predictions and attention overlays
    ratios: tuple[float, ...] = ranged((0.0, 0.2, 0.4, 0.6, 0.8, 0.9), 0, 1)
    seeds: int = ranged(3, 1)  # random masks per ratio
    fills: tuple[str, ...] = FILLS  # zero, mean (replace the patches), drop (their tokens)
    probe_train: int = ranged(2000, 2)  # training images of the linear probes
    probe_iter: int = ranged(300, 1)
    batch_size: int = ranged(250, 1)
    gaussian_sigma: float = ranged(0.25, 0, lo_open=True)


@dataclass
class Config:
    data: DataConfig = nested(DataConfig)
    model: ModelConfig = nested(ModelConfig)
    train: TrainConfig = nested(TrainConfig)
    analysis: AnalysisConfig = nested(AnalysisConfig)
    seed: int = 0


def _adamw(**kw) -> TrainConfig:
    return TrainConfig(**{"optimizer": "adamw", "weight_decay": 0.05, "schedule": "cosine", **kw})


def smoke() -> Config:
    return Config(data=DataConfig(n_train=96, n_val=32, n_test=48),
                  model=ModelConfig(dim=32, depth=2, heads=2),
                  train=_adamw(epochs=2, batch_size=32, lr=2e-3, log_every=1),
                  analysis=AnalysisConfig(n_images=48, grid=4, ratios=(0.0, 0.5, 1.0), seeds=1, probe_train=64,
                                          probe_iter=50, batch_size=48))


def quick() -> Config:
    """7 epochs on 4,000 shapes images, 256 test images analysed; about 2 min on a quiet 2-core CPU."""
    return Config(train=_adamw(epochs=7, batch_size=32, lr=2e-3, warmup_steps=100),
                  analysis=AnalysisConfig(n_images=256, grid=8, seeds=2, probe_train=1000, probe_iter=1000))


def full() -> Config:
    """Pretrained ViT-B/16 with a trained head on CIFAR-10 at 224x224."""
    return Config(data=DataConfig(name="cifar10", image_size=224, n_train=0, n_val=5000, n_test=0, num_workers=8),
                  model=ModelConfig(kind="hf", patch_size=16, dim=768, depth=12, heads=12, mlp_ratio=4.0),
                  train=_adamw(epochs=3, batch_size=128, lr=1e-3, weight_decay=0.0, log_every=50, precision="bf16"),
                  analysis=AnalysisConfig(n_images=1000, ratios=tuple(np.round(np.arange(10) / 10, 1)),
                                          probe_train=5000, probe_iter=500, batch_size=128))


def build_model(cfg: Config, summary: dict) -> torch.nn.Module:
    """The run's ViT (ours or transformers' behind the same interface); summary gives the classes."""
    m, num_classes = cfg.model, len(summary["classes"])
    if m.kind == "small":
        return ViT(num_classes, cfg.data.image_size, m.patch_size, dim=m.dim, depth=m.depth, heads=m.heads,
                   mlp_ratio=m.mlp_ratio, dropout=m.dropout, stem=m.stem, pos_init=m.pos_init)
    from syllabus.experiments.vit_analysis_data import transformers_vit

    model = HFViT(transformers_vit(m, num_classes, cfg.data.image_size))
    if model.grid[0] * model.patch_size != cfg.data.image_size:
        raise UsageError(f"data.image_size={cfg.data.image_size} but {m.name} takes "
                         f"{model.grid[0] * model.patch_size}px images; set data.image_size to that")
    if not m.finetune:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("model.classifier."))
    return model


def check(cfg: Config) -> None:
    check_data(cfg.data)
    if cfg.model.kind == "small" and cfg.data.image_size % cfg.model.patch_size:
        raise UsageError(f"data.image_size={cfg.data.image_size} is not a multiple of model.patch_size="
                         f"{cfg.model.patch_size}")
    unknown = sorted(set(cfg.analysis.fills) - set(FILLS))
    if unknown:
        raise UsageError(f"analysis.fills: unknown {', '.join(unknown)}; valid: {', '.join(FILLS)}")


def run(cfg: Config, run: Run) -> dict:
    torch.manual_seed(cfg.seed)
    data = vit_data(cfg.data)
    loader = lambda ds, shuffle, bs: DataLoader(ds, batch_size=bs, shuffle=shuffle, num_workers=cfg.data.num_workers)
    model = build_model(cfg, {"classes": data.classes})
    bs = cfg.analysis.batch_size
    trainer = ClassifierTrainer(model, loader(data.eval_splits["val"], False, bs), len(data.classes))
    result = fit(trainer, loader(data.splits["train"], True, cfg.train.batch_size), cfg.train, run, seed=cfg.seed)
    load_best(run, trainer)
    model.eval()
    summary: dict = {"classes": data.classes, "split_info": data.info, **fit_summary(result, run, trainer)}
    out = predict(model, loader(data.eval_splits["test"], False, bs))
    summary["test"] = split_report(out["true"], out["pred"], len(data.classes))
    summary["test/accuracy"] = summary["test"]["accuracy"]
    summary.update(analyse(cfg, model, data, run))
    run.save_summary(summary)
    return summary


def analyse(cfg: Config, model, data, run: Run) -> dict:
    """Attention, masking and probes on the first `analysis.n_images` test images."""
    a, device = cfg.analysis, next(model.parameters()).device
    images = study.take(data.eval_splits["test"], a.n_images)
    probe_set = study.take(data.eval_splits["train"], a.probe_train)
    seen = study.inspect(model, images.x, a.batch_size, device)
    fills = {"zero": data.black, "mean": probe_set.x.mean((0, 2, 3)), "drop": None}
    fills = {k: (None if v is None else v.to(device)) for k, v in fills.items() if k in a.fills}
    clean = study.accuracy_of(seen["logits"], images.y)  # nothing masked
    out: dict = {"masking": {
        "ratios": list(a.ratios),
        "random": study.random_curves(model, images, list(a.ratios), list(range(a.seeds)), fills, a.batch_size,
                                      device, clean),
        "patterns": study.pattern_table(model, images, fills, a.batch_size, device),
        "ranked": study.ranked_curves(model, images, seen["rollout"], list(a.ratios), fills, a.batch_size, device,
                                      clean),
    }}
    train_feats = study.layer_features(model, probe_set.x, a.batch_size, device)
    out["probes"] = study.probe_layers(train_feats, probe_set.y.numpy(), seen, images.y.numpy(), cfg.seed,
                                       a.probe_iter)
    if images.masks is not None:
        maps = {"rollout": seen["rollout"], "last_layer": seen["heads"].mean(1),
                **{f"head_{h}": seen["heads"][:, h] for h in range(seen["heads"].shape[1])}}
        out["localisation"] = study.localisation(maps, images.masks, model.patch_size, a.gaussian_sigma)
    out.update(headline(out))
    g = min(a.grid, len(images.x))
    top, prob = study.top_k(seen["logits"][:g], min(5, seen["logits"].shape[1]))
    arrays = {"images": data.unnormalize(images.x[:g]).permute(0, 2, 3, 1).numpy(), "labels": images.y[:g].numpy(),
              "heads": seen["heads"][:g], "rollout": seen["rollout"][:g], "top": top, "top_prob": prob}
    if images.masks is not None:
        arrays["masks"] = images.masks[:g]
    if is_main_process():
        save_npz(run.path / ANALYSIS_FILE, arrays)
    return out


def headline(out: dict) -> dict[str, float]:
    """Flat summary keys: attention in the mask, accuracy at half the patches gone, best probes."""
    flat: dict[str, float] = {}
    loc = out.get("localisation")
    if loc:
        for name in ("rollout", "last_layer", "uniform", "gaussian"):
            flat[f"attention/{name}_in_mask"] = loc[name]["energy"]["mean"]
    m = out["masking"]
    if 0.5 in m["ratios"] or 0.4 in m["ratios"]:
        i = m["ratios"].index(0.5 if 0.5 in m["ratios"] else 0.4)
        for how, curves in m["random"].items():
            flat[f"masking/{how}@{m['ratios'][i]}"] = float(np.mean([row[i] for row in curves]))
    for kind in ("cls", "mean"):
        flat[f"probe/{kind}_best"] = max(out["probes"][kind])
    return flat


register(Experiment(
    name="vit-analysis",
    title="ViT inference, attention maps and rollout, patch masking, CLS vs mean-pooled probes",
    profiles={"smoke": smoke, "quick": quick, "full": full},
    run=run,
    sections=report_sections,
    build_model=build_model,
    check=check,
    headline=["test/accuracy", "attention/rollout_in_mask", "attention/gaussian_in_mask", "masking/drop@0.4",
              "probe/cls_best", "probe/mean_best"],
    key_figure="attention_overlays",
    monitors=("val/accuracy", "val/macro_f1", "val/loss"),
    budget_s=155,  # quick, measured in `run all` (one thread, beside another job)
))
