"""Tasks and the vectorized env: the task registry, VecEnv, MetaWorld's
Sawyer tasks, whole recorded episodes and the evaluator.
"""
