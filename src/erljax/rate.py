"""Ask a VLM to rate images, to check it before a long run.

  python -m erljax.rate --backend=openai --base_url=http://127.0.0.1:8000/v1 \\
      --model=Qwen/Qwen2.5-VL-7B-Instruct --task=reacher IMG.png [IMG2.png ...]
  python -m erljax.rate --backend=gemini --model=gemini-2.5-flash \\
      --task=reacher --prefer A.png B.png

Prints, per image (or pair), the parsed class (or "no answer" and why) and
the raw replies of each stage, then the counters. Images are PNG or JPEG
files, sent as they are; the reply cache keys them on their decoded pixels,
so a PNG of a training frame hits the reply stored for it. Any rater.*
config key can be set with the flags below; the API key comes from the
environment variable --api_key_env (default: the backend's, e.g.
OPENAI_API_KEY, GEMINI_API_KEY).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from erljax import cli_flags
from erljax.config import defaults as config_lib
from erljax.raters import api as raters
from erljax.raters import images as images_lib


def _bool(text: str) -> bool:
  if text.lower() in ("1", "true", "yes"):
    return True
  if text.lower() in ("0", "false", "no"):
    return False
  raise argparse.ArgumentTypeError(f"{text!r} is not a boolean")


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog="python -m erljax.rate", description=__doc__.split("\n\n")[0]
  )
  p.add_argument("images", nargs="+", help="PNG or JPEG files")
  p.add_argument("--backend", required=True, choices=sorted(raters.BACKENDS))
  p.add_argument("--task", default="reacher")
  p.add_argument(
    "--instruction", default=None, help="override the task's instruction"
  )
  p.add_argument(
    "--subject",
    default=None,
    help="override what the task's frames show (e.g. 'a robot arm')",
  )
  p.add_argument(
    "--num_classes", type=int, default=None, help="default: the task's"
  )
  p.add_argument(
    "--prefer",
    action="store_true",
    help="ask for a preference between two images",
  )
  d = config_lib.default().rater
  for key in (
    "base_url",
    "model",
    "rating_model",
    "openai_constraint",
    "cache_dir",
  ):
    p.add_argument(f"--{key}", default=d[key])
  p.add_argument(
    "--api_key_env",
    default=None,
    help="variable holding the API key (default: the backend's); needed "
    "with a --base_url other than the backend's default ('' for none)",
  )
  for key in (
    "timeout",
    "backoff_base",
    "backoff_max",
    "max_wait",
    "temperature",
  ):
    p.add_argument(f"--{key}", type=float, default=d[key])
  for key in ("max_retries", "concurrency", "max_tokens"):
    p.add_argument(f"--{key}", type=int, default=d[key])
  p.add_argument(
    "--rng_seed", type=int, default=0, help="the requests' sampling seed"
  )
  cli_flags.add_alias(p, "--seed", "--rng_seed", type=int)
  for key in ("two_stage", "constrained", "replay_only"):
    p.add_argument(f"--{key}", type=_bool, default=d[key])
  return p


def main(argv: Optional[List[str]] = None) -> int:
  args = parser().parse_args(argv)
  if args.prefer and len(args.images) != 2:
    print("error: --prefer takes exactly two images", file=sys.stderr)
    return 2
  c = config_lib.default()
  c.task = args.task
  c.rater.kind = args.backend
  c.rater.num_classes = args.num_classes
  for key in (
    "base_url",
    "model",
    "rating_model",
    "openai_constraint",
    "cache_dir",
    "api_key_env",
    "timeout",
    "backoff_base",
    "backoff_max",
    "max_wait",
    "temperature",
    "max_retries",
    "concurrency",
    "max_tokens",
    "two_stage",
    "constrained",
    "replay_only",
  ):
    c.rater[key] = getattr(args, key)
  try:
    config_lib.validate(c)
  except config_lib.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  from erljax.envs import tasks  # pylint: disable=g-import-not-at-top (jax)

  num_classes = c.rater.num_classes or tasks.get_task(c.task).num_classes
  rater = raters.make(
    c.rater,
    c.task,
    num_classes,
    args.rng_seed,
    instruction=args.instruction,
    subject=args.subject,
  )
  images = []
  for path in args.images:
    with open(path, "rb") as f:
      data = f.read()
    try:
      images.append(images_lib.from_bytes(data))
    except ValueError as e:
      print(f"error: {path}: {e}", file=sys.stderr)
      return 2
  if args.prefer:
    answers = rater.answer_preferences([(images[0], images[1])])
    names = [" vs ".join(args.images)]

    def show(label):
      return f"image {label + 1} better (answer {label})"
  else:
    answers = rater.answer_ratings(images)
    names = args.images

    def show(label):
      return f"{rater.class_names[label]} (class {label})"

  for name, a in zip(names, answers):
    verdict = (
      show(a.label) if a.label is not None else f"no answer ({a.reason})"
    )
    print(f"{name}: {verdict}{' [cached]' if a.cached else ''}")
    for stage, reply in enumerate(a.replies, 1):
      print(f"  reply {stage}: {reply!r}")
  print(json.dumps(rater.stats(), sort_keys=True))
  return 0 if all(a.label is not None for a in answers) else 1


if __name__ == "__main__":
  sys.exit(main())
