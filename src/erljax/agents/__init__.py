"""The RL agents as pure functions: networks, SAC, IQL, one gradient
step, the replay buffer, the k-NN intrinsic reward.
"""
