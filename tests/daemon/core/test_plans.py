"""The plan family of a Heroku Postgres add-on, from its plan name, as a table."""

from __future__ import annotations

import pytest

from daemon.core.plans import offers_continuous_protection, offers_pg_backups, plan_family


@pytest.mark.parametrize(("plan", "family"), [
    ("heroku-postgresql:essential-0", "essential"),
    ("heroku-postgresql:essential-1", "essential"),
    ("heroku-postgresql:essential-2", "essential"),
    ("heroku-postgresql:mini", "essential"),
    ("heroku-postgresql:basic", "essential"),
    ("heroku-postgresql:hobby-dev", "essential"),
    ("heroku-postgresql:hobby-basic", "essential"),
    ("heroku-postgresql:dev", "essential"),
    ("heroku-postgresql:standard-0", "classic"),
    ("heroku-postgresql:premium-4", "classic"),
    ("heroku-postgresql:private-7", "classic"),
    ("heroku-postgresql:shield-9", "classic"),
    ("heroku-postgresql:advanced", "advanced"),
    ("heroku-postgresql:advanced-private", "advanced"),
    ("heroku-postgresql:advanced-shield", "advanced"),
    ("heroku-postgresql:performance", "advanced"),
    ("standard-0", "classic"),
    ("Standard 0", "classic"),
    ("Essential 0", "essential"),
    ("  HEROKU-POSTGRESQL:ADVANCED  ", "advanced"),
    ("heroku-redis:mini", "unknown"),
    ("heroku-postgresql:", "unknown"),
    ("heroku-postgresql:crane", "unknown"),
    ("", "unknown"),
])
def test_plan_family_from_the_plan_name(plan: str, family: str) -> None:
    assert plan_family(plan) == family


@pytest.mark.parametrize(("family", "backups", "continuous"), [
    ("essential", True, False),
    ("classic", True, True),
    ("advanced", False, True),
    ("unknown", True, False),
])
def test_what_each_family_offers(family: str, backups: bool, continuous: bool) -> None:
    assert offers_pg_backups(family) is backups
    assert offers_continuous_protection(family) is continuous
