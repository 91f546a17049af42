"""SAC on an erljax task in one file: the file to copy to start a fork.

PureJaxRL's shape: `make_train(config)` builds the environments and the
agent and returns `train(rng)`, the whole run as one pure function, so

  metrics = jax.jit(jax.vmap(make_train(config)))(jax.random.split(key, S))

trains S seeds at once as one compiled program. No feedback, reward learning
or checkpoints. The algorithm is here, between the `ALGO LOGIC` markers:
SAC's three losses and its one-step update (`make_update`), which compute
what erljax.agents.sac.SAC.update computes, bit for bit (tests/test_example.py
holds them to it), so a fork that changes the update edits this file. The
rest is erljax's: the networks, initial state and action sampling
(erljax.agents.sac.SAC), envs.make_vec_env, the replay buffer and the evaluator
(rollout.evaluate), put together in the order a reader follows:

  1. prefill: `seed_steps` env steps of uniform random actions;
  2. learn: C = `num_chunks` chunks of `eval_every` env steps; each vectorized
     step (N = num_envs transitions) is followed by `updates_per_step` SAC
     updates on replay batches, and each chunk ends with a deterministic
     evaluation.

Shapes (S seeds, C chunks, N envs, O observation, A action, B batch):
the env state holds obs [N, O], actions are [N, A] in (-1, 1), replay
leaves are [capacity, ...] and batches [B, ...]. `train(rng)` returns a dict
of [C] arrays (eval_return, train_return, critic_loss, alpha, env_steps);
under vmap they are [S, C]. train_return is NaN for a chunk in which no
episode ended.

  python examples/sac_minimal.py   # reacher, 3 seeds, prints the curve
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from erljax.envs import vec_env as envs
from erljax.agents import replay
from erljax.envs import rollout
from erljax.agents import sac
from erljax.envs import tasks


@dataclasses.dataclass(frozen=True)
class Config:
  task: str = "reacher"  # a registered task (tasks.task_names())
  episode_length: int = 200
  num_envs: int = 8  # N parallel training envs
  num_eval_envs: int = 8  # one deterministic episode in each
  seed_steps: int = 1_000  # random-action prefill (env steps)
  eval_every: int = 5_000  # env steps per chunk
  num_chunks: int = 8  # C chunks after the prefill
  batch_size: int = 256
  updates_per_step: int = 4  # SAC updates per vectorized env step
  hidden_sizes: Sequence[int] = (256, 256)
  lr: float = 3e-4

  @property
  def total_steps(self) -> int:
    return self.seed_steps + self.num_chunks * self.eval_every

  def validate(self) -> None:
    if self.task not in tasks.task_names():
      raise ValueError(
        f"task={self.task!r}: not registered; choose from {tasks.task_names()}"
      )
    for name in ("seed_steps", "eval_every"):
      if getattr(self, name) % self.num_envs:
        raise ValueError(
          f"{name}={getattr(self, name)} must be a multiple "
          f"of num_envs={self.num_envs}"
        )
    if self.num_chunks < 1:
      raise ValueError(f"num_chunks={self.num_chunks} must be >= 1")


# ALGO LOGIC: SAC's losses and update. ------------------------------------
Update = Callable[
  [sac.SACState, replay.Transition, jax.Array],
  Tuple[sac.SACState, Dict[str, jax.Array]],
]


def make_update(agent: sac.SAC) -> Update:
  """update(state, batch [B, ...], key) -> (state, {critic_loss, alpha}):
  one SAC step. The critic steps first, then the actor on the new critic,
  then the temperature; the target critic follows by Polyak averaging every
  target_update_period updates."""
  h = agent.hyper
  critic_opt, actor_opt, alpha_opt = (
    optax.adam(lr) for lr in (h.critic_lr, h.actor_lr, h.alpha_lr)
  )

  def critic_loss(critic_params, state, batch, key):
    """0.5 sum_i mean_b (Q_i(s, a) - y)^2, the target
    y = r + gamma d (min_i Q'_i(s', a') - alpha log pi(a'|s')), a' ~ pi."""
    next_action, next_logp = agent.sample_action(
      state.actor_params, batch.next_obs, key
    )
    next_q = agent.critic.apply(
      state.target_critic_params, batch.next_obs, next_action
    )
    next_v = jnp.min(next_q, axis=0) - jnp.exp(state.log_alpha) * next_logp
    target = batch.reward + h.discount * batch.discount * next_v
    target = jax.lax.stop_gradient(target)
    q = agent.critic.apply(critic_params, batch.obs, batch.action)  # [2, B]
    return 0.5 * jnp.sum(jnp.mean((q - target[None]) ** 2, axis=-1)), ()

  def actor_loss(actor_params, critic_params, log_alpha, obs, key):
    """mean_b (alpha log pi(a|s) - min_i Q_i(s, a)), a ~ pi(.|s)."""
    action, logp = agent.sample_action(actor_params, obs, key)
    q = jnp.min(agent.critic.apply(critic_params, obs, action), axis=0)
    alpha = jax.lax.stop_gradient(jnp.exp(log_alpha))
    return jnp.mean(alpha * logp - q), logp

  def alpha_loss(log_alpha, logp):
    """mean_b alpha (-log pi(a|s) - target_entropy), log pi held fixed."""
    logp = jax.lax.stop_gradient(logp)
    return jnp.mean(jnp.exp(log_alpha) * (-logp - agent.target_entropy)), ()

  def step(loss_fn, optimizer, params, opt_state, *args):
    """One Adam step of loss_fn in params: (params, opt_state, loss, aux)."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, aux), grads = grad_fn(params, *args)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, aux

  def update(state, batch, key):
    k_critic, k_actor = jax.random.split(key)
    critic, critic_state, critic_l, _ = step(
      critic_loss,
      critic_opt,
      state.critic_params,
      state.critic_opt,
      state,
      batch,
      k_critic,
    )
    actor, actor_state, _, logp = step(
      actor_loss,
      actor_opt,
      state.actor_params,
      state.actor_opt,
      critic,
      state.log_alpha,
      batch.obs,
      k_actor,
    )
    log_alpha, alpha_state, _, _ = step(
      alpha_loss, alpha_opt, state.log_alpha, state.alpha_opt, logp
    )
    steps = state.steps + 1
    polyak = optax.incremental_update(critic, state.target_critic_params, h.tau)
    target = jax.tree_util.tree_map(
      lambda p, t: jnp.where(steps % h.target_update_period == 0, p, t),
      polyak,
      state.target_critic_params,
    )
    new_state = sac.SACState(
      actor_params=actor,
      critic_params=critic,
      target_critic_params=target,
      log_alpha=log_alpha,
      actor_opt=actor_state,
      critic_opt=critic_state,
      alpha_opt=alpha_state,
      steps=steps,
    )
    return new_state, {"critic_loss": critic_l, "alpha": jnp.exp(log_alpha)}

  return update


# ALGO LOGIC ends. ---------------------------------------------------------


def make_train(config: Config) -> Callable[[jax.Array], Dict[str, jax.Array]]:
  """Builds the envs and the agent; returns train(rng) -> metrics [C]."""
  config.validate()
  env = envs.make_vec_env(config.task, config.num_envs, config.episode_length)
  eval_env = envs.make_vec_env(
    config.task, config.num_eval_envs, config.episode_length
  )
  n, obs_size, act_size = env.num_envs, env.observation_size, env.action_size
  agent = sac.SAC(
    obs_size,
    act_size,
    sac.SACHyper(
      hidden_sizes=tuple(config.hidden_sizes),
      actor_lr=config.lr,
      critic_lr=config.lr,
    ),
  )
  update = make_update(agent)

  def collect(env_state, buffer, action):
    """One vectorized step with action [N, A]; its N transitions stored."""
    next_state, out = env.step(env_state, action)
    buffer = replay.add(
      buffer,
      replay.Transition(
        obs=env_state.obs,
        action=action,
        reward=out.reward,
        true_reward=out.reward,
        discount=1.0 - out.terminal.astype(jnp.float32),
        next_obs=out.next_obs,
      ),
    )
    done = out.terminal | out.truncated
    return next_state, buffer, (out.episode_return, done)

  def evaluate(actor_params, key):
    """Mean return of one deterministic episode per eval env: []."""
    policy = lambda obs: agent.deterministic_action(actor_params, obs)
    return rollout.evaluate(eval_env, policy, key)["eval_return"]

  def train(rng: jax.Array) -> Dict[str, jax.Array]:
    k_agent, k_env, k_prefill, k_learn = jax.random.split(rng, 4)
    example = replay.Transition.zeros(obs_size, act_size)
    buffer = replay.init(config.total_steps, example)  # never overwritten
    env_state = env.reset(k_env)

    # 1. Prefill the buffer with uniform random actions.
    def random_step(carry, key):
      env_state, buffer = carry
      action = jax.random.uniform(key, (n, act_size), minval=-1.0, maxval=1.0)
      env_state, buffer, _ = collect(env_state, buffer, action)
      return (env_state, buffer), None

    (env_state, buffer), _ = jax.lax.scan(
      random_step,
      (env_state, buffer),
      jax.random.split(k_prefill, config.seed_steps // n),
    )

    # 2. Learn: act with the policy, store, update; evaluate every chunk.
    def learn_step(carry, key):
      agent_state, env_state, buffer = carry
      k_act, k_upd = jax.random.split(key)
      action, _ = agent.sample_action(
        agent_state.actor_params, env_state.obs, k_act
      )
      env_state, buffer, (returns, done) = collect(env_state, buffer, action)

      def replay_update(agent_state, key):
        k_sample, k_update = jax.random.split(key)
        batch = replay.sample(buffer, k_sample, config.batch_size)
        return update(agent_state, batch, k_update)

      agent_state, metrics = jax.lax.scan(
        replay_update,
        agent_state,
        jax.random.split(k_upd, config.updates_per_step),
      )
      return (agent_state, env_state, buffer), (returns, done, metrics)

    def chunk(carry, xs):
      index, key = xs
      k_steps, k_eval = jax.random.split(key)
      carry, (returns, done, m) = jax.lax.scan(
        learn_step, carry, jax.random.split(k_steps, config.eval_every // n)
      )
      episodes = jnp.sum(done)
      return carry, {
        "env_steps": config.seed_steps + (index + 1) * config.eval_every,
        "eval_return": evaluate(carry[0].actor_params, k_eval),
        "train_return": jnp.where(
          episodes > 0, jnp.sum(returns) / jnp.maximum(episodes, 1), jnp.nan
        ),
        "critic_loss": jnp.mean(m["critic_loss"]),
        "alpha": jnp.mean(m["alpha"]),
      }

    carry = (agent.init(k_agent), env_state, buffer)
    _, metrics = jax.lax.scan(
      chunk,
      carry,
      (
        jnp.arange(config.num_chunks),
        jax.random.split(k_learn, config.num_chunks),
      ),
    )
    return metrics

  return train


def main(config: Config = Config(), num_seeds: int = 3) -> None:
  rngs = jax.random.split(jax.random.PRNGKey(0), num_seeds)
  train = jax.jit(jax.vmap(make_train(config)))
  t0 = time.perf_counter()
  compiled = train.lower(rngs).compile()
  t1 = time.perf_counter()
  metrics = jax.device_get(compiled(rngs))
  t2 = time.perf_counter()
  print(
    f"{config.task}: {num_seeds} seeds, {config.total_steps} env steps, "
    f"compile {t1 - t0:.0f}s, train {t2 - t1:.0f}s"
  )
  print(
    f"{'env steps':>9}  {'eval return':>11}  {'std':>6}  "
    f"{'train return':>12}  eval return per seed"
  )
  ret, train_ret = metrics["eval_return"], metrics["train_return"]
  for c, steps in enumerate(metrics["env_steps"][0]):
    print(
      f"{steps:>9d}  {ret[:, c].mean():>11.2f}  {ret[:, c].std():>6.2f}  "
      f"{np.nanmean(train_ret[:, c]):>12.2f}  "
      f"{np.round(ret[:, c].astype(float), 2).tolist()}"
    )


if __name__ == "__main__":
  main()
