"""resnet-transfer's pieces: skips cut per block, stage features, hierarchy scores, gradient norms."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import silhouette_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.resnet import ResNet as TvResNet

from syllabus.errors import UsageError
from syllabus.experiments.resnet_transfer_models import (
    layer_grad_norms,
    main_path_layers,
    parse_blocks,
    skips_cut,
    small_resnet,
    torchvision_resnet,
)
from syllabus.experiments.resnet_transfer_study import FrozenTrunk, StudyTrainer
from syllabus.explain.features import StageFeatures, extract_features, hierarchy_scores, stage_blocks, tsne_2d
from syllabus.metrics.cka import cka_matrix
from syllabus.nn.resnet import ResNet, count_weighted_layers
from syllabus.train import TrainConfig


def _branch(block, x):
    """The residual branch of any block, written out: ours (conv/norm) or torchvision's (conv/bn)."""
    if hasattr(block, "norm1"):
        return block.norm2(block.conv2(F.relu(block.norm1(block.conv1(x)))))
    out = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))
    if hasattr(block, "conv3"):
        out = block.bn3(block.conv3(F.relu(out)))
    return out


def _shortcut(block, x):
    module = getattr(block, "shortcut", None) or getattr(block, "downsample", None)
    return module(x) if module is not None else x


def _block_io(model, x):
    """(input, output) of every residual block in one forward pass, keyed (stage, block)."""
    seen, handles = {}, []
    for s, blocks in enumerate(stage_blocks(model)):
        for b, block in enumerate(blocks):
            hook = lambda m, i, o, key=(s, b): seen.__setitem__(key, (i[0].clone(), o.clone()))
            handles.append(block.register_forward_hook(hook))
    out = model(x)
    for h in handles:
        h.remove()
    return seen, out


MODELS = {"ours": lambda: small_resnet(5, 2, (8, 16, 16), "bn"),
          "tv-basic": lambda: TvResNet(BasicBlock, [1, 1, 2, 1], 5),
          "tv-bottleneck": lambda: TvResNet(Bottleneck, [1, 1, 2, 1], 5)}


@pytest.mark.parametrize("make", list(MODELS.values()), ids=list(MODELS))
def test_cutting_skips_changes_the_forward_only_in_the_chosen_blocks(make):
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(2, 3, 32, 32)
    where = {(1, 0), (2, 1)}  # a projection block and an identity block
    with torch.no_grad():
        before = model(x)
        with skips_cut(model, where):
            blocks, cut_out = _block_io(model, x)
        after = model(x)
    for (s, b), (inp, out) in blocks.items():
        block = stage_blocks(model)[s][b]
        skip = 0 if (s, b) in where else _shortcut(block, inp)
        torch.testing.assert_close(out, F.relu(_branch(block, inp) + skip), msg=f"block {(s, b)}")
    assert not torch.allclose(cut_out, before, atol=1e-4)
    torch.testing.assert_close(after, before, atol=0, rtol=0)  # every skip restored


def test_built_without_skips_equals_the_intact_model_cut_at_inference():
    torch.manual_seed(0)
    intact = small_resnet(4, 2, (8, 16, 16), "bn").eval()
    plain = small_resnet(4, 2, (8, 16, 16), "bn", cut="stage2+stage3.1").eval()
    missing, unexpected = plain.load_state_dict(intact.state_dict(), strict=False)
    assert not missing and all("stages.1.0.shortcut" in k for k in unexpected) and unexpected
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad(), skips_cut(intact, parse_blocks("stage2+stage3.1", [2, 2, 2])):
        torch.testing.assert_close(plain(x), intact(x))


def test_parse_blocks():
    assert parse_blocks("all", [2, 1]) == {(0, 0), (0, 1), (1, 0)}
    assert parse_blocks("", [2, 1]) == parse_blocks("none", [2, 1]) == set()
    assert parse_blocks("stage1.1+stage2", [2, 1]) == {(0, 1), (1, 0)}
    for bad in ("stage3", "stage0", "stage1.2", "layer1", "stage1.x"):
        with pytest.raises(UsageError, match="names no block"):
            parse_blocks(bad, [2, 1])


