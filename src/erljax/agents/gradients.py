"""One gradient step: loss -> gradient -> optax update -> new parameters.

The one copy of the pattern every learner in erljax runs (SAC's critic,
actor and temperature, the reward ensemble, IQL's value, actor and critic),
after Brax's `brax/training/gradients.py` (`gradient_update_fn`).
"""

from __future__ import annotations

from typing import Any, Callable, Tuple

import jax
import optax

Params = Any
UpdateFn = Callable[..., Tuple[Any, Params, optax.OptState]]


def gradient_update_fn(
  loss_fn: Callable[..., Any],
  optimizer: optax.GradientTransformation,
  has_aux: bool = False,
) -> UpdateFn:
  """Wraps `loss_fn` into one optimiser step on its first argument.

  Args:
    loss_fn: loss_fn(params, *args) -> loss [] (a scalar), or
      (loss [], aux) with `has_aux`; differentiated in params only.
    optimizer: the optax transformation whose state `update` carries.
    has_aux: whether loss_fn returns (loss, aux).
  Returns:
    update(params, opt_state, *args) -> (value, new_params, new_opt_state),
    where value is what loss_fn returned at params (before the step): the
    loss, or (loss, aux) with `has_aux`. params also go to
    optimizer.update (weight decay needs them; Adam ignores them). Pure;
    jit, vmap and scan it freely.
  """
  value_and_grad = jax.value_and_grad(loss_fn, has_aux=has_aux)

  def update(
    params: Params, opt_state: optax.OptState, *args: Any
  ) -> Tuple[Any, Params, optax.OptState]:
    value, grads = value_and_grad(params, *args)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return value, optax.apply_updates(params, updates), opt_state

  return update
