"""Secrets never reach logs, metrics or messages: URL and conninfo passwords, and registered secrets."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from daemon.core.redact import MASK, Redactor, redact_url, shorten, url_password
from tests.support import REPO


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("postgresql://app:s3cret-pw@db.example.com:5432/shop",
                     "postgresql://app:***@db.example.com:5432/shop", id="postgresql"),
        pytest.param("postgres://u:pw1234@h/d", "postgres://u:***@h/d", id="postgres-scheme"),
        pytest.param("postgresql://app:p%40ss%3Aw0rd@db/shop?sslmode=require",
                     "postgresql://app:***@db/shop?sslmode=require", id="percent-encoded"),
        pytest.param("postgresql://:only-pw@db/shop", "postgresql://:***@db/shop", id="no-user"),
        pytest.param("postgresql://app:pa:ss/wd@db/shop", "postgresql://app:***@db/shop", id="colon-and-slash"),
        pytest.param("https://user:tok_abc123@api.example.com/v1", "https://user:***@api.example.com/v1",
                     id="https"),
        pytest.param("s3://AKIAXXX:wJalrXUtn@bucket/key", "s3://AKIAXXX:***@bucket/key", id="s3"),
        pytest.param("host=db port=5432 password=s3cret user=app", "host=db port=5432 password=*** user=app",
                     id="conninfo"),
        pytest.param("host=db password = 'with space' dbname=x", "host=db password = *** dbname=x",
                     id="conninfo-quoted"),
        pytest.param("PASSWORD=Upper1 host=db", "PASSWORD=*** host=db", id="conninfo-uppercase"),
        pytest.param(
            "connect failed: postgresql://a:one1@h1/d then postgresql://b:two2@h2/d",
            "connect failed: postgresql://a:***@h1/d then postgresql://b:***@h2/d", id="two-urls-in-a-message"),
    ],
)
def test_redact_url_masks_passwords(text: str, expected: str) -> None:
    assert redact_url(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://app@db.example.com:5432/shop",
        "postgresql://db.example.com:5432/shop",
        "https://api.example.com/v1/backups",
        "host=db port=5432 user=app",
        "a plain log line about 3 backups",
    ],
)
def test_redact_url_leaves_text_without_password_alone(text: str) -> None:
    assert redact_url(text) == text


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("postgresql://app:s3cret@db/shop", "s3cret"),
        ("postgresql://app:p%40ss%2Fw0rd@db/shop", "p@ss/w0rd"),
        ("postgresql://app@db/shop", None),
        ("postgresql://app:@db/shop", None),
    ],
)
def test_url_password_is_decoded(url: str, password: str | None) -> None:
    assert url_password(url) == password


def test_redactor_masks_a_registered_secret_anywhere() -> None:
    redactor = Redactor()
    redactor.add("tok-5f1e9a")

    assert redactor("Authorization: Bearer tok-5f1e9a failed") == f"Authorization: Bearer {MASK} failed"
    assert redactor("twice tok-5f1e9a and tok-5f1e9a") == f"twice {MASK} and {MASK}"


def test_redactor_masks_both_raw_and_percent_decoded_url_passwords() -> None:
    redactor = Redactor()
    redactor.add_url("postgresql://app:p%40ss%2Fw0rd@db.example.com/shop")

    # a library that decoded the URL echoes the plain password, outside any URL
    assert "p@ss/w0rd" not in redactor("authentication failed: password 'p@ss/w0rd' rejected")
    assert "p%40ss%2Fw0rd" not in redactor("raw form p%40ss%2Fw0rd in a message")
    assert redactor("password 'p@ss/w0rd' rejected") == f"password '{MASK}' rejected"


def test_redactor_also_masks_unregistered_url_passwords() -> None:
    assert Redactor()("dsn postgresql://u:never-registered@h/d") == f"dsn postgresql://u:{MASK}@h/d"


def test_redactor_ignores_secrets_too_short_to_be_told_from_words() -> None:
    redactor = Redactor()
    redactor.add("abc")
    redactor.add("")
    redactor.add(None)
    redactor.add_url("postgresql://u:ab@h/d")

    assert redactor("abc ab backups") == "abc ab backups"


def test_longer_secret_is_masked_whole_when_it_contains_a_shorter_one() -> None:
    redactor = Redactor()
    redactor.add("hunter")
    redactor.add("hunter2-secret")

    assert redactor("pw is hunter2-secret") == f"pw is {MASK}"


def test_redactors_do_not_share_secrets() -> None:
    first, second = Redactor(), Redactor()
    first.add("only-in-first")

    assert second("only-in-first") == "only-in-first"
    assert first("only-in-first") == MASK


def test_registered_secret_with_an_at_sign_is_masked_whole_inside_a_url() -> None:
    redactor = Redactor()
    redactor.add("p@ssword9")

    masked = redactor("could not connect: postgresql://app:p@ssword9@db/shop")

    assert "ssword9" not in masked


# -- linear time on hostile text ---------------------------------------------------------------------------

#: Text shapes that make a backtracking password pattern retry a long run from every start position.
ADVERSARIAL_SHAPES = {
    "letters-and-digits": "abc123XYZ789",
    "scheme-separator-repeated": "a://",
    "scheme-colon-repeated": "x:",
    "conninfo-key-repeated": "password=",
    "unclosed-quoted-conninfo-values": "password='x\\' ",
    "url-heads-without-at": "a://x:",
    "many-real-urls": "s3://k:pw-1234@h ",
}

_TIME_REDACTION = textwrap.dedent("""
    import sys, time
    from daemon.core.redact import REDACTOR, Redactor, url_password
    unit, size = sys.argv[1], int(sys.argv[2])
    text = (unit * (size // len(unit) + 1))[:size] if unit != "LONG-USERINFO" else "postgresql://u:" + "p" * size
    start = time.perf_counter()
    masked = REDACTOR(text)
    url_password(text)
    Redactor().add_url(text)
    print(time.perf_counter() - start, len(masked))
""")


def redaction_seconds(unit: str, size: int, deadline: float = 30.0) -> float:
    """Seconds the process-wide redactor, `url_password` and `add_url` take together on `size` characters of
    `unit` repeated, measured in a child process that is killed at `deadline` (a quadratic scan would take
    minutes: the test must fail, not hang)."""
    try:
        done = subprocess.run([sys.executable, "-c", _TIME_REDACTION, unit, str(size)], capture_output=True,
                              text=True, timeout=deadline, cwd=REPO, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"redacting {size:,} characters of {unit!r} did not finish within {deadline:.0f} s")
    return float(done.stdout.split()[0])


@pytest.mark.parametrize("unit", [*ADVERSARIAL_SHAPES.values(), "LONG-USERINFO"],
                         ids=[*ADVERSARIAL_SHAPES, "long-userinfo-without-at"])
def test_redaction_of_a_megabyte_of_hostile_text_takes_well_under_a_second(unit: str) -> None:
    assert redaction_seconds(unit, 1_000_000) < 1.0


def test_redaction_still_masks_every_url_in_a_long_text() -> None:
    text = "s3://k:pw-1234@h " * 10_000 + "postgresql://u:" + "p" * 100_000

    masked = Redactor()(text)

    assert "pw-1234" not in masked
    assert masked.count(f"s3://k:{MASK}@h") == 10_000
    assert masked.endswith("p" * 100_000)  # a userinfo without "@" is no password: left alone, as before


def test_unclosed_quote_in_a_conninfo_masks_the_bare_value() -> None:
    assert redact_url("password='abc def") == f"password={MASK} def"


# -- shorten: what is echoed back to a person ----------------------------------------------------------------

def test_shorten_keeps_short_text_whole() -> None:
    assert shorten("127.0.0.1:9729", 80) == "127.0.0.1:9729"
    assert shorten("x" * 80, 80) == "x" * 80


def test_shorten_cuts_long_text_and_says_how_long_it_was() -> None:
    short = shorten("a" * 300_000, 80)

    assert short.startswith("a" * 80 + "...")
    assert "300,000 characters" in short
    assert len(short) <= 120
