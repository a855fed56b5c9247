"""The architectures: shapes, gradients, longitude periodicity, the one-step update, the model file."""

from __future__ import annotations

import dataclasses
import importlib
from types import SimpleNamespace

import pytest
import torch
from conftest import PACKAGE, model_file

models = importlib.import_module(f"{PACKAGE}.models")
layers = importlib.import_module(f"{PACKAGE}.models.layers")
modelfile = importlib.import_module(f"{PACKAGE}.modelfile")
config = importlib.import_module(f"{PACKAGE}.config")

C, F, NLAT, NLON = 5, 3, 8, 16


def cfg(name="unet", **kw):
    return SimpleNamespace(name=name, width=kw.get("width", 8), depth=kw.get("depth", 2),
                           patch_size=kw.get("patch_size", 4))


def randomize_head(net):
    """Zero-initialized heads make every model output 0 (persistence); give them weights to test real outputs."""
    torch.manual_seed(1)
    for name, p in net.named_parameters():
        if name.startswith(("head", "smooth")):
            torch.nn.init.normal_(p, std=0.1)
    return net


@pytest.mark.parametrize("name", ["unet", "vit"])
@pytest.mark.parametrize("grid", [(NLAT, NLON), (7, 20)])
def test_forward_backward(name, grid):
    torch.manual_seed(0)
    net = randomize_head(models.build_model(cfg(name), C + F, C, *grid))
    x = torch.randn(2, C + F, *grid, requires_grad=True)
    y = net(x)
    assert y.shape == (2, C, *grid)
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_new_model_predicts_persistence():
    """Zero-initialized heads: an untrained model predicts no change, so the first loss is the change variance."""
    for name in ("unet", "vit"):
        net = models.build_model(cfg(name), C + F, C, NLAT, NLON)
        z, f = torch.randn(2, C, NLAT, NLON), torch.randn(2, F, NLAT, NLON)
        assert torch.equal(models.rollout_step(net, z, f, torch.ones(C)), z)


def test_rollout_step_formula():
    class Const(torch.nn.Module):
        def forward(self, x):
            return torch.ones(x.shape[0], C, *x.shape[2:])

    z, f = torch.randn(2, C, NLAT, NLON), torch.randn(2, F, NLAT, NLON)
    scale = [0.1, 0.2, 0.3, 0.4, 0.5]
    out = models.rollout_step(Const(), z, f, scale)
    assert torch.allclose(out - z, torch.tensor(scale)[None, :, None, None].expand_as(z))


def test_unet_equivariant_to_longitude_roll():
    """Circular padding in longitude: rolling the input by whole coarsest-level cells (2**depth grid cells) rolls
    the output the same way, including across the 0/360 seam."""
    torch.manual_seed(0)
    depth = 2
    net = randomize_head(models.build_model(cfg("unet", depth=depth), C + F, C, NLAT, NLON)).double()
    x = torch.randn(2, C + F, NLAT, NLON, dtype=torch.float64)
    for shift in (2**depth, 3 * 2**depth):
        rolled = net(torch.roll(x, shift, dims=-1))
        assert torch.allclose(rolled, torch.roll(net(x), shift, dims=-1), atol=1e-10)


@pytest.mark.parametrize("lat_mode", ["zeros", "replicate"])
def test_periodic_conv_wraps_around(lat_mode):
    """A 3x3 periodic convolution is equivariant to a roll by any number of cells, and column 0 sees column -1."""
    torch.manual_seed(0)
    conv = layers.PeriodicConv2d(2, 3, lat_mode=lat_mode).double()
    x = torch.randn(1, 2, NLAT, NLON, dtype=torch.float64)
    for shift in (1, 5):
        assert torch.allclose(conv(torch.roll(x, shift, -1)), torch.roll(conv(x), shift, -1), atol=1e-12)
    bumped = x.clone()
    bumped[..., -1] += 1.0
    assert not torch.allclose(conv(bumped)[..., 0], conv(x)[..., 0])


