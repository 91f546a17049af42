"""Raters: who labels segments. All share the `Rater` interface in base.py.

`api.make(config.rater, task_name, num_classes, seed)` builds the rater a
config asks for; api.py also names the classes callers use.
"""
