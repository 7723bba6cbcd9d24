"""The names this package takes from Dagster's private modules, in one place: they may move between
releases (pinned in pyproject.toml); a new release that moves one breaks this import, not a sensor."""

from dagster._core.definitions.freshness import FreshnessState
from dagster._core.storage.tags import RETRY_NUMBER_TAG, WILL_RETRY_TAG
from dagster._time import get_current_timestamp
from dagster._utils.schedules import is_valid_cron_string

__all__ = ["FreshnessState", "RETRY_NUMBER_TAG", "WILL_RETRY_TAG", "get_current_timestamp",
           "is_valid_cron_string"]
