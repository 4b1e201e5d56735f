from django.views.generic import DetailView

from imgrec_app.views import RecordViewMixin
from tests.integration.uuidshop.shop.models import Product


class ProductDetail(RecordViewMixin, DetailView):
    model = Product
    template_name = "shop/product_detail.html"
