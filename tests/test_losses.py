import torch

from zoomin.config import ModelConfig
from zoomin.losses import attention_entropy, contrastive_loss, total_loss
from zoomin.model import ZoomInNet
from zoomin.sampling import complement_log_probs


def test_contrastive_binary_is_the_papers_loss():
    torch.manual_seed(0)
    model = ZoomInNet(ModelConfig(num_classes=2, stage1_resolution=0.1, tile=40, stage2_resolution=0.25, subtile=12, feature_dim=8,
                                  feature_width=8))
    x, y = torch.rand(4, 1, 80, 80), torch.tensor([1, 0, 1, 1])
    tr = model(x, negatives=True)
    psi = tr.negatives.logits.softmax(-1)[:, 1]  # Psi(x | y = 1): probability of the positive class
    expected = -torch.log(1 - psi[y == 1]).mean()  # eq 10, averaged over positives
    assert torch.allclose(contrastive_loss(tr, y, reference_class=0), expected, atol=1e-6)
    assert contrastive_loss(tr, torch.zeros(4, dtype=torch.long)) == 0  # no positives, no loss


def test_complement_distribution():
    p = torch.tensor([[0.7, 0.2, 0.1]])
    q = complement_log_probs(p.log()).exp()
    assert torch.allclose(q, (1 - p) / 2)
    fg = torch.tensor([[True, True, False]])
    q = complement_log_probs(p.log(), fg).exp()
    assert torch.allclose(q, torch.tensor([[0.3, 0.8, 0.0]]) / 1.1, atol=1e-6)


def test_entropy_regulariser_sign_and_value():
    torch.manual_seed(0)
    model = ZoomInNet(ModelConfig(stage1_resolution=0.1, tile=40, stage2_resolution=0.25, subtile=12, feature_dim=8, feature_width=8))
    tr = model(torch.rand(2, 1, 80, 80))
    H = attention_entropy(tr)
    drawn = tr.tile_counts > 0  # (B, P) stage II counts the tiles that were drawn
    expected = torch.special.entr(tr.alpha).sum((1, 2)).mean() + torch.special.entr(tr.beta).sum((2, 3))[drawn].mean()
    assert torch.allclose(H, expected, atol=1e-5)  # mean entropy of alpha plus that of the drawn tiles' beta
    assert H <= torch.log(torch.tensor(64.0)) + torch.log(torch.tensor(100.0)) + 1e-4  # at most uniform's
    y = torch.tensor([1, 2])
    l0, _ = total_loss(tr, y)
    l1, parts = total_loss(tr, y, entropy_weight=0.5)
    assert torch.allclose(l1, l0 - 0.5 * H) and parts["entropy"] == float(H.detach())


def test_annotation_loss_pulls_attention_to_the_roi():
    from zoomin.losses import annotation_loss
    torch.manual_seed(0)
    cfg = ModelConfig(stage1_resolution=0.1, tile=40, stage2_resolution=0.25, subtile=12, feature_dim=8, feature_width=8, n_samples=8)
    model = ZoomInNet(cfg)
    x = torch.rand(2, 1, 120, 120) * 0.2
    x[0, :, 20:40, 70:90] += 0.8  # the ROI is brighter
    x[1, :, 80:100, 10:30] += 0.8
    mask = torch.zeros(2, 1, 120, 120)
    mask[0, :, 20:40, 70:90] = 1
    mask[1, :, 80:100, 10:30] = 1
    opt = torch.optim.Adam(list(model.attention1.parameters()) + list(model.attention2.parameters()), 0.05)

    def roi_mass(tr):
        m1 = torch.nn.functional.interpolate(mask, size=tr.alpha.shape[-2:], mode="area").squeeze(1) > 0
        return float((tr.alpha.detach() * m1).sum((1, 2)).mean())

    before = roi_mass(model(x))
    for _ in range(40):
        tr = model(x, n=2)
        loss = annotation_loss(tr, mask)  # the scales and the stage-II grid come from the trace
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = roi_mass(model(x))
    assert before < 0.2 and after > 0.6
    none = annotation_loss(model(x), torch.zeros_like(mask))
    assert none == 0  # no ROI, no supervision