def test_vit_sees_across_the_seam():
    torch.manual_seed(0)
    net = randomize_head(models.build_model(cfg("vit"), C + F, C, NLAT, NLON))
    x = torch.randn(1, C + F, NLAT, NLON)
    bumped = x.clone()
    bumped[..., -1] += 1.0
    assert not torch.allclose(net(bumped)[..., 0], net(x)[..., 0])


def entered(net, cls) -> list[int]:
    """A counter of calls to `net`'s submodules of class `cls` (a pre-hook: counts re-runs in backward too)."""
    count = [0]
    for module in net.modules():
        if isinstance(module, cls):
            module.register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    return count


@pytest.mark.parametrize("name,block", [("unet", "ConvBlock"), ("vit", "Block")])
def test_activation_checkpointing_recomputes_with_same_gradients(name, block):
    torch.manual_seed(0)
    net = randomize_head(models.build_model(cfg(name), C + F, C, NLAT, NLON))
    calls = entered(net, getattr(importlib.import_module(f"{PACKAGE}.models.{name}"), block))
    x = torch.randn(2, C + F, NLAT, NLON)
    net(x).square().mean().backward()
    plain, plain_calls = [p.grad.clone() for p in net.parameters()], calls[0]
    net.zero_grad()
    calls[0] = 0
    net.checkpointing = True
    net(x).square().mean().backward()
    assert calls[0] == 2 * plain_calls  # each block runs again in backward
    for a, p in zip(plain, net.parameters(), strict=True):
        assert torch.allclose(a, p.grad, atol=1e-6)


@pytest.mark.parametrize("name", ["unet", "vit"])
def test_bf16_autocast_on_cpu(name):
    torch.manual_seed(0)
    net = randomize_head(models.build_model(cfg(name), C + F, C, NLAT, NLON))
    dtypes = set()
    for module in net.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            module.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
    z, f = torch.randn(2, C, NLAT, NLON), torch.randn(2, F, NLAT, NLON)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = models.rollout_step(net, z, f, torch.ones(C))
    assert dtypes == {torch.bfloat16}  # the network computes in bf16 ...
    assert out.dtype == torch.float32  # ... while the state stays fp32
    out.square().mean().backward()
    assert all(p.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in net.parameters())


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unet"):
        models.build_model(cfg("resnet"), C + F, C, NLAT, NLON)


def test_unet_rejects_longitudes_it_cannot_pool():
    with pytest.raises(ValueError, match="model.depth"):
        models.build_model(cfg("unet", depth=3), C + F, C, NLAT, 20)


@pytest.mark.parametrize("name", ["unet", "vit"])
def test_model_file_save_and_load(tmp_path, name):
    saved = model_file(name)
    path = tmp_path / "model.pt"
    saved.save(path)
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temp file left
    blob = torch.load(path, weights_only=True)  # the contract: loadable without unpickling code
    assert set(blob) == {f.name for f in dataclasses.fields(modelfile.ModelFile)} | {"sha256"}
    loaded = modelfile.ModelFile.load(path)
    assert loaded.meta() == saved.meta() and loaded.step == 7
    net, meta = models.load_model(path)  # the wrapper evaluation uses
    assert meta == saved.meta() and not net.training
    x = torch.randn(1, len(saved.channels) + len(saved.forcings), 8, 16)
    with torch.no_grad():
        assert torch.equal(net(x), saved.build()(x))
        assert not torch.equal(net(x)[:, :1], x[:, :1] * 0)  # real weights, not the zero-initialized head


def test_model_file_defaults_come_from_model_config():
    """A file that omits an architecture key builds with config.ModelConfig's default (no second copy)."""
    saved = model_file("vit")
    assert "patch_size" not in saved.model
    assert saved.config().patch_size == config.ModelConfig().patch_size
    assert saved.network().patch == config.ModelConfig().patch_size
