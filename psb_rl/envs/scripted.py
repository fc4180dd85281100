"""Scripted reference policies for ``PSB/OddOneOut-v0`` that read the simulator's private state.

They are not agents: they tell what a success rate means on this task. An episode ends as soon as
the agent touches *any* object, so success needs knowing which object is the odd one (relational
reasoning, what object slots are meant to make easy) and reaching it without brushing past the others
(navigation among moving obstacles; rarely needed in the default layout, where the agent starts in
the centre and the objects start apart, often in the crowded ``agent_start="random", spacing=2``).
Three policies separate the two:

- ``"greedy"``: knows the odd object and walks straight at it (no avoidance);
- ``"avoid"``: knows the odd object and steps around the others (one-step look-ahead);
- ``"avoid_random_target"``: the same navigation towards an object picked at random at reset, i.e.
  perfect navigation without identification (the chance level of a policy that cannot compare).

Their success rates (:func:`evaluate_scripted`) put the PPO agents' in context (docs/rl.md).
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np

from psb_rl.envs.object_envs import _ACTION_DELTAS, OddOneOutEnv
from psb_rl.envs.sprites import COLOR_NAMES

POLICIES: tuple[str, ...] = ("greedy", "avoid", "avoid_random_target")

#: Cost added to a move that would touch an object other than the target on the next step.
_COLLISION_COST = 1e3


def scripted_action(env: OddOneOutEnv, target: int, avoid: bool = True, margin: float = 0.5) -> int:
    """The action that brings the agent closest (Chebyshev distance) to object ``target`` next step.

    :param env: the unwrapped environment (its ``pos``, ``vel``, ``size`` and ``agent_speed``).
    :param target: index of the object to reach (``env.odd_index`` for the right one).
    :param avoid: penalise moves whose next agent position touches another object's next position
        (objects move at constant velocity, so their next position is known). The no-op is never
        chosen: waiting for a gap let the agent stall until the time limit more often than it helped.
    :param margin: extra clearance in pixels kept from the other objects when ``avoid``.
    :return: a move action in ``1..4``.
    """
    agent = env.pos[0]
    half = env.size[0] / 2.0
    best_action, best_cost = 1, np.inf
    for action in range(1, 5):
        nxt = np.clip(agent + _ACTION_DELTAS[action] * env.agent_speed, half, env.image_size - half)
        cost = float(np.abs(nxt - env.pos[target]).max())
        if avoid:
            for j in range(1, len(env.color)):
                if j == target:
                    continue
                reach = (env.size[0] + env.size[j]) / 2.0 + margin
                if np.all(np.abs(nxt - (env.pos[j] + env.vel[j])) < reach):
                    cost += _COLLISION_COST
        if cost < best_cost:
            best_action, best_cost = action, cost
    return best_action


def straight_line_succeeds(env: OddOneOutEnv, max_steps: int = 100) -> bool:
    """Whether walking straight at the odd object succeeds from ``env``'s current state (on a copy).

    :param env: the unwrapped environment right after reset (left untouched).
    :param max_steps: give up after this many steps (the environment's time limit).
    """
    sim = copy.deepcopy(env)
    for _ in range(max_steps):
        _, _, terminated, truncated, info = sim.step(scripted_action(sim, sim.odd_index, avoid=False))
        if terminated or truncated:
            return bool(info["is_success"])
    return False


def colour_pair(env: OddOneOutEnv) -> str | None:
    """The episode's two object colours as ``"a/b"`` in palette order (e.g. ``"red/magenta"``), or None
    when every object has one colour (the odd one differs by shape). Benchmarks key per-pair results by it.

    :param env: the unwrapped environment after reset.
    """
    colours = sorted({int(c) for c in env.color[1:]})
    return "/".join(COLOR_NAMES[c] for c in colours) if len(colours) == 2 else None


def evaluate_scripted(policy: str, episodes: int = 1000, seed: int = 0, **env_kwargs: Any) -> dict[str, float]:
    """Roll a scripted policy on ``PSB/OddOneOut-v0`` and count the outcomes.

    :param policy: one of :data:`POLICIES`.
    :param episodes: number of episodes (reset seeds ``seed .. seed + episodes - 1``).
    :param seed: first reset seed; also seeds the random target choice.
    :param env_kwargs: keyword arguments of :class:`psb_rl.envs.object_envs.OddOneOutEnv`.
    :return: ``success_rate``, ``wrong_object_rate`` (touched another object), ``timeout_rate`` and
        ``mean_length`` (steps per episode).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = gym.make("PSB/OddOneOut-v0", obs_mode="state", **env_kwargs)
    core: OddOneOutEnv = env.unwrapped  # type: ignore[assignment]
    rng = np.random.default_rng(seed)
    outcomes = {"success": 0, "wrong": 0, "timeout": 0}
    lengths = []
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        target = core.odd_index if policy != "avoid_random_target" else int(rng.integers(1, len(core.color)))
        steps = 0
        while True:
            action = scripted_action(core, target, avoid=policy != "greedy")
            _, _, terminated, truncated, info = env.step(action)
            steps += 1
            if terminated or truncated:
                break
        outcome = "success" if info["is_success"] else ("wrong" if terminated else "timeout")
        outcomes[outcome] += 1
        lengths.append(steps)
    env.close()
    return {
        "success_rate": outcomes["success"] / episodes,
        "wrong_object_rate": outcomes["wrong"] / episodes,
        "timeout_rate": outcomes["timeout"] / episodes,
        "mean_length": float(np.mean(lengths)),
    }
