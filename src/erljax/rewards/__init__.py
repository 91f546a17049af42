"""The reward learned from ratings: the rating loss, the reward ensembles,
the rating store and query sampler, the learner, the reward SAC learns from.
"""
