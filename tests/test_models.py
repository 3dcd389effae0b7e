import pytest
import torch

from crc_core.errors import CRCError
from crc_core.models import MLP, validate_model


@pytest.mark.parametrize("widths", [[5], [5, 6], [5, 6, 7], [3, 3, 3, 3]])
def test_depth_and_shapes(widths):
    m = MLP(12, widths, 4, "tanh")
    assert m.depth == len(widths) + 1
    assert [tuple(W.shape) for W in m.weights()] == list(zip([*widths, 4], [12, *widths]))
    logits, zs = m.forward_all(torch.rand(3, 12))
    assert logits.shape == (3, 4) and [z.shape[1] for z in zs] == widths
    torch.testing.assert_close(m(torch.rand(3, 12).reshape(3, 1, 3, 4)).shape, torch.Size([3, 4]))


def test_config_round_trip_and_plain_state_dict():
    m = MLP(10, [8, 8], 3, "sigmoid")
    m2 = MLP.from_config(m.config())
    m2.load_state_dict(m.state_dict())
    x = torch.rand(5, 10)
    torch.testing.assert_close(m(x), m2(x))


@pytest.mark.parametrize("bad", [dict(in_dim=0, widths=[3], n_classes=2), dict(in_dim=4, widths=[], n_classes=2),
                                 dict(in_dim=4, widths=[3], n_classes=1), dict(in_dim=4, widths=[0], n_classes=2)])
def test_bad_architecture(bad):
    with pytest.raises(CRCError):
        MLP(**bad)


def test_bad_inputs():
    m = MLP(10, [4], 3)
    with pytest.raises(CRCError, match="features"):
        m(torch.rand(2, 11))
    with pytest.raises(CRCError, match="floating"):
        m(torch.ones(2, 10, dtype=torch.long))
    m.layers[0].weight.data[0, 0] = float("nan")
    with pytest.raises(CRCError, match="NaN"):
        validate_model(m)
