"""Categories for the navigation bar."""

from shop_demo.catalog.models import Category


def categories(request):
    return {"nav_categories": Category.objects.all()}
