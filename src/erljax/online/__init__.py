"""Online runs: the compiled program (trainer), the feedback sessions,
the host run loop, a run's trained policy.
"""
