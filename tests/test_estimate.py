"""``model.estimate: probabilities`` (``zoomin.model.probability_logits``): the estimators of eqs 3 + 9
applied to each patch's class probabilities. End to end through the model, ``exp(logits)`` is an
unbiased estimate of ``E_{alpha, beta}[softmax(g(f))]`` over every (tile, sub-tile) pair, in value
and in the gradient with respect to both attention nets; each patch is a bounded vote."""
import pytest
import torch

import zoomin.sampling
from zoomin.config import ModelConfig, ReadoutConfig
from zoomin.geometry import subtile_boxes, tile_boxes
from zoomin.model import ZoomInNet, build_model, probability_logits
from zoomin.readout import PASS_ESTIMATE
from zoomin.sampling import expected_without_replacement
from zoomin.sources import ArraySource

from test_model_unbiased import PixelFeatures  # noqa: F401  (registers the "test_pixels" backbone)

DRAWS = 30000  # bounded probabilities vary less than features: their attention gradients are smaller


def setup(seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(stage1_resolution=0.2, tile=10, stage2_resolution=0.3, subtile=4, n_samples=5, feature_dim=4, feature_width=4,
                      attention_hidden=4, backbone="test_pixels", estimate="probabilities", num_classes=3)
    model = ZoomInNet(cfg)
    model.features(torch.zeros(1, 1, 4, 4))  # materialise the lazy layer
    with torch.no_grad():
        for p in list(model.attention1.parameters()) + list(model.attention2.parameters()):
            p.mul_(3.0)  # sharper attention than at initialisation
        model.classifier.linear.weight.mul_(10.0)  # patches that disagree: far from uniform probabilities
    x = torch.zeros(1, 1, 20, 20)
    x[..., 2:6, 3:7] = 1.0
    x[..., 12:18, 10:13] = 0.7
    x[..., 15:17, 1:5] = torch.linspace(0.2, 0.6, 4)
    w = torch.randn(cfg.num_classes, generator=torch.Generator().manual_seed(seed + 2))
    return model, x, w, list(model.attention1.parameters()) + list(model.attention2.parameters())


def grads(value, params):
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                      for p, g in zip(params, torch.autograd.grad(value, params, allow_unused=True))])


def exact(model, x, w, params):
    """``sum_c alpha_c sum_c' beta_cc' softmax(g(f_cc'))`` over every pair, and its gradient."""
    src = ArraySource(x)
    s1 = model.attend(src)
    L = s1.log_alpha.shape[1]
    tiles = tile_boxes(torch.arange(L), s1.view_hw, src.size, (10, 10))  # (L, 4)
    log_beta, _ = model.attend_tiles(src, torch.zeros(L, dtype=torch.long), tiles)  # (L, S)
    S = log_beta.shape[1]
    subs = subtile_boxes(tiles, torch.arange(S).expand(L, S), model.subview_hw, (10, 10), (4, 4))  # (L, S, 4)
    f = model.features(src.read(torch.zeros(L * S, dtype=torch.long), subs.reshape(-1, 4), 1.0, (4, 4)))
    p = model.classify(f).softmax(-1).view(L, S, -1)  # (L, S, classes)
    e = torch.einsum("l,ls,lsd->d", s1.log_alpha[0].exp(), log_beta.exp(), p)
    return e.detach(), grads(e @ w, params)


def monte_carlo(model, x, w, params):
    tr = model(x.expand(DRAWS, -1, -1, -1), generator=torch.Generator().manual_seed(3))
    e = tr.logits.exp().mean(0)
    return e.detach(), grads(e @ w, params)


def close(mc, ex):
    """Values within 3% of the largest; the gradient within 25% of its norm (measured: 0.05-0.15 for
    the model as it is at 30,000 draws, falling as one over the root of the draws; 0.37-0.61 with
    stage II's score term dropped)."""
    (em, gm), (ee, ge) = mc, ex
    return bool((em - ee).abs().max() < 0.03 * ee.abs().max() and (gm - ge).norm() < 0.25 * ge.norm())


@pytest.mark.parametrize("seed", [0, 2])
def test_probability_pooling_estimates_the_expected_class_probabilities(seed):
    model, x, w, params = setup(seed)
    ex = exact(model, x, w, params)
    assert ex[0].max() - ex[0].min() > 0.3  # the patches do not all say the same
    assert close(monte_carlo(model, x, w, params), ex)


def test_the_check_has_power(monkeypatch):
    """Dropping the stage-II score term must fail the same check."""
    model, x, w, params = setup()
    ex = exact(model, x, w, params)
    biased = lambda lb, f, k, s: expected_without_replacement(lb.detach(), f, k, s)  # noqa: E731
    monkeypatch.setattr(zoomin.sampling, "expected_without_replacement", biased)
    assert not close(monte_carlo(model, x, w, params), ex)


