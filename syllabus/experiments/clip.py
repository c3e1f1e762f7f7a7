"""`clip`: zero-shot classification with prompting strategies, the modality gap, Procrustes alignment.

`quick` trains a small CLIP here (ResNet image tower, text transformer, symmetric InfoNCE
with a learned temperature) on `shapes` images and generated captions, holding one
colour-shape combination out of every caption; `full` loads open_clip's ViT-B-32 with the
`openai` weights and scores STL-10. Both then run the same studies on the embeddings:
zero-shot accuracy per prompting strategy, the modality gap (per class, 2-D views, a
modality classifier, the shift of Liang et al. 2022) and orthogonal Procrustes alignment
against the mean shift, fitted on 1%, 10% and 100% of the train pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from syllabus.config import choice, nested, ranged
from syllabus.data.captions import CaptionTokenizer, caption_corpus
from syllabus.errors import UsageError
from syllabus.experiments import Experiment, register
from syllabus.experiments import clip_data as cdata
from syllabus.experiments.clip_report import report_sections
from syllabus.explain import embeddings as emb
from syllabus.metrics.classification import confusion_matrix
from syllabus.nn.clip import CLIP, ImageTower, TextTransformer, clip_loss, zero_shot_weights
from syllabus.nn.norms import NORM_LAYERS, constrain_norms_, get_norm_layer
from syllabus.runs import Run, save_npz
from syllabus.train import StepContext, TrainConfig, Trainer, fit, fit_summary, load_best


@dataclass
class ModelConfig:
    kind: str = choice("small", ["small", "open_clip"])
    embed_dim: int = ranged(64, 2)  # small: joint space
    n: int = ranged(1, 1)  # small: ResNet blocks per stage
    widths: tuple[int, ...] = (16, 32, 64)  # small: filters of the image tower's three stages
    norm: str = choice("bin", NORM_LAYERS)  # small: the image tower's normalisation
    text_width: int = ranged(64, 8)
    text_layers: int = ranged(2, 1)
    text_heads: int = ranged(4, 1)
    context_length: int = ranged(24, 8)
    init_temperature: float = ranged(0.07, 0, 1, lo_open=True)
    arch: str = "ViT-B-32"  # open_clip: model name
    pretrained: str = "openai"  # open_clip: a pretrained tag, a weights file, or "none" (random weights)
    download: bool = False  # open_clip: fetch the pretrained weights when they are not cached
    batch_size: int = ranged(256, 1)  # encoding batch


@dataclass
class AnalysisConfig:
    shifts: tuple[float, ...] = (-0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0)
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    view_points: int = ranged(300, 4)  # per modality in the PCA / t-SNE views


@dataclass
class Config:
    data: cdata.DataConfig = nested(cdata.DataConfig)
    model: ModelConfig = nested(ModelConfig)
    train: TrainConfig = nested(TrainConfig)
    analysis: AnalysisConfig = nested(AnalysisConfig)
    seed: int = 0


def _small_train(epochs: int, **kw) -> TrainConfig:
    return TrainConfig(**{"epochs": epochs, "batch_size": 128, "optimizer": "adamw", "lr": 3e-3,
                          "weight_decay": 0.05, "warmup_steps": 30, **kw})


def smoke() -> Config:
    return Config(data=cdata.DataConfig(n_train=96, n_val=48, n_test=64, captions_per_image=2),
                  model=ModelConfig(embed_dim=16, text_width=16, text_layers=1, text_heads=2),
                  train=_small_train(2, batch_size=32, log_every=1, warmup_steps=0),
                  analysis=AnalysisConfig(shifts=(0.0, 1.0), view_points=20))


def quick() -> Config:
    """10 epochs on 4,000 shapes pairs; a narrow image tower (widths 8/16/32) keeps it near 2 minutes."""
    return Config(model=ModelConfig(widths=(8, 16, 32)), train=_small_train(10))


def full() -> Config:
    """open_clip ViT-B-32 (`openai` weights) on STL-10: 5,000 train pairs for the fit, 8,000 test images."""
    return Config(data=cdata.DataConfig(name="stl10", num_workers=8), model=ModelConfig(kind="open_clip"),
                  analysis=AnalysisConfig(view_points=500))


# --- the small CLIP ---


def tokenizer(cfg: Config) -> CaptionTokenizer:
    return CaptionTokenizer(caption_corpus(), cfg.model.context_length)


def build_model(cfg: Config, summary: dict | None = None) -> CLIP:
    m = cfg.model
    image = ImageTower(m.embed_dim, n=m.n, widths=m.widths, norm_layer=get_norm_layer(m.norm))
    text = TextTransformer(tokenizer(cfg).vocab_size, m.context_length, m.text_width, m.text_layers, m.text_heads,
                           m.embed_dim)
    return CLIP(image, text, m.init_temperature)


class ClipTrainer(Trainer):
    """Symmetric InfoNCE on (image, K captions) batches, one caption drawn per image and step.

    Args:
        model: the CLIP.
        val_loader: (image, label) batches scored zero-shot by `evaluate`.
        class_tokens: (C, T, L) prompt tokens of each class (T templates, ensembled).
    """

    def __init__(self, model: CLIP, val_loader: DataLoader, class_tokens: torch.Tensor):
        self.model, self.val_loader, self.class_tokens = model, val_loader, class_tokens

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def param_groups(self, cfg: TrainConfig) -> dict[str, list[dict]]:
        """No weight decay on gains, biases and the temperature (as in CLIP)."""
        params = list(self.model.parameters())
        return {"main": [{"params": [p for p in params if p.ndim > 1]},
                         {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]}

    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        images, tokens = ctx.to_device(batch)  # (B, 3, H, W), (B, K, L)
        pick = torch.randint(tokens.shape[1], (len(tokens),)).to(tokens.device)  # (B,)
        image_emb, text_emb, scale = self.model(images, tokens[torch.arange(len(tokens)), pick])
        loss = clip_loss(image_emb, text_emb, scale)
        ctx.update("main", loss)
        constrain_norms_(self.model)
        return {"loss": loss.item(), "logit_scale": scale.item()}

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        c, t, length = self.class_tokens.shape
        text = self.model.encode_text(self.class_tokens.view(c * t, length).to(ctx.device)).view(c, t, -1)
        weights = torch.nn.functional.normalize(text.mean(1), dim=-1)  # (C, E)
        correct = total = 0
        for images, labels in self.val_loader:
            pred = (self.model.encode_image(images.to(ctx.device)) @ weights.T).argmax(1)
            correct += int((pred.cpu() == labels).sum())
            total += len(labels)
        return {"accuracy": correct / max(total, 1)}


def train_small(cfg: Config, run: Run, data: cdata.PairedData) -> tuple[CLIP, CaptionTokenizer, dict]:
    tok = tokenizer(cfg)
    model = build_model(cfg)
    pairs = cdata.CaptionPairs(data.fit.images, data.fit.texts, tok)
    prompts = data.strategies["ensemble"]
    class_tokens = torch.stack([tok(prompts(c)) for c in data.classes])  # (C, T, L)
    val = DataLoader(data.val.images, batch_size=cfg.model.batch_size, num_workers=cfg.data.num_workers)
    trainer = ClipTrainer(model, val, class_tokens)
    train = DataLoader(pairs, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                       num_workers=cfg.data.num_workers)
    result = fit(trainer, train, cfg.train, run, seed=cfg.seed)
    load_best(run, {"model": model})
    return model.eval(), tok, fit_summary(result, run, trainer)


# --- encoding and the studies ---


@torch.no_grad()
def encode_images(encode, dataset: Dataset, batch_size: int, device, workers: int = 0) -> np.ndarray:
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    return torch.cat([encode(batch[0].to(device)).float().cpu() for batch in loader]).numpy()  # (N, E)


@torch.no_grad()
def encode_texts(encode, texts: list[str], batch_size: int) -> np.ndarray:
    return torch.cat([encode(texts[i:i + batch_size]).float().cpu()
                      for i in range(0, len(texts), batch_size)]).numpy()  # (N, E)


def zero_shot(image: np.ndarray, labels: np.ndarray, weights: dict[str, np.ndarray], classes: list[str]) -> dict:
    """Overall and per-class accuracy of each strategy; the confusion matrix of the best."""
    out: dict = {"strategies": {}}
    for name, w in weights.items():
        pred = emb.zero_shot_predict(image, w)
        per_class = {c: emb.accuracy(pred[labels == k], labels[labels == k]) for k, c in enumerate(classes)}
        out["strategies"][name] = {"accuracy": emb.accuracy(pred, labels), "per_class": per_class}
    best = max(weights, key=lambda s: out["strategies"][s]["accuracy"])
    out["best"] = best
    out["confusion"] = confusion_matrix(labels, emb.zero_shot_predict(image, weights[best]), len(classes)).tolist()
    return out


def gap_study(cfg: Config, fit_pair: tuple, test_pair: tuple, labels: np.ndarray, class_w: np.ndarray,
              classes: list[str]) -> tuple[dict, dict]:
    """The gap, its per-class values, a modality classifier, the shift curve and the alignment table."""
    (fit_img, fit_txt), (img, txt) = fit_pair, test_pair
    k = min(cfg.analysis.view_points, len(img))
    views = {}
    for method in ("pca", "tsne"):
        views[f"{method}_image"], views[f"{method}_text"] = emb.project_2d(img[:k], txt[:k], method, cfg.seed)
    views["labels"] = labels[:k]
    per_class = emb.gap_per_class(img, txt, labels, len(classes))
    summary = {
        "gap": emb.modality_gap(img, txt), "gap_fit": emb.modality_gap(fit_img, fit_txt),
        "gap_per_class": {c: (None if np.isnan(g) else float(g)) for c, g in zip(classes, per_class)},
        "modality_classifier_accuracy": emb.modality_classifier_accuracy(img, txt, cfg.seed),
        "shift": emb.shift_curve(fit_img, fit_txt, img, txt, class_w, labels, list(cfg.analysis.shifts)),
        "alignment": emb.alignment_rows(fit_img, fit_txt, img, txt, class_w, labels, list(cfg.analysis.fractions),
                                        cfg.seed),
    }
    return summary, views


def analyse(cfg: Config, encode_image, encode_text, data: cdata.PairedData, device) -> tuple[dict, dict]:
    bs, workers = cfg.model.batch_size, cfg.data.num_workers
    fit_img = encode_images(encode_image, data.fit.images, bs, device, workers)
    fit_txt = encode_texts(encode_text, [t[0] for t in data.fit.texts], bs)
    img = encode_images(encode_image, data.test.images, bs, device, workers)
    txt = encode_texts(encode_text, [t[0] for t in data.test.texts], bs)
    weights = {s: zero_shot_weights(lambda t: torch.from_numpy(encode_texts(encode_text, t, bs)), data.classes,
                                    fn).numpy() for s, fn in data.strategies.items()}
    summary = {"zero_shot": zero_shot(img, data.test.labels, weights, data.classes)}
    best = summary["zero_shot"]["best"]
    summary["test/accuracy"] = summary["zero_shot"]["strategies"][best]["accuracy"]
    gaps, views = gap_study(cfg, (fit_img, fit_txt), (img, txt), data.test.labels, weights[best], data.classes)
    summary.update(gaps)
    if data.holdout is not None:
        summary["holdout"] = cdata.holdout_study(
            lambda ims: encode_images(encode_image, ims, bs, device), lambda t: encode_texts(encode_text, t, bs),
            data, weights[best])
    summary["test/gap"] = summary["gap"]
    proc = [r for r in summary["alignment"] if r["map"] == "procrustes" and r["fraction"] == 1.0]
    summary["test/procrustes_accuracy"] = proc[0]["accuracy"] if proc else None
    return summary, views


def run(cfg: Config, run: Run) -> dict:
    torch.manual_seed(cfg.seed)
    if cfg.model.kind == "small":
        data = cdata.shapes_pairs(cfg.data)
        model, tok, trained = train_small(cfg, run, data)
        device = next(model.parameters()).device
        encode_image, encode_text = model.encode_image, lambda t: model.encode_text(tok(t).to(device))
    else:
        device = torch.device("cuda" if run.device != "cpu" and torch.cuda.is_available() else "cpu")
        model, preprocess, oc_tok = cdata.load_open_clip(cfg.model, device)
        data = cdata.real_pairs(cfg.data, preprocess)
        encode_image, encode_text, trained = model.encode_image, lambda t: model.encode_text(oc_tok(t).to(device)), {}
    with torch.no_grad():
        summary, views = analyse(cfg, encode_image, encode_text, data, device)
    save_npz(run.path / "views.npz", views)
    summary.update(trained, classes=data.classes, data_info=data.info, model_kind=cfg.model.kind,
                   logit_scale=float(model.logit_scale.detach().exp()))
    run.save_summary(summary)
    return summary


def check(cfg: Config) -> None:
    if cfg.model.kind == "small" and cfg.data.name != "shapes":
        raise UsageError("model.kind=small trains on shapes captions only; use model.kind=open_clip for "
                         f"data.name={cfg.data.name}")
    if cfg.model.kind == "open_clip":
        cdata.resolve_weights(cfg.model)
    cdata.check_data(cfg.data)


register(Experiment(
    name="clip",
    title="CLIP: zero-shot prompting, the modality gap, Procrustes alignment",
    profiles={"smoke": smoke, "quick": quick, "full": full},
    run=run,
    sections=report_sections,
    build_model=build_model,
    check=check,
    headline=["test/accuracy", "test/gap", "test/procrustes_accuracy", "modality_classifier_accuracy"],
    key_figure="gap_pca",
    monitors=("val/accuracy",),
    budget_s=105,  # quick, measured in `run all` (one thread, beside another job)
))
