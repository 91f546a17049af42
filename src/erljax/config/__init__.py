"""Defaults and start-up checks of every config key (`defaults.default()`,
`validation.validate`, `checks.ConfigError`).
"""
