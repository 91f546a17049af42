"""VLM answer parsing, prompt templates, PNG encoding and retry helpers
(raters/parse.py, prompts.py, images.py, cache keys, http.py helpers).
No network."""

import email.utils

import numpy as np
import pytest

from erljax.raters import cache as cache_lib
from erljax.raters import failures
from erljax.raters import images as images_lib
from erljax.raters import parse
from erljax.raters import prompts
from erljax.raters.base import CLASS_NAMES
from erljax.raters.images import encode_png, image_mime

N4 = CLASS_NAMES[4]  # Very Bad, Bad, Good, Very Good
N3 = CLASS_NAMES[3]  # Bad, Average, Good


@pytest.mark.parametrize(
  "text,want",
  [
    ("Good", 2),
    ("good", 2),
    ("  **Very Good**.", 3),
    ("Very Bad", 0),
    ("Bad", 1),
    ("I would rate this image as: Very bad", 0),
    ("Rating: BAD", 1),
    ('"Very Good"', 3),
    ('{"rating": "Good"}', 2),
    ('{"answer": "Very Bad"}', 0),
    ('```json\n{"Rating": "Bad"}\n```', 1),
    ('{"result": {"answer": "Very Good"}}', 3),
    ('["Bad"]', 1),
    ("The tip is on the target.\nRating: Good", 2),
    ("I would rate this image as **Very Good**.", 3),
    ("The arm is far away. The rating is: bad", 1),
    ("Final answer: Good!", 2),
  ],
)
def test_rating_names_one_class(text, want):
  assert parse.parse_rating(text, N4) == want


@pytest.mark.parametrize(
  "text",
  [
    "",
    "   ",
    None,
    "not good",
    "The arm is not bad",
    "It isn't good",
    "Good or Bad, hard to say",
    "Very Good, not Very Bad",
    "somewhere between bad and very bad",
    "excellent",
    "2",
    "3",
    '{"rating": 2}',
    '{"foo": 1, "bar": 2}',
    '{"rating": null}',
    '{"rating": true}',
    "goodness",
    "badly done",
    "{not json",
    # The class must be the reply's final answer, not a word in a sentence.
    "Good luck!",
    "I'm sorry, I can't determine the rating from this image. Good luck!",
    "Good. The arm still has to move much closer.",
    "Rating: Good\nThough it could also be read otherwise.",
    "between Bad and Very Bad",
    "It is Good or Bad",
    "The arm looks good overall",
  ],
)
def test_rating_unclear_answers_are_none(text):
  assert parse.parse_rating(text, N4) is None


def test_rating_three_classes_and_longest_match():
  assert parse.parse_rating("Average", N3) == 1
  assert parse.parse_rating("above Average overall", N3) is None
  # "Very Good" is not a class for n=3: it is not read as "Good".
  assert parse.parse_rating("very good", N3) is None
  assert parse.parse_rating("Bad", CLASS_NAMES[2]) == 0


@pytest.mark.parametrize(
  "text",
  [
    "I'm sorry, I can't determine the rating from this image. Good luck!",
    "I’m sorry, but I cannot help with that.",
    "Sorry, I can't see the image.",
    "I cannot assess this image.",
    "I am unable to view images.",
    "  **I apologize**, but I can't rate this.",
    "As an AI, I cannot judge images.",
    "Unfortunately, I can't tell from this picture.",
  ],
)
def test_refusals_are_recognised(text):
  assert parse.is_refusal(text)


@pytest.mark.parametrize(
  "text",
  [
    "The image shows the arm far from the target. I cannot see it touch.",
    "Good",
    '{"answer": "Bad"}',
    "Sorry state of the arm: far from the target.\nRating: Bad",
    "",
  ],
)
def test_analyses_and_answers_are_not_refusals(text):
  assert not parse.is_refusal(text)