@pytest.mark.parametrize("pool", [1, 2])
def test_stage_features_are_the_pooled_stage_outputs(pool):
    torch.manual_seed(0)
    ours, tv = ResNet(3, n=1, widths=(4, 8, 8)).eval(), TvResNet(BasicBlock, [1, 1, 1, 1], 3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = ours.stem(x)
        expect = {"stem": h}
        for i, stage in enumerate(ours.stages):
            h = expect[f"stage{i + 1}"] = stage(h)
        t = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        expect_tv = {"stem": t}
        for i in range(1, 5):
            t = expect_tv[f"stage{i}"] = getattr(tv, f"layer{i}")(t)
        for model, ref in ((ours, expect), (tv, expect_tv)):
            with StageFeatures(model, pool) as hooks:
                model(x)
            assert list(hooks.outputs) == list(ref)
            for k, v in ref.items():
                torch.testing.assert_close(hooks.outputs[k], F.adaptive_avg_pool2d(v, pool).flatten(1))
    assert not ours._forward_hooks and not ours.stages[0]._forward_hooks  # released


def test_extract_features_collects_every_level_and_restores_the_mode():
    torch.manual_seed(0)
    model = ResNet(3, n=1, widths=(4, 8, 8)).train()
    data = TensorDataset(torch.randn(10, 3, 32, 32), torch.arange(10) % 3)
    feats, labels = extract_features(model, DataLoader(data, batch_size=4), pool=1, max_examples=6)
    assert model.training
    assert {k: v.shape for k, v in feats.items()} == {"stem": (6, 4), "stage1": (6, 4), "stage2": (6, 8),
                                                       "stage3": (6, 8)}
    assert labels.tolist() == [0, 1, 2, 0, 1, 2]
    with torch.no_grad():
        ref = model.eval().forward_features(data.tensors[0][:6]).mean((2, 3))
    np.testing.assert_allclose(feats["stage3"], ref.numpy(), rtol=1e-5, atol=1e-6)


def test_hierarchy_scores_match_scikit_learn():
    rng = np.random.default_rng(0)
    y_tr, y_te = rng.integers(0, 3, 150), rng.integers(0, 3, 90)
    centres = rng.normal(size=(3, 6)) * 3

    def levels(y):
        return {"noise": rng.normal(size=(len(y), 5)), "clusters": centres[y] + rng.normal(size=(len(y), 6))}

    train, test = levels(y_tr), levels(y_te)
    out = hierarchy_scores(train, y_tr, test, y_te, seed=0)
    assert out["levels"] == ["noise", "clusters"] and out["dims"] == [5, 6]
    for i, name in enumerate(out["levels"]):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, random_state=0))
        assert out["probe_accuracy"][i] == pytest.approx(clf.fit(train[name], y_tr).score(test[name], y_te))
        assert out["silhouette"][i] == pytest.approx(silhouette_score(test[name], y_te))
    np.testing.assert_allclose(out["cka"], cka_matrix([test["noise"], test["clusters"]]))
    assert out["probe_accuracy"][1] > out["probe_accuracy"][0] + 0.4
    assert out["silhouette"][1] > 0.3 > out["silhouette"][0]


def test_tsne_keeps_separate_clusters_apart():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    x = rng.normal(size=(60, 80)) + 8 * np.eye(3, 80)[y]
    emb = tsne_2d(x, seed=0, perplexity=10, max_iter=500)
    assert emb.shape == (60, 2)
    assert silhouette_score(emb, y) > 0.5


def test_layer_grad_norms_follow_the_main_path():
    torch.manual_seed(0)
    model = small_resnet(4, 2, (4, 8, 8), "bn")
    F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    layers = main_path_layers(model)
    assert len(layers) == count_weighted_layers(model) == 14
    assert layers[0][0] == "stem.0" and layers[-1][0] == "fc"
    norms = layer_grad_norms(model)
    assert norms == pytest.approx([p.grad.norm().item() for _, p in layers])
    assert min(norms) > 0


def test_named_weights_are_fetched_only_when_asked(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        with pytest.raises(UsageError, match="data.download=true"):
            torchvision_resnet("resnet18", "IMAGENET1K_V1", 10)
        with pytest.raises(UsageError, match="not a weight set"):
            torchvision_resnet("resnet18", "IMAGENET9K", 10)
    finally:
        torch.hub.set_dir(old)
    model = torchvision_resnet("resnet18", "none", 7)
    assert model.fc.out_features == 7


def test_a_weights_file_loads_or_fails_in_one_line_naming_it(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    src = resnet18()
    torch.save({"state_dict": src.state_dict()}, tmp_path / "good.pth")
    model = torchvision_resnet("resnet18", str(tmp_path / "good.pth"), 5)
    assert torch.equal(model.conv1.weight, src.conv1.weight) and model.fc.out_features == 5
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match=r"model.weights=.*bad.pth cannot be read") as bad:
        torchvision_resnet("resnet18", str(tmp_path / "bad.pth"), 5)
    assert "\n" not in str(bad.value)
    state = src.state_dict()
    state.pop("fc.bias")
    state["conv1.weight"] = state["conv1.weight"][:8]
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(UsageError, match=r"does not fit resnet18: missing 1: fc.bias; shape mismatch 1.*conv1"):
        torchvision_resnet("resnet18", str(tmp_path / "other.pth"), 5)


def test_frozen_trunk_trains_only_the_last_stage_and_keeps_frozen_statistics():
    torch.manual_seed(0)
    model = small_resnet(4, 1, (4, 8, 8), "bn")
    trunk = FrozenTrunk(model, first_trainable=3).train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    trunk(torch.randn(6, 3, 32, 32)).logsumexp(1).sum().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == name.startswith(("stages.2", "fc")), name
    for k, v in model.state_dict().items():
        if "running_mean" in k:
            assert torch.equal(v, stats[k]) != k.startswith("stages.2"), k
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(trunk.eval()(x), model(x))


def test_backbone_gets_the_lower_rate_and_gradients_are_recorded():
    torch.manual_seed(0)
    model = small_resnet(4, 1, (4, 8, 8), "bn")
    trainer = StudyTrainer(model, [], 4, grad_every=2, backbone_lr_scale=0.1)
    opt = trainer.make_optimizers(TrainConfig(lr=0.5))["main"]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.5])
    assert {id(p) for p in opt.param_groups[1]["params"]} == {id(p) for p in model.fc.parameters()}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.arange(4)).backward()
    for _ in range(5):
        trainer.after_update(model)
    assert trainer.grad_log == [layer_grad_norms(model)] * 2
    restored = StudyTrainer(model, [], 4, grad_every=2)
    restored.load_extra_state(trainer.extra_state())
    np.testing.assert_allclose(restored.grad_log, trainer.grad_log, rtol=1e-6)
    assert restored.updates == 5

