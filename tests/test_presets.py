import pytest

from psb_rl.frames import size_from_flag
from psb_rl.presets import PRESETS, apply_preset, env_slug, explicit_flags, fit_to_env, get_preset
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


def test_a_preset_says_how_its_rollouts_are_collected():
    from psb_rl.presets import collection_fields

    for name, preset in PRESETS.items():
        args = apply_preset(TrainArgs(), preset)
        for key, value in collection_fields(preset).items():
            assert getattr(args, key) == value, (name, key)
        assert args.data == f"data/{env_slug(preset.env)}" and args.out == f"runs/{env_slug(preset.env)}"
    atari = apply_preset(TrainArgs(env="ALE/Boxing-v5"), get_preset("atari"), {"env"})
    assert (atari.env, atari.collect_episodes, atari.collect_max_episode_steps) == ("ALE/Boxing-v5", 16, 800)
    assert atari.data == "data/ale-boxing-v5"  # never another env's rollouts
    minigrid = apply_preset(TrainArgs(), get_preset("minigrid"))
    assert (minigrid.pixels, minigrid.env_kwargs) == ("render", '{"highlight": false}')


def test_explicit_crop_and_resize_override_the_preset_and_set_the_model_size():
    argv = ["--preset", "atari", "--env", "ALE/Boxing-v5", "--crop", "0", "0", "0", "0", "--resize", "80", "64"]
    explicit = explicit_flags(argv)
    args = apply_preset(TrainArgs(env="ALE/Boxing-v5", crop=(0, 0, 0, 0), resize=[80, 64]), get_preset("atari"),
                        explicit)
    args = fit_to_env(args, get_preset("atari"), explicit)
    assert args.crop == (0, 0, 0, 0) and args.resize == [80, 64] and args.image_size == (80, 64)


def test_minigrid_frames_follow_the_envs_grid_one_token_per_cell():
    pytest.importorskip("minigrid")
    preset = get_preset("minigrid")
    doorkey = fit_to_env(apply_preset(TrainArgs(), preset), preset)
    assert (doorkey.resize, doorkey.image_size, doorkey.feature_stride, doorkey.decoder_grid) == ([40], 40, 8, 5)
    unlock = fit_to_env(apply_preset(TrainArgs(env="MiniGrid-Unlock-v0"), preset, {"env"}), preset, {"env"})
    assert unlock.resize == [48, 88] and unlock.image_size == (48, 88)  # 6 x 11 cells of 8 px
    config = unlock.model_config()
    assert config.feature_stride == 8 and config.decoder_grid == 6
    assert unlock.data == "data/minigrid-unlock-v0"
    keep = {"env", "image_size", "decoder_grid"}  # given on the command line: kept
    mine = fit_to_env(apply_preset(TrainArgs(env="MiniGrid-Unlock-v0", image_size=(24, 44), decoder_grid=3),
                                   preset, keep), preset, keep)
    assert mine.resize == [48, 88] and mine.image_size == (24, 44) and mine.decoder_grid == 3


def test_train_psb_with_a_preset_collects_its_own_rollouts(tmp_path):
    """No rollouts at --data: the preset's source, size, env kwargs, episode count and cap are collected."""
    pytest.importorskip("minigrid")
    import json

    from pretrain.train_psb import main

    data, out = tmp_path / "doorkey", tmp_path / "run"
    code = main(["--preset", "minigrid", "--data", str(data), "--out", str(out), "--collect-episodes", "2",
                 "--collect-max-episode-steps", "6", "--steps", "1", "--batch-size", "2", "--eval-clips", "1",
                 "--num-gifs", "0", "--eval-every", "0", "--torch-threads", "1", "--no-progress"])
    assert code == 0
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["env_id"] == "MiniGrid-DoorKey-5x5-v0" and manifest["pixels"] == "render"
    assert manifest["env_kwargs"] == {"highlight": False} and manifest["max_episode_steps"] == 6
    assert manifest["num_episodes"] == 2 and manifest["frame_pipeline"]["size"] == [40, 40]
    from psb_rl import load_checkpoint

    model = load_checkpoint(out / "psb.ckpt")
    assert model.frame_pipeline.env_kwargs == {"highlight": False} and model.config.image_size == 40


def test_every_atari_game_of_the_tables_gets_its_crop_and_slots_unless_given():
    from psb_rl.presets import ATARI_CROPS

    preset = get_preset("atari")
    assert preset.crop == ATARI_CROPS[preset.env]
    for env, crop in ATARI_CROPS.items():
        args = fit_to_env(apply_preset(TrainArgs(env=env), preset, {"env"}), preset, {"env"})
        assert args.crop == crop and args.data == f"data/{env_slug(env)}"
    given = {"env", "crop", "num_slots"}
    args = fit_to_env(apply_preset(TrainArgs(env="ALE/Tennis-v5", crop=(1, 2, 3, 4), num_slots=3), preset, given),
                      preset, given)
    assert args.crop == (1, 2, 3, 4) and args.num_slots == 3
    skiing = fit_to_env(apply_preset(TrainArgs(env="ALE/Skiing-v5"), preset, {"env"}), preset, {"env"})
    assert skiing.num_slots == 11 and skiing.model_config().num_slots == 11  # more objects: more slots
