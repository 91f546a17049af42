"""Offline runs: episode datasets, their ratings and learned reward, IQL.
`python -m erljax.offline` runs __main__.py.
"""
