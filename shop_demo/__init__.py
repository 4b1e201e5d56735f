"""shop_demo: a small shop that uses imgrec only through its public surface."""

from shop_demo.celery import app as celery_app

__all__ = ("celery_app",)
