"""crc_core.device: one place that picks the device."""

import pytest
import torch

from crc_core.device import default_device, describe_device


def test_default_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert default_device().type == expected
    assert default_device("auto").type == expected
    assert default_device("cpu") == torch.device("cpu")
    assert describe_device("cpu").startswith("cpu (")


def test_unavailable_or_unknown_device() -> None:
    with pytest.raises(ValueError):
        default_device("not-a-device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            default_device("cuda")


@pytest.mark.gpu
def test_cuda_description() -> None:
    assert describe_device(default_device("cuda")).startswith("cuda:0 (")
