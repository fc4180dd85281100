"""Tests of psb_rl.extractors.SlotTransformerExtractor."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from psb_rl import SlotTransformerExtractor

SPACE = gym.spaces.Box(-np.inf, np.inf, (5, 12), np.float32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


@pytest.mark.parametrize("pooling", ["transformer", "deepsets", "flatten"])
def test_output_shape_and_gradients(pooling: str) -> None:
    torch.manual_seed(0)
    extractor = SlotTransformerExtractor(SPACE, features_dim=16, pooling=pooling)
    assert extractor.features_dim == 16
    obs = torch.randn(3, 5, 12)
    out = extractor(obs)
    assert out.shape == (3, 16) and torch.isfinite(out).all()
    out.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in extractor.parameters())


@pytest.mark.parametrize(("embed_layers", "relation"), [(1, False), (2, False), (1, True)])
@pytest.mark.parametrize("pooling", ["transformer", "deepsets"])
def test_order_invariance(pooling: str, embed_layers: int, relation: bool) -> None:
    torch.manual_seed(0)
    extractor = SlotTransformerExtractor(
        SPACE, features_dim=16, pooling=pooling, embed_layers=embed_layers, relation=relation
    ).eval()
    obs = torch.randn(4, 5, 12)
    perm = torch.randperm(5)
    while torch.equal(perm, torch.arange(5)):
        perm = torch.randperm(5)
    torch.testing.assert_close(extractor(obs), extractor(obs[:, perm]), atol=1e-5, rtol=1e-5)


def test_flatten_is_not_order_invariant() -> None:
    torch.manual_seed(0)
    extractor = SlotTransformerExtractor(SPACE, features_dim=16, pooling="flatten")
    obs = torch.randn(4, 5, 12)
    assert not torch.allclose(extractor(obs), extractor(obs[:, [1, 0, 2, 3, 4]]), atol=1e-4)


@pytest.mark.parametrize("pooling", ["transformer", "deepsets", "flatten"])
def test_padded_objects_are_ignored(pooling: str) -> None:
    torch.manual_seed(0)
    extractor = SlotTransformerExtractor(SPACE, features_dim=16, pooling=pooling, mask_feature_index=-1).eval()
    obs = torch.randn(2, 5, 12)
    obs[..., -1] = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])  # last two objects absent
    other = obs.clone()
    other[:, 3:, :-1] = torch.randn(2, 2, 11)
    torch.testing.assert_close(extractor(obs), extractor(other), atol=1e-5, rtol=1e-5)
    present_changed = obs.clone()
    present_changed[:, 0, :-1] += 1.0
    assert not torch.allclose(extractor(obs), extractor(present_changed), atol=1e-4)


def test_no_objects_present_is_finite() -> None:
    extractor = SlotTransformerExtractor(SPACE, features_dim=8, mask_feature_index=-1)
    obs = torch.zeros(2, 5, 12)
    assert torch.isfinite(extractor(obs)).all()


def test_bad_space_error() -> None:
    with pytest.raises(ValueError, match="num_slots, slot_dim"):
        SlotTransformerExtractor(gym.spaces.Box(0, 255, (8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="pooling"):
        SlotTransformerExtractor(SPACE, pooling="max")
    with pytest.raises(ValueError, match="embed_layers"):
        SlotTransformerExtractor(SPACE, embed_layers=3)
    with pytest.raises(ValueError, match="relation=True"):
        SlotTransformerExtractor(SPACE, pooling="flatten", relation=True)


def test_pair_relation_is_the_mean_over_the_other_present_slots() -> None:
    from psb_rl.extractors import PairRelation

    torch.manual_seed(0)
    relation = PairRelation(4)
    tokens = torch.randn(2, 3, 4)
    present = torch.tensor([[True, True, True], [True, False, True]])
    out = relation(tokens, present)

    def pair(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        hidden = relation.own(i) + relation.other(j) + relation.difference((i - j).abs())
        return relation.out(torch.nn.functional.gelu(hidden))

    t = tokens
    expected_all = (pair(t[0, 0], t[0, 1]) + pair(t[0, 0], t[0, 2])) / 2
    torch.testing.assert_close(out[0, 0], expected_all)
    # the absent slot 1 of the second observation is no one's partner
    torch.testing.assert_close(out[1, 0], pair(t[1, 0], t[1, 2]))
    torch.testing.assert_close(out[1, 2], pair(t[1, 2], t[1, 0]))
    # it tells how many others look alike: one slot among three equal ones vs one of three equal ones
    odd = torch.tensor([[[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0]]])
    r = PairRelation(4)(odd)
    assert not torch.allclose(r[0, 0], r[0, 1])
    torch.testing.assert_close(r[0, 1], r[0, 2])


def test_relation_ignores_absent_objects_in_state_mode() -> None:
    torch.manual_seed(0)
    extractor = SlotTransformerExtractor(SPACE, features_dim=8, relation=True, mask_feature_index=-1).eval()
    obs = torch.randn(2, 5, 12)
    obs[..., -1] = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])
    changed = obs.clone()
    changed[:, 3:, :-1] = torch.randn(2, 2, 11)  # absent objects' features must not matter
    torch.testing.assert_close(extractor(obs), extractor(changed))


def test_mlp_embedding_is_two_layers() -> None:
    extractor = SlotTransformerExtractor(SPACE, d_model=32, embed_layers=2)
    linears = [m for m in extractor.input_proj.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 64), (64, 32)]


def test_with_ppo_on_state_space() -> None:
    from stable_baselines3 import PPO

    class SetEnv(gym.Env):
        observation_space = SPACE
        action_space = gym.spaces.Discrete(3)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return self.observation_space.sample().clip(-1, 1), {}

        def step(self, action):
            return self.observation_space.sample().clip(-1, 1), 0.0, True, False, {}

    model = PPO(
        "MlpPolicy",
        SetEnv(),
        n_steps=16,
        batch_size=16,
        n_epochs=1,
        policy_kwargs={
            "features_extractor_class": SlotTransformerExtractor,
            "features_extractor_kwargs": {"features_dim": 16, "d_model": 16, "num_heads": 2},
        },
    )
    model.learn(32)
    assert isinstance(model.policy.features_extractor, SlotTransformerExtractor)


# ---------------------------------------------------------------------------------------------- standardisation


def test_standardizer_learns_statistics_only_while_acting_and_stops_at_its_budget() -> None:
    from psb_rl.extractors import RunningStandardizer

    torch.manual_seed(0)
    scale = torch.tensor([[1.0, 0.1], [5.0, 0.01]])  # (K=2, F=2): per slot index, per feature
    shift = torch.tensor([[3.0, -2.0], [0.0, 10.0]])
    standardizer = RunningStandardizer((2, 2), max_samples=3000).eval()
    with torch.no_grad():
        for _ in range(4):  # in batches, as rollouts arrive: the merged statistics are those of all 3000
            standardizer(torch.randn(1000, 2, 2) * scale + shift)
    assert standardizer.count.item() == 3000  # the last batch was not taken
    torch.testing.assert_close(standardizer.mean, shift, atol=0.2 * scale.max().item(), rtol=0)
    torch.testing.assert_close(standardizer.var.sqrt(), scale, rtol=0.1, atol=0)
    with torch.no_grad():
        out = standardizer(torch.randn(4000, 2, 2) * scale + shift)
    assert out.mean(0).abs().max() < 0.1 and (out.std(0) - 1).abs().max() < 0.1
    frozen = standardizer.mean.clone()
    standardizer.train()  # a PPO update reads the statistics without changing them
    fresh = RunningStandardizer((2, 2)).train()
    fresh(torch.randn(10, 2, 2))
    assert fresh.count.item() == 0
    torch.testing.assert_close(standardizer.mean, frozen)


def test_standardizer_does_not_learn_from_a_forward_with_gradients() -> None:
    from psb_rl.extractors import RunningStandardizer

    standardizer = RunningStandardizer((2, 3)).eval()
    standardizer(torch.randn(8, 2, 3, requires_grad=True))
    assert standardizer.count.item() == 0


def test_standardized_extractor_saves_its_statistics_with_its_weights() -> None:
    torch.manual_seed(0)
    extractor = SlotTransformerExtractor(SPACE, features_dim=16, standardize=True, standardize_samples=50).eval()
    with torch.no_grad():
        extractor(torch.randn(64, 5, 12) * 4 + 7)
    state = extractor.state_dict()
    assert {"standardizer.mean", "standardizer.var", "standardizer.count"} <= set(state)
    copy = SlotTransformerExtractor(SPACE, features_dim=16, standardize=True, standardize_samples=50).eval()
    copy.load_state_dict(state)
    obs = torch.randn(3, 5, 12) * 4 + 7
    with torch.no_grad():
        torch.testing.assert_close(copy(obs), extractor(obs))
    assert copy.standardizer.count.item() == 50  # full: loading and acting leave it as saved


def test_standardizer_rejects_an_empty_budget() -> None:
    with pytest.raises(ValueError, match="standardize_samples"):
        SlotTransformerExtractor(SPACE, standardize=True, standardize_samples=0)
