"""load_checkpoint: our own format and public-layout state dicts with wrapper prefixes."""
import pytest
import torch

import csakd_fast as cf
from conftest import small


def _inputs(cfg):
    return torch.randn(1, cfg.bands, 8, 8), torch.randn(1, cfg.msi_bands, 32, 32)


def test_own_checkpoint_roundtrip(tmp_path):
    model = cf.CSAKDNet(small("student", fusion="csa", attention="normalized"), backend="reference")
    path = tmp_path / "m.pt"
    cf.save_checkpoint(path, model, epoch=3)
    loaded = cf.load_checkpoint(path, backend="reference")
    assert loaded.config == model.config
    lr, msi = _inputs(model.config)
    torch.testing.assert_close(loaded(lr, msi)[0], model(lr, msi)[0], rtol=0, atol=0)
    assert torch.load(path, weights_only=True)["epoch"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp files left behind


@pytest.mark.parametrize("prefix", ["", "_orig_mod.", "module.", "module._orig_mod."])
@pytest.mark.parametrize("preset,fusion", [("teacher", "csa"), ("student", "csa"),
                                           ("student", "mhca"), ("teacher", "sum"),
                                           ("teacher", "sigmoid"), ("student", "concat")])
def test_public_layout(tmp_path, prefix, preset, fusion):
    """A bare state dict, as the public training script saves it, loads with the right
    architecture and (legacy attention) reproduces the model's outputs."""
    cfg = small(preset, fusion=fusion, attention="legacy")
    model = cf.CSAKDNet(cfg, backend="reference")
    path = tmp_path / "public.pth"
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, path)
    loaded = cf.load_checkpoint(path, backend="reference")
    assert loaded.config == cfg
    lr, msi = _inputs(cfg)
    torch.testing.assert_close(loaded(lr, msi)[0], model(lr, msi)[0], rtol=0, atol=0)


def test_public_paper_layout_is_inferred(tmp_path):
    model = cf.CSAKDNet(cf.CSAKDConfig.student(bands=172, msi_bands=4), backend="reference")
    path = tmp_path / "student.pth"
    torch.save({"_orig_mod." + k: v for k, v in model.state_dict().items()}, path)
    cfg = cf.load_checkpoint(path, backend="reference").config
    assert cfg == cf.CSAKDConfig.student(bands=172, msi_bands=4, attention="legacy")
    # overrides change what the shapes cannot tell
    assert cf.load_checkpoint(path, attention="paper", scale=4).config.attention == "paper"


def test_bad_checkpoints(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint file"):
        cf.load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        cf.load_checkpoint(junk)
    torch.save({"a": 1}, tmp_path / "nosd.pt")
    with pytest.raises(ValueError, match="no state dict"):
        cf.load_checkpoint(tmp_path / "nosd.pt")
    model = cf.CSAKDNet(small("teacher"), backend="reference")
    cf.save_checkpoint(tmp_path / "t.pt", model)
    with pytest.raises(ValueError, match="does not match"):
        cf.load_checkpoint(tmp_path / "t.pt", config=small("teacher", nf=24, gc=8))
