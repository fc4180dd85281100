import pytest

from psb_rl.frames import size_from_flag
from psb_rl.presets import PRESETS, apply_preset, explicit_flags, get_preset
from psb_rl.training import TrainArgs


def test_every_preset_builds_a_valid_model_config():
    for name, preset in PRESETS.items():
        args = apply_preset(TrainArgs(), preset)
        config = args.model_config()  # raises on an invalid combination
        assert args.env == preset.env and args.max_minutes == preset.max_minutes, name
        for key, value in preset.train.items():
            assert getattr(args, key) == value
        assert config.image_size == size_from_flag(args.image_size, "--image-size")
        assert config.num_slots == args.num_slots


def test_explicit_flags_override_the_preset():
    argv = ["--preset", "atari", "--num-slots", "6", "--no-difference-input", "--lr=0.002"]
    explicit = explicit_flags(argv)
    assert {"num_slots", "difference_input", "lr", "preset"} <= explicit
    args = apply_preset(TrainArgs(num_slots=6, difference_input=False, lr=0.002), get_preset("atari"), explicit)
    assert args.num_slots == 6 and args.difference_input is False and args.lr == 0.002
    assert args.decoder == "blob"  # not given: the preset's


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of"):
        get_preset("nethack")
