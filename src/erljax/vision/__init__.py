"""Frames: MuJoCo rendering on the host, ray casting in JAX (what the
image reward model reads), rollout GIFs and rated-frame grids.
"""
