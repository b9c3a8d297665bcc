"""The ResNets: the published parameter counts, option-A shortcuts, and functional calls (single
and vmapped, as the trainer makes them) that equal calling the module."""

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from landscape.config import ModelConfig
from landscape.errors import BadInput
from landscape.models import build_model, count_parameters
from landscape.models.resnet import PadShortcut, build


@pytest.mark.parametrize("name,classes,count", [
    ("resnet18", 10, 11_173_962),   # the CIFAR-style ResNet-18: 11.17M for 10 classes
    ("resnet44", 10, 658_586),      # He et al. 2016, Table 6: 0.66M
    ("resnet44", 100, 664_436),     # only the last layer grows: 64 x 90 more weights, 90 biases
])
def test_parameter_counts(name, classes, count):
    assert count_parameters(build(name, (3, 32, 32), classes)) == count


def test_resnet44_shape_and_option_a_shortcuts():
    model = build("resnet44", (3, 32, 32), 10)
    assert len(model.blocks) == 21                        # 3 stages of 7 blocks; 6n + 2 = 44 layers
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 43 and {c.out_channels for c in convs} == {16, 32, 64}
    pads = [m for m in model.modules() if isinstance(m, PadShortcut)]
    assert len(pads) == 2 and all(not list(p.parameters()) for p in pads)
    x = torch.randn(2, 16, 8, 8)
    y = pads[0](x)                                        # 16 -> 32 channels, 8x8 -> 4x4
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and not y[:, 16:].any()


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)])
def test_forward_shapes_and_seeded_init(shape):
    a = build_model(ModelConfig("resnet44"), shape, 10, seed=1)
    b = build_model(ModelConfig("resnet44"), shape, 10, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.eval()(torch.randn(3, *shape)).shape == (3, 10)


def test_functional_calls_equal_the_module_and_update_batchnorm_buffers():
    models = [build_model(ModelConfig("resnet44"), (3, 16, 16), 10, seed=s) for s in (0, 1)]
    x = torch.randn(4, 3, 16, 16)
    expected = [m.train()(x) for m in [build_model(ModelConfig("resnet44"), (3, 16, 16), 10, seed=s)
                                       for s in (0, 1)]]
    params, buffers = stack_module_state(models)
    template = models[0]

    def call(p, b, inputs):
        return functional_call(template, (p, b), (inputs,))

    out = vmap(call, in_dims=(0, 0, None))(params, buffers, x)   # [K, N, classes]
    for k in range(2):
        torch.testing.assert_close(out[k], expected[k], atol=1e-5, rtol=1e-4)
    assert buffers["stem.1.running_mean"].abs().sum(-1).gt(0).all()   # each member's stats moved
    single = functional_call(template, {n: t[1] for n, t in {**params, **buffers}.items()}, (x,))
    torch.testing.assert_close(single, expected[1], atol=1e-5, rtol=1e-4)


def test_bad_shapes_are_bad_input():
    with pytest.raises(BadInput, match="image inputs"):
        build("resnet18", (784,), 10)
