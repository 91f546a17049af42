"""Citations of docs/method.md in the code lead to a section that exists."""

import os
import re

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
_CITING = ("src", "tests", "experiments", "benchmarks", "examples", "docs")


def _files(*suffixes):
  """Paths of the files under _CITING ending in suffixes, but this one."""
  for top in _CITING:
    for root, _, files in os.walk(os.path.join(_ROOT, top)):
      for name in files:
        path = os.path.join(root, name)
        if name.endswith(suffixes) and name != os.path.basename(__file__):
          yield path


def _slug(heading: str) -> str:
  """GitHub's anchor of a Markdown heading."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_method_anchor_cited_exists():
  with open(os.path.join(_ROOT, "docs", "method.md")) as f:
    method = f.read()
  anchors = {_slug(h) for h in re.findall(r"^#+ (.*)$", method, re.M)}
  cited = {}
  for path in _files(".py", ".md", ".sh"):
    with open(path, encoding="utf-8") as f:
      text = f.read()
    # "docs/method.md#a", "docs/method.md: #a, #b" and "#a and #b" after a
    # citation, up to the end of the sentence (or of the next line).
    for m in re.finditer(r"method\.md[^.\n]*(?:\n[^.\n]*)?", text):
      for anchor in re.findall(r"#([a-z][a-z0-9-]*)", m.group(0)):
        cited.setdefault(anchor, path)
    if path.endswith("method.md"):  # its own links, [text](#anchor)
      for anchor in re.findall(r"\]\(#([a-z0-9-]+)\)", text):
        cited.setdefault(anchor, path)
  assert cited, "no citation of docs/method.md found"
  missing = {a: p for a, p in cited.items() if a not in anchors}
  assert not missing, f"anchors cited but not in docs/method.md: {missing}"


def test_no_citation_of_notes_outside_the_repository():
  for path in _files(".py", ".md"):
    with open(path, encoding="utf-8") as f:
      assert "method notes" not in f.read().lower(), path
