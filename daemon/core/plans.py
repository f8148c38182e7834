"""Heroku Postgres plan families: what protects a database depends on the family of its plan.

  essential  essential-0/1/2, legacy mini, basic, hobby-*, dev: pg:backups yes; no continuous protection
  classic    standard-*, premium-*, private-*, shield-*: pg:backups yes; continuous protection offered (pg:info
             shows the rollback window's earliest time only)
  advanced   advanced*, performance* (next generation): pg:backups not established; continuous protection and
             the rollback window's earliest AND latest time from `/data/postgres/v1/{addon}/info`
  unknown    anything else (another add-on service, an unreadable name): nothing assumed beyond pg:backups

The prefixes follow the Heroku CLI's own tests of a plan (heroku/heroku-cli-util `src/utils/addons/helpers.ts`:
`isAdvancedDatabase` is /^(advanced|performance)/, `isEssentialDatabase` starts with "essential",
`isLegacyEssentialDatabase` is /^(dev|basic|mini)/); see tests/HEROKU_DOUBLE.md, "Plan families".
"""

from __future__ import annotations

ESSENTIAL = "essential"
CLASSIC = "classic"
ADVANCED = "advanced"
UNKNOWN = "unknown"
FAMILIES = (ESSENTIAL, CLASSIC, ADVANCED, UNKNOWN)

_SERVICE = "heroku-postgresql"
_ESSENTIAL_PREFIXES = ("essential", "mini", "basic", "hobby", "dev")
_CLASSIC_PREFIXES = ("standard", "premium", "private", "shield")
_ADVANCED_PREFIXES = ("advanced", "performance")


def plan_family(plan: str) -> str:
    """The family of a Heroku Postgres plan: `essential`, `classic`, `advanced` or `unknown`.

    `plan` is the add-on's plan name (`heroku-postgresql:standard-0`), a bare level (`standard-0`) or the
    display form `pg:info` shows (`Standard 0`); case and surrounding spaces do not matter. A plan of another
    add-on service (`heroku-redis:mini`) is `unknown`, never guessed from its level."""
    text = plan.strip().lower()
    service, sep, level = text.partition(":")
    if sep and service != _SERVICE:
        return UNKNOWN
    level = (level if sep else text).strip().replace(" ", "-")
    if not level:
        return UNKNOWN
    for family, prefixes in ((ADVANCED, _ADVANCED_PREFIXES), (ESSENTIAL, _ESSENTIAL_PREFIXES),
                             (CLASSIC, _CLASSIC_PREFIXES)):
        if level.startswith(prefixes):
            return family
    return UNKNOWN


def offers_pg_backups(family: str) -> bool:
    """Whether pg:backups (the transfer service: schedules, captures) is known to apply to the family. For
    Advanced it is not established, so the guardian claims no schedule, missed or absent, there."""
    return family != ADVANCED


def offers_continuous_protection(family: str) -> bool:
    """Whether plans of the family offer continuous protection (rollback). Essential plans never do."""
    return family in (CLASSIC, ADVANCED)
