"""The test settings as a host that never configured DRF's schema class (issue 14, point 2)."""

from tests.settings import *  # noqa: F401,F403

REST_FRAMEWORK: dict = {}
