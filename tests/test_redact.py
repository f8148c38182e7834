"""Secrets never reach logs, metrics or messages: URL and conninfo passwords, and registered secrets."""

from __future__ import annotations

import pytest

from daemon.redact import MASK, Redactor, redact_url, url_password


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
