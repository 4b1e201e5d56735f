"""The shop's AppConfig: connects its signal receivers, as Django recommends, in ``ready()``."""

from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "tests.integration.oscar.shop"
    label = "oscar_shop"

    def ready(self) -> None:
        from tests.integration.oscar.shop import receivers  # noqa: F401  (connects them)
