from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "tests.integration.uuidshop.shop"
    label = "shop"
