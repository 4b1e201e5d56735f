"""imgrec's optional DRF API (``pip install 'django-imgrec[api]'``); mount ``imgrec_app.api.urls``."""
