"""Tiny environments for tests, made through gymnasium's "module:EnvId" syntax, e.g.
`--env-id tests.fake_envs:Counter-v0` (gymnasium imports this module, which registers them)."""
import gymnasium as gym
import numpy as np


TIME_LIMIT = 6  # every env here is registered with this many steps per episode at most


class CounterEnv(gym.Env):
    """obs = [t, will_terminate]: t counts steps since reset. Half the episodes (a coin at reset) terminate when
    t reaches terminal_step = 4; the others run into the TIME_LIMIT of 6 steps and are truncated. Reward 1 per step."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    terminal_step = 4

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.will_terminate = 0, float(self.np_random.random() < 0.5)
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        terminated = bool(self.will_terminate and self.t == self.terminal_step)
        return self._obs(), self.reward(), terminated, False, {}

    def reward(self):
        return 1.0

    def _obs(self):
        return np.array([self.t, self.will_terminate], dtype=np.float32)


class NaNRewardEnv(CounterEnv):
    """Rewards NaN: the TD loss goes non-finite at the first update."""

    def reward(self):
        return float("nan")


class LateNaNRewardEnv(CounterEnv):
    """Rewards turn NaN from the env's 31st step on (counted over its life, across episodes): a run learns for a
    while, then its losses go non-finite."""

    def __init__(self):
        self.steps_lived = 0

    def reward(self):
        self.steps_lived += 1
        return 1.0 if self.steps_lived <= 30 else float("nan")


class UnboundedActionEnv(CounterEnv):
    action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)


class ImageObservationEnv(CounterEnv):
    observation_space = gym.spaces.Box(0, 255, (4, 4, 3), np.uint8)


gym.register("Counter-v0", entry_point=CounterEnv, max_episode_steps=TIME_LIMIT)
gym.register("NaNReward-v0", entry_point=NaNRewardEnv, max_episode_steps=TIME_LIMIT)
gym.register("LateNaNReward-v0", entry_point=LateNaNRewardEnv, max_episode_steps=TIME_LIMIT)
gym.register("UnboundedAction-v0", entry_point=UnboundedActionEnv, max_episode_steps=TIME_LIMIT)
gym.register("ImageObservation-v0", entry_point=ImageObservationEnv, max_episode_steps=TIME_LIMIT)
