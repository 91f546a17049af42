"""erljax: ERL-VLM (Luu et al., ICML 2025) in JAX.

Reinforcement learning whose reward is learned from absolute ratings a
vision-language model gives to rendered frames. The modules are used one by
one (`from erljax import runner`); this file only makes erljax a regular
package, so that a wheel ships it.
"""
