"""Checkpoints: exact round trip, no pickle ever executed, clear errors for bad files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from safetensors import safe_open
from safetensors.torch import save_file

from psb_rl.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from psb_rl.model import PSBAutoencoder


@pytest.fixture
def saved(tmp_path: Path) -> tuple[PSBAutoencoder, Path]:
    torch.manual_seed(0)
    model = PSBAutoencoder(tiny_config()).eval()
    path = save_checkpoint(model, tmp_path / "psb.ckpt", extra={"step": 7})
    return model, path


def test_round_trip_is_identical(saved: tuple[PSBAutoencoder, Path]) -> None:
    model, path = saved
    loaded = load_checkpoint(path, device="cpu")
    assert not loaded.training
    assert loaded.config == model.config
    video = torch.rand(2, 4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(video).recon, model(video).recon)
    _, info = read_checkpoint(path)
    assert info["extra"] == {"step": 7}
    assert info["preprocessing"]["image_size"] == 32


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(_Exploit.marker),))


def test_pickle_is_rejected_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _Exploit.marker = str(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save({"weights": _Exploit()}, evil)  # a zip of pickles that would touch `marker` on unpickling
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(_Exploit()))
    for path in (evil, plain):
        with pytest.raises(CheckpointError, match="never loaded"):
            load_checkpoint(path)
    assert not marker.exists()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.ckpt")


def test_truncated_file(saved: tuple[PSBAutoencoder, Path]) -> None:
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_flipped_bytes_fail_the_checksum(saved: tuple[PSBAutoencoder, Path]) -> None:
    _, path = saved
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # inside the tensor payload, past the JSON header
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path)


def test_other_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a psb-rl checkpoint"):
        load_checkpoint(path)


def test_newer_format_version(saved: tuple[PSBAutoencoder, Path], tmp_path: Path) -> None:
    model, _ = saved
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / "future.ckpt"
    save_file(tensors, str(path), metadata={"format": "psb-rl-checkpoint", "format_version": "99",
                                            "config": json.dumps(model.config.to_dict())})
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(path)


def test_checkpoint_from_before_colour_values_loads_without_it(tmp_path: Path) -> None:
    """Configs written before the colour_values field existed describe models without that path."""
    torch.manual_seed(0)
    model = PSBAutoencoder(tiny_config(colour_values=False)).eval()
    old_config = {k: v for k, v in model.config.to_dict().items() if k != "colour_values"}
    path = save_checkpoint(model, tmp_path / "old.ckpt")
    tensors, _ = read_checkpoint(path)
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    metadata["config"] = json.dumps(old_config)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    loaded = load_checkpoint(path)
    assert loaded.config.colour_values is False
    video = torch.rand(1, 3, 3, 32, 32)
    assert torch.equal(loaded.encode(video), model.encode(video))


def test_failed_write_keeps_previous_checkpoint(saved: tuple[PSBAutoencoder, Path], monkeypatch) -> None:
    model, path = saved
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("psb_rl.checkpoint.save_file", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_a_config_that_disagrees_with_the_weights_is_a_checkpoint_error(saved: tuple[PSBAutoencoder, Path],
                                                                        tmp_path: Path) -> None:
    _, path = saved
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    config = json.loads(metadata["config"])
    config["slot_dim"] *= 2  # the weights keep the old width: the checksum still matches
    save_file(tensors, str(tmp_path / "edited.ckpt"), metadata={**metadata, "config": json.dumps(config)})
    with pytest.raises(CheckpointError, match=r"edited\.ckpt: its stored config does not describe its weights.*size"):
        load_checkpoint(tmp_path / "edited.ckpt")


def test_identity_check_names_both_files(saved: tuple[PSBAutoencoder, Path], tmp_path: Path) -> None:
    from psb_rl.checkpoint import file_sha256, verify_checkpoint_identity

    model, path = saved
    digest = file_sha256(path)
    verify_checkpoint_identity(path, digest, str(path))  # the same file: fine
    other = save_checkpoint(model, tmp_path / "other.ckpt", extra={"step": 8})
    with pytest.raises(CheckpointError, match=rf"other\.ckpt \(sha256 \w+\.\.\.\) is not the PSB checkpoint .*psb\.ckpt, "
                                               rf"sha256 {digest[:12]}"):
        verify_checkpoint_identity(other, digest, str(path))


def test_rendering_options_travel_with_the_frame_pipeline(tmp_path: Path) -> None:
    from psb_rl.frames import FramePipeline

    torch.manual_seed(0)
    model = PSBAutoencoder(tiny_config())
    size = model.config.image_hw
    # a pipeline that only resizes to the model's size still records the options
    model.frame_pipeline = FramePipeline(source="observation", size=size, env_kwargs={"highlight": False})
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "options.ckpt"))
    assert loaded.frame_pipeline.env_kwargs == {"highlight": False}
    # checkpoints written without the field keep loading, with no options
    model.frame_pipeline = FramePipeline(source="render", size=size)
    path = save_checkpoint(model, tmp_path / "plain.ckpt")
    assert "env_kwargs" not in read_checkpoint(path)[1]["extra"]["frame_pipeline"]
    assert load_checkpoint(path).frame_pipeline.env_kwargs is None


def _rewrite(path: Path, edit) -> None:
    from psb_rl.checkpoint import _weights_digest

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    edit(metadata, tensors)
    metadata["weights_sha256"] = _weights_digest(tensors)
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("damage", ["float64 tensor", "extra not an object", "config not an object", "heads 0",
                                    "version not a number", "pipeline damaged"])
def test_well_formed_files_with_wrong_content_are_refused(saved: tuple[PSBAutoencoder, Path], damage: str) -> None:
    _, path = saved

    def edit(metadata: dict, tensors: dict) -> None:
        config = json.loads(metadata["config"])
        if damage == "float64 tensor":  # load_state_dict would cast it silently
            name = sorted(tensors)[0]
            tensors[name] = tensors[name].double()
        elif damage == "extra not an object":
            metadata["extra"] = "[1]"
        elif damage == "config not an object":
            metadata["config"] = '"text"'
        elif damage == "heads 0":
            metadata["config"] = json.dumps({**config, "num_heads": 0})
        elif damage == "version not a number":
            metadata["format_version"] = "x"
        else:
            metadata["extra"] = json.dumps({"frame_pipeline": {"size": -3}})

    _rewrite(path, edit)
    with pytest.raises(CheckpointError, match=str(path.name)):
        load_checkpoint(path)


@pytest.mark.parametrize(("field", "value"), [("window", 1.5), ("num_slots", "4"), ("colour_values", 1),
                                              ("image_size", [32.5, 32])])
def test_a_stored_config_of_the_wrong_types_is_refused(saved: tuple[PSBAutoencoder, Path], field: str,
                                                       value) -> None:
    _, path = saved
    _rewrite(path, lambda metadata, tensors: metadata.update(
        config=json.dumps({**json.loads(metadata["config"]), field: value})))
    with pytest.raises(CheckpointError, match=rf"{field} must be"):
        load_checkpoint(path)
