"""A small CLIP (Radford et al. 2021): an image tower, a text transformer, a learned temperature.

Both towers map into one ``embed_dim`` space; ``CLIP.forward`` returns L2-normalised
embeddings and the logit scale exp(t), and ``clip_loss`` is the symmetric InfoNCE loss of
the paper's pseudo-code (figure 3): cross-entropy over the rows and over the columns of the
scaled similarity matrix, averaged. The image tower here is the ResNet of
``syllabus.nn.resnet`` with its linear head as the projection; the text tower is a
pre-norm causal transformer pooled at the end token, as in CLIP.

``zero_shot_weights`` builds a zero-shot classifier from prompt templates (the ensemble is
the mean of the normalised text embeddings of every template, renormalised); it works with
any ``encode_text``, open_clip's included.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from syllabus.nn.resnet import ResNet


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a causal mask and key padding ignored.

    Args:
        width: model width.
        heads: number of heads (divides ``width``).
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, L, d)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, L, d)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x)).

    Args:
        width: model width.
        heads: attention heads.
        mlp_ratio: hidden width of the MLP over ``width``.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D)
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TextTransformer(nn.Module):
    """Token + position embeddings, causal blocks, final norm, projection of the end token.

    Token id 0 is padding; the end token is the last non-padding position. With a causal
    mask the padding after it never reaches it.

    Args:
        vocab_size: number of token ids.
        context_length: longest sequence.
        width: model width.
        layers: transformer blocks.
        heads: attention heads per block.
        embed_dim: output (joint space) dimension.
    """

    def __init__(self, vocab_size: int, context_length: int, width: int = 64, layers: int = 2, heads: int = 4,
                 embed_dim: int = 64):
        super().__init__()
        self.token = nn.Embedding(vocab_size, width)
        self.position = nn.Parameter(torch.randn(context_length, width) * 0.01)
        self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim, bias=False)
        nn.init.normal_(self.token.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, L) int -> (B, E)
        x = self.token(tokens) + self.position[: tokens.shape[1]]  # (B, L, D)
        x = self.ln(self.blocks(x))
        last = (tokens != 0).sum(1).clamp(min=1) - 1  # (B,) index of the end token
        return self.proj(x[torch.arange(len(x), device=x.device), last])  # (B, E)


class ImageTower(nn.Module):
    """The 6n+2 ResNet's features, average-pooled, with its linear head as the projection.

    Args:
        embed_dim: output (joint space) dimension.
        n: blocks per stage.
        widths: filters of the three stages.
        norm_layer: constructor taking a channel count (see ``syllabus.nn.norms.get_norm_layer``).
    """

    def __init__(self, embed_dim: int = 64, n: int = 1, widths: Sequence[int] = (16, 32, 64),
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.resnet = ResNet(embed_dim, n=n, widths=widths, norm_layer=norm_layer)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, E)
        return self.resnet(images)


class CLIP(nn.Module):
    """Two towers and a learned temperature.

    Args:
        image_encoder: (B, 3, H, W) -> (B, E).
        text_encoder: (B, L) token ids -> (B, E).
        init_temperature: initial softmax temperature (0.07 in CLIP); the logit scale
            exp(t) = 1/temperature is learned in log space and clamped at ``max_scale``.
        max_scale: upper bound of the logit scale (100 in CLIP).
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, init_temperature: float = 0.07,
                 max_scale: float = 100.0):
        super().__init__()
        self.visual, self.text = image_encoder, text_encoder
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))
        self.max_log_scale = math.log(max_scale)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(images), dim=-1)  # (B, E), unit norm

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(tokens), dim=-1)  # (B, E), unit norm

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=self.max_log_scale).exp()

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(tokens), self.scale()


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of B matching pairs (row i of each is a pair).

    Args:
        image_emb: (B, E) normalised image embeddings.
        text_emb: (B, E) normalised text embeddings.
        logit_scale: scalar, 1/temperature.
    """
    logits = logit_scale * image_emb @ text_emb.T  # (B, B): image i against text j
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@torch.no_grad()
def zero_shot_weights(encode_text: Callable[[list[str]], torch.Tensor], classes: Sequence[str],
                      templates: Sequence[str] | Callable[[str], Sequence[str]]) -> torch.Tensor:
    """One normalised text embedding per class: the mean over templates of normalised embeddings.

    Args:
        encode_text: texts -> (T, E) embeddings (normalised or not).
        classes: class names.
        templates: format strings with one ``{}``, or a function giving a class's prompts.

    Returns:
        (C, E) unit-norm class embeddings.
    """
    rows = []
    for name in classes:
        prompts = templates(name) if callable(templates) else [t.format(name) for t in templates]
        emb = F.normalize(encode_text(list(prompts)).float(), dim=-1)  # (T, E)
        rows.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(rows)  # (C, E)
