"""App configuration: registers system checks and signal handlers, nothing else."""

from __future__ import annotations

from django.apps import AppConfig


class ImgrecConfig(AppConfig):
    """imgrec's AppConfig; ``ready()`` never raises (problems are reported as system checks)."""

    name = "imgrec_app"
    label = "imgrec_app"
    verbose_name = "Image recommendations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from imgrec_app import checks, checks_services, checks_tracking  # noqa: F401  (registers the checks)
        from imgrec_app.signal_handlers import register_signal_handlers

        register_signal_handlers()
