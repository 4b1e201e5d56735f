"""imgrec: visual similar-products and recommended-for-you shelves for Django shops."""

__version__ = "0.1.0"
