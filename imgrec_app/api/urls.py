"""API URLs; mount with ``path("api/imgrec/", include("imgrec_app.api.urls"))``."""

from django.urls import path

from imgrec_app.api import tracking_views, views
from imgrec_app.api.schema import ImgrecSchemaView

app_name = "imgrec_api"

urlpatterns = [
    path("products/<str:product_id>/images/", views.ProductImagesView.as_view(), name="product_images"),
    path("products/<str:product_id>/similar/", views.SimilarProductsView.as_view(), name="similar"),
    path("products/<str:product_id>/bought-together/", views.BoughtTogetherView.as_view(), name="bought_together"),
    path("recommendations/", views.RecommendationsView.as_view(), name="recommendations"),
    path("events/", views.EventView.as_view(), name="events"),
    path("history/", views.HistoryView.as_view(), name="history"),
    path("controls/", views.ControlsView.as_view(), name="controls"),
    path("controls/not-interested/", views.NotInterestedView.as_view(), name="not_interested"),
    path("controls/pause/", views.PauseView.as_view(), name="pause"),
    path("tracking/seen/", tracking_views.SeenView.as_view(), name="seen"),
    path("experiments/", tracking_views.ExperimentsView.as_view(), name="experiments"),
    path("search/", views.SearchView.as_view(), name="search"),
    path("status/", views.StatusView.as_view(), name="status"),
    path("reindex/", views.ReindexView.as_view(), name="reindex"),
    path("schema/", ImgrecSchemaView.as_view(), name="schema"),
]