def test_a_confident_distractor_does_not_outvote_the_majority():
    """Three patches lean to class 0, one is sure of class 1. Averaging their logits (what a linear
    ``g`` of the mean feature does) picks class 1; averaging their probabilities picks class 0."""
    patch_logits = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 20.0]])  # (4 patches, 2 classes)
    assert patch_logits.mean(0).argmax() == 1
    assert probability_logits(patch_logits.softmax(-1).mean(0, keepdim=True)).argmax() == 0


@pytest.mark.parametrize("kind", ["zoom_in", "one_stage"])
@pytest.mark.parametrize("mode", ["sample", "topk"])
def test_contributions_add_up_to_the_class_probabilities(kind, mode):
    """What the explorer shows per sample: its share of the estimated class probabilities; their sum
    is ``exp(logits)`` (a distribution in top-k, where the weights sum to 1)."""
    cfg = dict(kind=kind, stage1_resolution=0.2, tile=10, stage2_resolution=0.3, subtile=4, n_samples=6, feature_dim=8,
               feature_width=4, attention_hidden=4, num_classes=3, estimate="probabilities")
    if kind == "one_stage":
        cfg.update(tile=5)
    model = build_model(ModelConfig(**cfg)).eval()
    tr = model(torch.rand(2, 1, 30, 40), mode=mode)
    assert tr.draw_probs.shape == (*tr.weights.shape, 3)
    assert torch.allclose(tr.contributions.sum((1, 2)), tr.logits.exp(), atol=1e-5)
    assert (tr.contributions[~tr.subtile_valid] == 0).all()
    if mode == "topk":
        assert torch.allclose(tr.logits.exp().sum(-1), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match="model.estimate must be one of"):
        ModelConfig(**{**cfg, "estimate": "votes"})


def test_a_mixture_readout_reads_the_same_weights_out_as_a_mixture():
    """``readout.method: mixture``: training keeps ``estimate: features`` (g of the mean feature); the eval-mode
    forward of the same weights averages each patch's ``softmax(g(f))`` instead, on the same draws."""
    cfg = dict(stage1_resolution=0.2, tile=10, stage2_resolution=0.3, subtile=4, n_samples=6, feature_dim=8, feature_width=4,
               attention_hidden=4, num_classes=3, feature_norm="none")
    torch.manual_seed(0)
    model = build_model(ModelConfig(**cfg))
    x = torch.rand(2, 1, 30, 40)
    train = model.train()(x, generator=torch.Generator().manual_seed(1))
    assert train.draw_probs is None and torch.allclose(train.logits, model.classify(train.z))
    test = model.eval()(x, generator=torch.Generator().manual_seed(1), estimate=PASS_ESTIMATE["mixture"])
    assert torch.equal(test.subtile_boxes, train.subtile_boxes)  # the same draws, read out differently
    own = model.classify(test.features).softmax(-1) * test.subtile_valid.unsqueeze(-1)  # (B, P, K, classes)
    assert torch.allclose(test.draw_probs, own, atol=1e-6)
    assert torch.allclose(test.logits.exp(), (test.weights.unsqueeze(-1) * own).sum((1, 2)), atol=1e-5)
    with pytest.raises(ValueError, match="readout.method"):
        ReadoutConfig(method="vote")


def test_both_trains_g_of_z_and_the_mixture_and_tests_on_the_mixture():
    """``model.estimate: both``: in training ``logits = g(z)`` and the trace carries the mixture for
    ``losses.mixture_loss`` (``train.mixture_weight``); in eval mode the mixture is the prediction."""
    from zoomin.config import Config
    from zoomin.losses import total_loss
    cfg = dict(stage1_resolution=0.2, tile=10, stage2_resolution=0.3, subtile=4, n_samples=6, feature_dim=8, feature_width=4,
               attention_hidden=4, num_classes=3, feature_norm="none", estimate="both")
    torch.manual_seed(0)
    model = build_model(ModelConfig(**cfg))
    x, y = torch.rand(2, 1, 30, 40), torch.tensor([0, 2])
    train = model.train()(x, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(train.logits, model.classify(train.z)) and train.draw_probs is None
    own = (train.weights.unsqueeze(-1) * model.classify(train.features).softmax(-1)).sum((1, 2))
    assert torch.allclose(train.mixture_logits.exp(), own, atol=1e-5)
    loss, parts = total_loss(train, y, entropy_weight=0.0, mixture_weight=0.5)
    mix = torch.nn.functional.cross_entropy(train.mixture_logits, y)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(train.logits, y) + 0.5 * mix)
    assert parts["mixture"] == pytest.approx(float(mix.detach()))
    loss.backward()  # both paths reach f and g
    assert model.classifier.linear.weight.grad.abs().sum() > 0
    test = model.eval()(x, generator=torch.Generator().manual_seed(1))
    assert test.mixture_logits is None and test.draw_probs is not None
    assert torch.allclose(test.logits.exp(), test.contributions.sum((1, 2)), atol=1e-5)
    with pytest.raises(ValueError, match="mixture_weight"):
        Config.from_dict({"model": {"estimate": "features"}, "train": {"mixture_weight": 1.0}})
