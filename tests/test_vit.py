"""Our ViT against torch's attention and transformers' ViT with the same weights; token dropping."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import ViTConfig, ViTForImageClassification

from syllabus.errors import UsageError
from syllabus.nn.vit import Attention, HFViT, ViT, sincos_2d


def qkv_of(attn: Attention, x: torch.Tensor):
    """q, k, v (B, h, N, d) computed independently of Attention.forward."""
    b, n, d = x.shape
    q, k, v = F.linear(x, attn.qkv.weight, attn.qkv.bias).chunk(3, -1)  # (B, N, D) each
    return [t.view(b, n, attn.heads, d // attn.heads).transpose(1, 2) for t in (q, k, v)]


def test_attention_matches_scaled_dot_product_attention():
    torch.manual_seed(0)
    attn = Attention(32, heads=4)
    x = torch.randn(3, 10, 32)
    out, weights = attn(x, need_weights=True)  # unfused path
    fused, none = attn(x)
    q, k, v = qkv_of(attn, x)
    reference = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(3, 10, 32)  # (B, N, D)
    torch.testing.assert_close(out, attn.proj(reference), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused, out, atol=1e-5, rtol=1e-5)
    assert none is None and weights.shape == (3, 4, 10, 10)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 10))
    # the weights are torch's own: nn.MultiheadAttention with the same projections
    mha = nn.MultiheadAttention(32, 4, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.qkv.weight)
        mha.in_proj_bias.copy_(attn.qkv.bias)
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
    mha_out, mha_weights = mha(x, x, x, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(out, mha_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, mha_weights, atol=1e-6, rtol=1e-5)


def hf_copy(model: ViT) -> ViTForImageClassification:
    """transformers' ViT of the same shape carrying our weights."""
    dim, depth = model.head.in_features, len(model.blocks)
    block = model.blocks[0]
    config = ViTConfig(hidden_size=dim, num_hidden_layers=depth, num_attention_heads=block.attn.heads,
                       intermediate_size=block.mlp[0].out_features, image_size=model.grid[0] * model.patch_size,
                       patch_size=model.patch_size, num_labels=model.head.out_features, layer_norm_eps=1e-5,
                       hidden_act="gelu", attn_implementation="eager")
    hf = ViTForImageClassification(config).eval()
    emb, pairs = hf.vit.embeddings, [(hf.vit.layernorm, model.norm), (hf.classifier, model.head),
                                     (hf.vit.embeddings.patch_embeddings.projection, model.patch_embed)]
    for layer, block in zip(hf.vit.layers, model.blocks):
        pairs += [(layer.layernorm_before, block.norm1), (layer.layernorm_after, block.norm2),
                  (layer.attention.o_proj, block.attn.proj), (layer.mlp.fc1, block.mlp[0]),
                  (layer.mlp.fc2, block.mlp[3])]
    with torch.no_grad():
        for theirs, ours in pairs:
            theirs.load_state_dict(ours.state_dict())
        emb.cls_token.copy_(model.cls_token)
        emb.position_embeddings.copy_(model.pos_embed)
        for layer, block in zip(hf.vit.layers, model.blocks):
            for proj, w, b in zip((layer.attention.q_proj, layer.attention.k_proj, layer.attention.v_proj),
                                  block.attn.qkv.weight.chunk(3), block.attn.qkv.bias.chunk(3)):
                proj.weight.copy_(w)
                proj.bias.copy_(b)
    return hf


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(1)
    ours = ViT(5, image_size=16, patch_size=4, dim=32, depth=2, heads=4).eval()
    return ours, hf_copy(ours), torch.randn(2, 3, 16, 16)


def test_vit_matches_transformers_with_the_same_weights(pair):
    ours, hf, x = pair
    with torch.no_grad():
        expected = hf(pixel_values=x, output_attentions=True, output_hidden_states=True)
        feats = ours.forward_features(x, attentions=True, hidden=True)
        logits = ours.forward_head(feats)
    torch.testing.assert_close(logits, expected.logits, atol=1e-5, rtol=1e-4)
    for a, b in zip(feats.attentions, expected.attentions, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    for a, b in zip(feats.hidden, expected.hidden_states[1:], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_hf_adapter_matches_transformers(pair):
    _, hf, x = pair
    adapter = HFViT(hf)
    assert adapter.grid == (4, 4) and adapter.patch_size == 4
    with torch.no_grad():
        expected = hf(pixel_values=x, output_attentions=True)
        feats = adapter.forward_features(x, attentions=True)
        torch.testing.assert_close(adapter.forward_head(feats), expected.logits)
        for a, b in zip(feats.attentions, expected.attentions, strict=True):
            torch.testing.assert_close(a, b)


def test_dropping_no_token_changes_nothing_and_order_is_free(pair):
    ours, hf, x = pair
    everything = torch.arange(16).expand(2, 16)
    shuffled = torch.stack([torch.randperm(16, generator=torch.Generator().manual_seed(s)) for s in (0, 1)])
    for model in (ours, HFViT(hf)):
        with torch.no_grad():
            full = model(x)
            torch.testing.assert_close(model(x, keep=everything), full, atol=0, rtol=0)
            torch.testing.assert_close(model(x, keep=shuffled), full, atol=1e-5, rtol=1e-4)
            dropped = model(x, keep=everything[:, :8])
        assert not torch.allclose(dropped, full, atol=1e-3)  # dropping tokens does change the output


def test_dropped_tokens_keep_their_positions():
    torch.manual_seed(2)
    model = ViT(3, image_size=8, patch_size=4, dim=16, depth=1, heads=2)
    x = torch.randn(1, 3, 8, 8)
    keep = torch.tensor([[3, 1]])
    tokens = model.embed(x, keep)  # (1, 3, D)
    patches = model.patch_embed(x).flatten(2).transpose(1, 2)  # (1, 4, D)
    torch.testing.assert_close(tokens[0, 1], patches[0, 3] + model.pos_embed[0, 4])
    torch.testing.assert_close(tokens[0, 2], patches[0, 1] + model.pos_embed[0, 2])


def test_mean_pool_reads_the_patch_tokens_and_all_parameters_train():
    torch.manual_seed(3)
    model = ViT(4, image_size=8, patch_size=4, dim=16, depth=2, heads=2, pool="mean")
    x = torch.randn(2, 3, 8, 8)
    feats = model.forward_features(x)
    torch.testing.assert_close(model.forward_head(feats), model.head(feats.tokens[:, 1:].mean(1)))
    F.cross_entropy(model(x), torch.tensor([0, 1])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in model.parameters())


def test_hf_adapter_needs_eager_attention(pair):
    _, hf, x = pair
    config = ViTConfig(**{**hf.config.to_dict(), "attn_implementation": "sdpa"})
    sdpa = HFViT(ViTForImageClassification(config).eval())
    with pytest.raises(UsageError, match="eager"):
        sdpa.forward_features(x, attentions=True)


def test_sincos_position_codes_match_diffusers():
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    mae = get_2d_sincos_pos_embed(32, 6, base_size=6, output_type="pt").float()  # (36, 32): column codes first
    expected = torch.cat([mae[:, 16:], mae[:, :16]], 1)  # ours: row codes first
    torch.testing.assert_close(sincos_2d((6, 6), 32), expected)
    model = ViT(3, image_size=24, patch_size=4, dim=32, depth=1, heads=2)
    torch.testing.assert_close(model.pos_embed[0, 1:], expected)
