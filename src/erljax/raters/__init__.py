"""Raters: who labels segments. All share the `Rater` interface in base.py."""

from erljax.raters.base import Queries, Rater, Ratings
from erljax.raters.scripted import ScriptedRater

__all__ = ["Queries", "Rater", "Ratings", "ScriptedRater"]
