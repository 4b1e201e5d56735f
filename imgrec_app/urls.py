"""HTML fragments of the shelves; mount with ``path("imgrec/", include("imgrec_app.urls"))``."""

from django.urls import path

from imgrec_app import views

app_name = "imgrec"

urlpatterns = [
    path("fragments/similar/<str:product_id>/", views.similar_fragment, name="similar_fragment"),
    path(
        "fragments/bought-together/<str:product_id>/",
        views.bought_together_fragment,
        name="bought_together_fragment",
    ),
    path("controls/not-interested/", views.not_interested_control, name="not_interested"),
    path("controls/pause/", views.pause_control, name="pause"),
    path("controls/clear-history/", views.clear_history_control, name="clear_history"),
    path("fragments/for-you/", views.for_you_fragment, name="for_you_fragment"),
    path("tracking/seen/", views.seen_beacon, name="seen"),
]