@pytest.mark.parametrize(
  "text,want",
  [
    ("0", 0),
    ("1", 1),
    (" 1\n", 1),
    ("Image 2 is closer.\n1", 1),
    ("Answer: 0", 0),
    ("**1**", 1),
    ('{"answer": "0"}', 0),
    ('{"preference": 1}', 1),
    ("1.", 1),
  ],
)
def test_preference_answers(text, want):
  assert parse.parse_preference(text) == want


@pytest.mark.parametrize(
  "text",
  [
    "-1",
    "Unsure",
    "no difference",
    "",
    None,
    "Image 1 is better",
    "0 or 1",
    "2",
    '{"answer": -1}',
    '{"answer": "tie"}',
    "1\nunsure",
  ],
)
def test_preference_unclear_or_tie_is_none(text):
  assert parse.parse_preference(text) is None


def test_default_templates_render_with_images_in_place():
  p = prompts.Prompts()
  parts = prompts.render(
    p.analysis,
    instruction="open the drawer",
    subject="a cart-pole system",
    classes="Bad, Good",
  )
  # The reference sends [image, prompt]: the image first.
  assert parts == [
    0,
    (
      "You will be presented an image of a cart-pole "
      "system performing the task [open the drawer]. "
      "Please focus on the target object in the task and "
      "carefully analyze the image in term of "
      "**completing** the task."
    ),
  ]
  single = prompts.render(
    p.single, instruction="go", subject="a walker", classes="Bad, Good"
  )
  assert single[0] == 0 and single[1].startswith(
    "You will be presented an image of a walker performing the task [go]"
  )
  second = prompts.render(
    p.rating,
    instruction="open the drawer",
    subject="a cart-pole system",
    classes="Bad, Average, Good",
    analysis="A {x}",
  )
  assert second == [
    (
      "\nA {x}\nFrom the above analyses, based on this "
      "rating category: [Bad, Average, Good], how would you "
      "rate this image in terms of **completing** task "
      "[open the drawer]?"
    )
  ]
  pair = prompts.render(
    p.pref_analysis, instruction="go", subject="a robot arm"
  )
  assert [x for x in pair if isinstance(x, int)] == [0, 1]
  assert pair[0] == (
    "Consider the following two images of a robot arm:\nImage 1:\n"
  )
  assert "The goal is go." in prompts.text_of(pair)


@pytest.mark.parametrize("name", prompts.TEMPLATE_NAMES)
def test_every_template_may_name_the_subject(name):
  default = getattr(prompts.Prompts(), name)
  prompts.check_template(name, "{subject} " + default)


@pytest.mark.parametrize(
  "name,template,match",
  [
    ("analysis", "rate it [{instruction}]", "needs field {image}"),
    ("analysis", "{image} {image}", "exactly once"),
    ("rating", "{image} {analysis}", "unknown fields"),
    ("pref_answer", "which? {classes}", "unknown fields"),
    ("single", "{image} {instruction!r}", "format spec"),
    ("nope", "x", "unknown prompt template"),
  ],
)
def test_bad_templates_are_rejected(name, template, match):
  with pytest.raises(ValueError, match=match):
    prompts.check_template(name, template)


def test_prompt_overrides_keep_defaults_for_empty_entries():
  p = prompts.Prompts.from_overrides(
    {"rating": "{analysis} ok?", "analysis": ""}
  )
  assert p.rating == "{analysis} ok?"
  assert p.analysis == prompts.RATING_ANALYSIS
  with pytest.raises(ValueError, match="unknown prompt templates"):
    prompts.Prompts.from_overrides({"ratings": "x"})


def test_png_round_trip():
  frame = np.random.default_rng(0).integers(0, 256, (5, 7, 3), np.uint8)
  data = encode_png(frame)
  assert image_mime(data) == "image/png"
  np.testing.assert_array_equal(images_lib.decode(data), frame)


