"""Official state dicts load strictly; broken checkpoints fail with clear errors."""

import pytest
import torch
from sam_oracle import SMALL, model_pair
from segment_anything import sam_model_registry as official_registry

from torchao._models.sam import CheckpointError, build_sam_from_config, sam_model_registry


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h", "default"])
def test_official_state_dict_loads_strict(name):
    # meta device: the full-size models cost no memory; the keys and shapes are what matter
    with torch.device("meta"):
        official = official_registry[name]()
        ours = sam_model_registry[name]()
    state = official.state_dict()
    assert set(state) == set(ours.state_dict())
    ours.load_state_dict(state, strict=True, assign=True)
    for key, value in ours.state_dict().items():
        assert value.shape == state[key].shape, key


def small(checkpoint=None):
    return build_sam_from_config(64, 3, 2, (1,), checkpoint=checkpoint, image_size=256)


def test_checkpoint_file_roundtrip(tmp_path):
    official, _ = model_pair(SMALL)
    path = tmp_path / "sam_small.pth"
    torch.save(official.state_dict(), path)
    ours = small(checkpoint=path)
    for key, value in official.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


def test_vit_b_checkpoint_file(tmp_path):
    official = official_registry["vit_b"]()
    path = tmp_path / "sam_vit_b.pth"
    torch.save(official.state_dict(), path)
    ours = sam_model_registry["vit_b"](checkpoint=str(path))
    key = "image_encoder.blocks.11.attn.rel_pos_h"
    assert torch.equal(ours.state_dict()[key], official.state_dict()[key])


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        small(checkpoint=tmp_path / "nope.pth")


def test_corrupted_checkpoint(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"this is not a torch checkpoint" * 10)
    with pytest.raises(CheckpointError, match="could not read SAM checkpoint"):
        small(checkpoint=path)


def test_truncated_checkpoint(tmp_path):
    official, _ = model_pair(SMALL)
    path = tmp_path / "truncated.pth"
    torch.save(official.state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="could not read"):
        small(checkpoint=path)


def test_wrong_keys_and_shapes(tmp_path):
    official, _ = model_pair(SMALL)
    state = official.state_dict()
    state.pop("mask_decoder.iou_token.weight")
    state["extra.weight"] = torch.zeros(1)
    state["image_encoder.pos_embed"] = torch.zeros(1, 8, 8, 64)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        small(checkpoint=path)
    msg = str(err.value)
    assert "missing keys: mask_decoder.iou_token.weight" in msg
    assert "unexpected keys: extra.weight" in msg
    assert "image_encoder.pos_embed: checkpoint (1, 8, 8, 64) vs model (1, 16, 16, 64)" in msg


def test_other_model_size_is_rejected(tmp_path):
    official, _ = model_pair(SMALL)
    path = tmp_path / "small.pth"
    torch.save(official.state_dict(), path)
    with pytest.raises(CheckpointError, match="does not match"):
        build_sam_from_config(64, 2, 2, (1,), checkpoint=path, image_size=256)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="state dict"):
        small(checkpoint=path)
