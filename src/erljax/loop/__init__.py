"""The run loop online and offline runs share: checkpoints and resume,
records, stop signals and the evaluation cadence; each mode supplies its
step (erljax.online.runner, erljax.offline.run).
"""