def test_cache_key_is_one_for_two_zlib_levels():
  """Two compression levels: different PNG bytes, the same decoded pixels
  and so the same reply-cache key (the key must not depend on the zlib
  build that encoded the frame)."""
  frame = np.random.default_rng(1).integers(0, 256, (16, 24, 3), np.uint8)
  fast, small = encode_png(frame, 1), encode_png(frame, 9)
  assert fast != small
  np.testing.assert_array_equal(images_lib.decode(fast), frame)
  np.testing.assert_array_equal(images_lib.decode(small), frame)
  digests = {
    images_lib.from_bytes(fast).digest,
    images_lib.from_bytes(small).digest,
    images_lib.from_frame(frame).digest,
  }
  assert len(digests) == 1
  material = {"model": "m", "values": {"instruction": "x"}}
  assert cache_lib.cache_key(material, list(digests)) == cache_lib.cache_key(
    material, [images_lib.pixel_digest(frame.copy())]
  )


def test_pixel_digest_names_shape_and_dtype():
  """The same bytes under another shape or dtype are other pixels."""
  x = np.arange(24, dtype=np.uint8)
  d = {
    images_lib.pixel_digest(x.reshape(2, 4, 3)),
    images_lib.pixel_digest(x.reshape(4, 2, 3)),
    images_lib.pixel_digest(x.view(np.int8).reshape(2, 4, 3)),
  }
  assert len(d) == 3
  # Not C-contiguous in memory: the digest is of the values in C order.
  y = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
  assert images_lib.pixel_digest(
    np.asfortranarray(y)
  ) == images_lib.pixel_digest(y)


def test_png_rejects_bad_frames():
  with pytest.raises(ValueError, match="uint8"):
    encode_png(np.zeros((4, 4, 3), np.float32))
  with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
    encode_png(np.zeros((4, 4), np.uint8))
  with pytest.raises(ValueError, match="neither PNG nor JPEG"):
    image_mime(b"GIF89a....")
  with pytest.raises(ValueError, match="do not decode"):
    images_lib.from_bytes(b"\x89PNG\r\n\x1a\ntruncated")
  assert image_mime(b"\xff\xd8\xff\xe0rest") == "image/jpeg"


def test_retry_after_seconds_and_http_date():
  assert failures.parse_retry_after("7") == 7.0
  assert failures.parse_retry_after(" 1.5 ") == 1.5
  assert failures.parse_retry_after("-3") == 0.0
  assert failures.parse_retry_after(None) is None
  assert failures.parse_retry_after("soon") is None
  now = 1_700_000_000.0
  date = email.utils.formatdate(now + 42, usegmt=True)
  assert failures.parse_retry_after(date, now=now) == pytest.approx(42.0)
  past = email.utils.formatdate(now - 10, usegmt=True)
  assert failures.parse_retry_after(past, now=now) == 0.0


def _gemini_error(quota_id, delay="36s"):
  return {
    "error": {
      "code": 429,
      "status": "RESOURCE_EXHAUSTED",
      "message": "quota",
      "details": [
        {
          "@type": "type.googleapis.com/google.rpc.QuotaFailure",
          "violations": [
            {
              "quotaMetric": "generativelanguage."
              "googleapis.com/generate_content_"
              "free_tier_requests",
              "quotaId": quota_id,
            }
          ],
        },
        {
          "@type": "type.googleapis.com/google.rpc.RetryInfo",
          "retryDelay": delay,
        },
      ],
    }
  }


def test_gemini_error_details():
  day = _gemini_error("GenerateRequestsPerDayPerProjectPerModel-FreeTier")
  minute = _gemini_error(
    "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "1.5s"
  )
  assert failures.daily_quota_exhausted(day)
  assert failures.daily_quota_exhausted([day])  # some proxies wrap in a list
  assert not failures.daily_quota_exhausted(minute)
  assert not failures.daily_quota_exhausted({"error": {"status": "INTERNAL"}})
  assert not failures.daily_quota_exhausted(None)
  assert failures.retry_delay(day) == 36.0
  assert failures.retry_delay(minute) == 1.5
  assert failures.retry_delay({"error": {"details": "x"}}) is None
