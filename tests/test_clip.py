"""The small CLIP: InfoNCE against a direct formulation, the towers, zero-shot weights."""

import math

import torch
import torch.nn.functional as F

from syllabus.nn.clip import CLIP, ImageTower, TextTransformer, clip_loss, zero_shot_weights


def _direct_infonce(img: torch.Tensor, txt: torch.Tensor, scale: float) -> float:
    """-1/2B sum_i [log softmax_j(s_ij)_i + log softmax_j(s_ji)_i], written out with exp and sums."""
    b = len(img)
    s = [[scale * float(img[i] @ txt[j]) for j in range(b)] for i in range(b)]
    image_to_text = sum(-math.log(math.exp(s[i][i]) / sum(math.exp(s[i][j]) for j in range(b))) for i in range(b))
    text_to_image = sum(-math.log(math.exp(s[i][i]) / sum(math.exp(s[j][i]) for j in range(b))) for i in range(b))
    return (image_to_text + text_to_image) / (2 * b)


def test_infonce_matches_direct_cross_entropy():
    g = torch.Generator().manual_seed(0)
    for b, scale in [(2, 1.0), (5, 14.3), (9, 50.0)]:
        img = F.normalize(torch.randn(b, 6, generator=g, dtype=torch.float64), dim=1)
        txt = F.normalize(torch.randn(b, 6, generator=g, dtype=torch.float64), dim=1)
        ours = clip_loss(img, txt, torch.tensor(scale, dtype=torch.float64)).item()
        assert math.isclose(ours, _direct_infonce(img, txt, scale), rel_tol=1e-10)


def test_infonce_is_asymmetric_in_rows_and_columns_but_averages_both():
    # two images equal, texts distinct: the image->text and text->image terms differ
    img = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=1)
    txt = F.normalize(torch.tensor([[1.0, 0.2], [0.3, 1.0], [0.0, 1.0]]), dim=1)
    logits = 5 * img @ txt.T
    target = torch.arange(3)
    one_way = F.cross_entropy(logits, target).item()
    assert abs(one_way - F.cross_entropy(logits.T, target).item()) > 1e-3
    assert math.isclose(clip_loss(img, txt, torch.tensor(5.0)).item(), _direct_infonce(img, txt, 5.0), rel_tol=1e-6)


def _small_clip(vocab: int = 20) -> CLIP:
    return CLIP(ImageTower(embed_dim=16, n=1, widths=(4, 8, 8)), TextTransformer(vocab, 8, width=16, layers=1,
                                                                                 heads=2, embed_dim=16))


def test_every_parameter_gets_a_gradient_and_the_scale_starts_at_one_over_007():
    torch.manual_seed(0)
    model = _small_clip()
    tokens = torch.tensor([[2, 5, 6, 3, 0, 0, 0, 0], [2, 7, 3, 0, 0, 0, 0, 0], [2, 9, 9, 9, 3, 0, 0, 0]])
    img, txt, scale = model(torch.randn(3, 3, 32, 32), tokens)
    assert img.shape == txt.shape == (3, 16)
    torch.testing.assert_close(img.norm(dim=1), torch.ones(3))
    assert math.isclose(scale.item(), 1 / 0.07, rel_tol=1e-5)
    clip_loss(img, txt, scale).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_text_embedding_ignores_padding_and_is_causal():
    torch.manual_seed(0)
    text = TextTransformer(20, 8, width=16, layers=2, heads=2, embed_dim=16).eval()
    short = torch.tensor([[2, 5, 6, 3, 0, 0, 0, 0]])
    # a changed token before the end token matters; tokens after it cannot reach it (causal)
    assert not torch.allclose(text(short), text(torch.tensor([[2, 5, 7, 3, 0, 0, 0, 0]])))
    x = text.ln(text.blocks(text.token(short) + text.position))
    y = text.ln(text.blocks(text.token(torch.tensor([[2, 5, 6, 3, 9, 9, 0, 0]])) + text.position))
    torch.testing.assert_close(x[:, :4], y[:, :4])


def test_scale_is_clamped_at_100():
    model = _small_clip()
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert math.isclose(model.scale().item(), 100.0, rel_tol=1e-5)


def test_zero_shot_weights_average_normalised_template_embeddings():
    table = {"a cat": [3.0, 0.0], "the cat": [0.0, 1.0], "a dog": [0.0, -2.0], "the dog": [0.0, -5.0]}

    def encode(texts):
        return torch.tensor([table[t] for t in texts])

    w = zero_shot_weights(encode, ["cat", "dog"], ["a {}", "the {}"])
    s = math.sqrt(0.5)
    torch.testing.assert_close(w, torch.tensor([[s, s], [0.0, -1.0]]))
    single = zero_shot_weights(encode, ["cat"], lambda c: [f"the {c}"])
    torch.testing.assert_close(single, torch.tensor([[0.0, 1.0]]))
