# The demo shop's image: web (gunicorn), the Celery worker and Celery beat all run from it.
#
# torch is large: requirements.txt pins the default PyPI wheels, which bundle CUDA (about 5 GB
# installed) so the worker can use a GPU.  For a CPU-only image (about 1 GB) build with
#   docker compose build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# and run the worker with IMGREC_DEVICE=cpu (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The pinned dependencies get their own layer, rebuilt only when requirements.txt changes (torch
# makes it the slow one).  Its "-e ." line needs the source, so that one is installed below.
# gunicorn is the image's WSGI server only: development uses runserver, so it is not a requirement.
ARG TORCH_INDEX_URL=
COPY requirements.txt ./
RUN grep -v '^-e ' requirements.txt > /tmp/requirements-pinned.txt \
 && pip install ${TORCH_INDEX_URL:+--extra-index-url $TORCH_INDEX_URL} \
        -r /tmp/requirements-pinned.txt gunicorn==27.0.1 \
 && rm /tmp/requirements-pinned.txt

COPY . .
# Everything pinned is already installed: this adds imgrec_app itself (editable, as in development).
RUN pip install -r requirements.txt

# /data holds what the containers write: collected static files and (a volume) uploaded media.
# collectstatic only imports the settings: the dummy DATABASE_URL keeps them from starting the
# embedded development PostgreSQL, and nothing connects to it.
ENV IMGREC_VAR_DIR=/data \
    DJANGO_MEDIA_ROOT=/data/media \
    DJANGO_SETTINGS_MODULE=shop_demo.settings
RUN useradd --create-home --uid 1000 app \
 && mkdir -p /data/media /data/static \
 && DATABASE_URL=postgres://build@localhost:5432/build python manage.py collectstatic --noinput -v 0 \
 && chown -R app:app /data

USER app
EXPOSE 8000
CMD ["gunicorn", "shop_demo.wsgi", "-b", "0.0.0.0:8000"]
