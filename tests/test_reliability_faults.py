"""Reliability under injected faults (issue 7, cases 16–27): the broker down, deletions and
replacements racing a task, duplicate deliveries, worker processes SIGKILLed, a poison image,
Postgres restarted mid-batch, a model returning garbage, a backbone changing size, broken weights
and CUDA out-of-memory.  "Nothing lost": every image ends ``ready`` or ``failed`` with a reason.

Most cases use the ``imgrec_fault`` backbone (tests/faults/backbones.py): a small real network
whose misbehaviour is chosen by marker pictures, so a test is fast and can put one bad image in
a batch.  Cases 21–23 run a real prefork worker in a subprocess (tests/faults/worker.py) and are
the slow ones (marked ``worker``, about 15–30 s each).
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.test import Client

from imgrec_app.checks_services import check_database
from imgrec_app.ml.encoder import Encoder, clear_encoders
from imgrec_app.ml.preprocess import load_rgb
from imgrec_app.ml.registry import register_backbone
from imgrec_app.models import ImageEmbedding, IndexedImage, ProductVector
from imgrec_app.services import indexing
from imgrec_app.services.models import configured_model
from imgrec_app.tasks import embed_images
from tests.conftest import _purge, make_image_bytes, upload, wait_for
from tests.faults import backbones as fault
from tests.faults.broker import broker_at, free_port, silent_listener
from tests.faults.postgres import restart_postgres
from tests.faults.worker import WorkerProcess
from tests.test_reliability_uploads import post_api, staff_client  # noqa: F401  (fixture)

Status = IndexedImage.Status
PHOTO = "catalog.product.photo"
FAULT_IMGREC: dict[str, Any] = {
    "BACKBONE": fault.NAME,
    "BACKBONE_OPTIONS": {},
    "TEXT_MODEL": None,
    "BATCH_SIZE": 4,
    "TASK_BATCH_SIZE": 16,
}
FAULT_QUEUES = {"embed": "imgrec.fault.embed", "light": "imgrec.fault.light"}


@pytest.fixture
def fault_backbone(settings: Any) -> Callable[..., None]:
    """Index with the ``imgrec_fault`` backbone; call it again to change IMGREC keys."""

    def use(**overrides: Any) -> None:
        settings.IMGREC = {**settings.IMGREC, **FAULT_IMGREC, **overrides}

    use()
    return use


def photo_product(make_product: Any, data: bytes, name: str = "p.png") -> Any:
    return make_product(photo=ContentFile(data, name=name))


def tracked(product: Any) -> IndexedImage:
    return IndexedImage.objects.get(source=PHOTO, source_id=str(product.pk))


def settled(ids: list[int]) -> bool:
    return not IndexedImage.objects.filter(pk__in=ids, status__in=[Status.PENDING, Status.PROCESSING]).exists()


def colour_png(i: int) -> bytes:
    """Distinct ordinary pictures (never a marker colour)."""
    rng = np.random.default_rng(i)
    return make_image_bytes(
        "PNG", (64, 48), color=tuple(int(c) for c in rng.integers(30, 200, 3)), shape="box" if i % 2 else "circle"
    )


def one_vector_each(ids: list[int]) -> None:
    for pk in ids:
        assert ImageEmbedding.objects.filter(image_id=pk).count() == 1, pk


# --- 16: the broker is down during an upload ------------------------------------------------------


@pytest.mark.worker
@pytest.mark.parametrize("outage", ["refused", "hung"])
def test_upload_with_the_broker_down_returns_promptly_and_the_sweeper_finishes_it(
    outage: str,
    celery_worker: Any,
    celery_app_real: Any,
    staff_client: Client,  # noqa: F811
    make_product: Any,
    fault_backbone: Any,
) -> None:
    """The publish is tried briefly: a refused connection or a broker that accepts and never
    answers (bounded by the transport's socket timeout, set to 2 s here) never fails or hangs the
    upload.  The image waits ``pending``; once the broker is back the sweeper gets it ready."""
    product = make_product()
    with silent_listener() as hung_port:
        port = free_port() if outage == "refused" else hung_port
        old_options = celery_app_real.conf.broker_transport_options
        celery_app_real.conf.broker_transport_options = {**old_options, "socket_timeout": 2}
        try:
            with broker_at(celery_app_real, f"redis://127.0.0.1:{port}/6"):
                start = time.monotonic()
                response = post_api(staff_client, product, [("a.png", colour_png(1))])
                elapsed = time.monotonic() - start
        finally:
            celery_app_real.conf.broker_transport_options = old_options
    assert response.status_code == 201, response.content
    # A bound for hanging, not a speed benchmark: one 2 s timeout and one short retry at most.
    assert elapsed < 8, f"the upload took {elapsed:.1f}s with the broker {outage}"
    image = IndexedImage.objects.get(source="imgrec_app.productimage.image", source_id=str(response.json()["id"]))
    time.sleep(1)  # nothing was queued, so nothing happens
    image.refresh_from_db()
    assert image.status == Status.PENDING and image.attempts == 0
    out = io.StringIO()
    call_command("imgrec_sweep", "--older-than", "0", stdout=out)
    assert "Re-queued 1 image(s)" in out.getvalue()
    wait_for(lambda: IndexedImage.objects.get(pk=image.pk).status == Status.READY, timeout=60)


# --- 17: a rolled-back save queues nothing and its file does not stay -------------------------------


@pytest.mark.django_db
def test_rolled_back_upload_queues_nothing_and_the_sweeper_removes_its_file(
    fault_backbone: Any, make_product: Any, add_image: Any, settings: Any, tmp_path: Path
) -> None:
    """test_pipeline checks that no task is queued; the file Django wrote before the rollback
    (it has no rollback hook) is an orphan until the periodic sweep deletes it."""
    from django.core.cache import cache

    from imgrec_app.tasks import sweep

    settings.MEDIA_ROOT = str(tmp_path)
    product = make_product()
    kept = add_image(product, colour_png(1), name="kept.png")
    with mock.patch.object(indexing, "publish") as publish:
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                add_image(product, colour_png(2), name="lost.png")
                raise RuntimeError("the request failed after the save")
    publish.assert_not_called()
    files = {p for p in tmp_path.rglob("*") if p.is_file()}
    (orphan,) = files - {Path(kept.image.path)}
    assert indexing.delete_orphan_files() == 0  # young: it could be an upload still in flight
    an_hour_ago = time.time() - 3700
    os.utime(orphan, (an_hour_ago, an_hour_ago))
    os.utime(kept.image.path, (an_hour_ago, an_hour_ago))
    cache.delete("imgrec:orphan-files-swept")
    assert sweep.apply().result["orphan_files"] == 1
    assert {p for p in tmp_path.rglob("*") if p.is_file()} == {Path(kept.image.path)}


# --- 18: the image or its product is deleted before or while the task runs ------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("when", ["before-the-task", "while-the-model-runs"])
@pytest.mark.parametrize("what", ["image", "product"])
def test_task_for_a_deleted_image_or_product_ends_quietly(
    what: str,
    when: str,
    fault_backbone: Any,
    make_product: Any,
    add_image: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    product = make_product()
    with mock.patch.object(indexing, "publish") as publish:
        with django_capture_on_commit_callbacks(execute=True):
            image = add_image(product, colour_png(1), name="a.png")
    (ids,), _ = publish.call_args

    def delete() -> None:
        (image if what == "image" else product).delete()

    if when == "before-the-task":
        delete()
        result = embed_images.apply(args=[ids])
    else:
        original = Encoder.encode_arrays

        def delete_then_encode(self: Encoder, arrays: np.ndarray) -> Any:
            delete()
            return original(self, arrays)

        with mock.patch.object(Encoder, "encode_arrays", delete_then_encode):
            result = embed_images.apply(args=[ids])
    assert result.successful(), result.traceback
    assert result.result["ready"] == 0 and not result.result["failed"]
    assert not ImageEmbedding.objects.exists() and not ProductVector.objects.exists()
    assert not IndexedImage.objects.exists()


# --- 19: the image is replaced while its old task runs ---------------------------------------------


@pytest.mark.django_db
def test_file_replaced_mid_task_keeps_only_the_new_files_vector(
    fault_backbone: Any, make_product: Any, add_image: Any
) -> None:
    """The unit test in test_pipeline checks the conditional write; here the replacement happens
    while the old task's forward pass runs, and the final vector is the new file's."""
    old_bytes, new_bytes = colour_png(1), colour_png(2)
    product = make_product()
    with mock.patch.object(indexing, "publish"):
        image = add_image(product, old_bytes, name="old.png")
        row = IndexedImage.objects.get(source="imgrec_app.productimage.image", source_id=str(image.pk))
        original = Encoder.encode_arrays

        def replace_then_encode(self: Encoder, arrays: np.ndarray) -> Any:
            if image.image.name.find("new") < 0:
                image.image = upload("new.png", new_bytes, "image/png")
                image.save()
            return original(self, arrays)

        with mock.patch.object(Encoder, "encode_arrays", replace_then_encode):
            stale = embed_images.apply(args=[[row.pk]]).result
    assert stale["ready"] == 0 and stale["skipped"] == 1
    row.refresh_from_db()
    assert row.status == Status.PENDING and row.revision == 2
    assert not ImageEmbedding.objects.filter(image=row).exists()

    assert indexing.process_images([row.pk]).ready == 1
    encoder = indexing.load_encoder(configured_model())
    expected_new, expected_old = (
        encoder.encode([load_rgb(b, allowed_formats=["PNG"], max_pixels=10**7)])[0] for b in (new_bytes, old_bytes)
    )
    stored = np.asarray(ImageEmbedding.objects.get(image=row).vector)
    assert float(stored @ expected_new) > 0.9999
    assert float(expected_old @ expected_new) < 0.99  # the two files do embed differently


# --- 20: the same task delivered twice at once ------------------------------------------------------


def _in_thread(target: Callable[[], Any], results: list[Any], start: threading.Barrier) -> threading.Thread:
    def run() -> None:
        try:
            start.wait(10)
            results.append(target())
        except BaseException as exc:  # reported by the test
            results.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("second", ["fresh-copy", "redelivered-copy"])
def test_same_task_delivered_twice_concurrently_writes_one_vector_per_image(
    second: str, fault_backbone: Any, make_product: Any
) -> None:
    """Two deliveries of one task run at the same time; with ``redelivered-copy`` the second
    takes over rows the first holds (as a redelivery after a lost ack does)."""
    fault_backbone(BACKBONE_OPTIONS={"delay": 0.3}, BATCH_SIZE=2)
    with mock.patch.object(indexing, "publish"):
        with transaction.atomic():
            products = [photo_product(make_product, colour_png(i)) for i in range(6)]
    ids = [tracked(p).pk for p in products]
    indexing.load_encoder(configured_model())  # loaded once, before the race
    results: list[Any] = []
    both = threading.Barrier(2)
    first = _in_thread(lambda: indexing.process_images(ids, greedy=False), results, both)
    if second == "fresh-copy":
        other = _in_thread(lambda: indexing.process_images(ids, greedy=False), results, both)
    else:

        def redelivered() -> Any:
            wait_for(
                lambda: IndexedImage.objects.filter(pk__in=ids, status=Status.PROCESSING).exists(),
                timeout=10,
                interval=0.01,
            )
            return [indexing.process_images([pk], reclaim=True, greedy=False) for pk in ids]

        other = _in_thread(redelivered, results, both)
    first.join(60)
    other.join(60)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert IndexedImage.objects.filter(pk__in=ids, status=Status.READY).count() == len(ids)
    one_vector_each(ids)
    assert ProductVector.objects.filter(model_id=configured_model().model_id).count() == len(ids)


# --- 24: NaN / Inf / zero vectors from the model ----------------------------------------------------


@pytest.mark.worker
def test_nan_inf_and_zero_vectors_fail_as_bad_vector_and_write_nothing(
    celery_worker: Any, fault_backbone: Any, make_product: Any
) -> None:
    with transaction.atomic():  # one batch holding the good picture and the three bad ones
        products = {kind: photo_product(make_product, fault.marker_png(kind)) for kind in ("nan", "inf", "zero")}
        products["ok"] = photo_product(make_product, colour_png(3))
    ids = {kind: tracked(p).pk for kind, p in products.items()}
    wait_for(lambda: settled(list(ids.values())), timeout=60)
    rows = {kind: IndexedImage.objects.get(pk=pk) for kind, pk in ids.items()}
    assert rows["ok"].status == Status.READY
    for kind in ("nan", "inf", "zero"):
        assert (rows[kind].status, rows[kind].failure_reason) == (Status.FAILED, "bad_vector"), kind
        assert rows[kind].attempts == 1 and rows[kind].failure_detail
        assert not ImageEmbedding.objects.filter(image_id=ids[kind]).exists()
        assert not ProductVector.objects.filter(object_id=str(products[kind].pk)).exists()
    assert ProductVector.objects.filter(object_id=str(products["ok"].pk)).count() == 1


# --- 25: the backbone changes size but keeps its model id --------------------------------------------


@pytest.fixture
def resized_backbone() -> Iterator[Callable[[int], None]]:
    def resize(dim: int) -> None:
        register_backbone(fault.resized_spec(dim))
        clear_encoders()

    yield resize
    register_backbone(fault.SPEC)
    clear_encoders()


@pytest.mark.worker
def test_backbone_size_change_under_the_same_model_id_fails_loudly_and_loses_nothing(
    celery_worker: Any, fault_backbone: Any, make_product: Any, resized_backbone: Any, caplog: Any
) -> None:
    before = photo_product(make_product, colour_png(1))
    wait_for(lambda: tracked(before).status == Status.READY, timeout=60)
    resized_backbone(fault.DIM * 2)

    errors = [e for e in check_database(databases=["default"]) if e.id == "imgrec_app.E021"]
    assert errors and f"makes {fault.DIM * 2}" in errors[0].msg

    after = photo_product(make_product, colour_png(2))
    wait_for(lambda: "dimensions" in caplog.text, timeout=60)
    row = tracked(after)
    assert f"Stored vectors of {configured_model().model_id} have {fault.DIM} dimensions" in caplog.text
    assert row.status == Status.PENDING and row.attempts == 0  # nothing claimed, nothing failed
    assert not ImageEmbedding.objects.filter(image=row).exists()
    assert ImageEmbedding.objects.filter(image=tracked(before)).count() == 1

    # Restoring the backbone (or giving it a new model id) and sweeping finishes the work.
    register_backbone(fault.SPEC)
    clear_encoders()
    call_command("imgrec_sweep", "--older-than", "0", stdout=io.StringIO())
    wait_for(lambda: tracked(after).status == Status.READY, timeout=60)


# --- 26: missing or corrupt weights ------------------------------------------------------------------


@pytest.mark.worker
def test_corrupt_weights_fail_fast_and_leave_the_queue_unharmed(
    celery_worker: Any, fault_backbone: Any, make_product: Any, settings: Any, tmp_path: Path, caplog: Any
) -> None:
    """test_pipeline checks a missing file in-process; here a corrupt file meets a real worker:
    the task fails at model load with a message naming the file, no image is marked failed,
    and once the weights are fixed the sweeper finishes the work."""
    bad = tmp_path / "resnet18-5c106cde.pth"
    bad.write_bytes(b"this is not a torch checkpoint" * 100)
    fault_backbone(BACKBONE="resnet18", BACKBONE_OPTIONS={"weights_path": str(bad)})
    clear_encoders()
    products = [photo_product(make_product, colour_png(i)) for i in range(3)]
    wait_for(lambda: str(bad) in caplog.text, timeout=60)
    assert "cannot be read" in caplog.text
    time.sleep(1)  # the other tasks fail the same way, quickly
    rows = IndexedImage.objects.filter(pk__in=[tracked(p).pk for p in products])
    assert {(r.status, r.attempts, r.failure_reason) for r in rows} == {(Status.PENDING, 0, "")}

    fault_backbone(BACKBONE=fault.NAME, BACKBONE_OPTIONS={})
    call_command("imgrec_sweep", "--older-than", "0", stdout=io.StringIO())
    wait_for(lambda: settled([r.pk for r in rows]), timeout=60)
    assert rows.filter(status=Status.READY).count() == 3


# --- 27: CUDA out of memory (simulated) ----------------------------------------------------------------


OOM_COLOUR = (10, 200, 200)


@pytest.mark.worker
def test_cuda_out_of_memory_halves_the_batch_down_to_one_and_the_worker_survives(
    celery_worker: Any, fault_backbone: Any, make_product: Any
) -> None:
    import torch

    fault_backbone(BATCH_SIZE=4)
    sizes: list[int] = []
    original = Encoder._forward

    def forward(self: Encoder, arrays: np.ndarray) -> Any:
        sizes.append(len(arrays))
        marker = np.abs(arrays.reshape(len(arrays), -1, 3).mean(axis=1) - OOM_COLOUR).max(axis=1) < 3
        if len(arrays) > 1 or marker.any():
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return original(self, arrays)

    with mock.patch.object(Encoder, "_forward", forward):
        ids = _batch(make_product, [colour_png(i) for i in range(3)] + [fault.solid_png(OOM_COLOUR)])
        wait_for(lambda: settled(ids), timeout=60)
        # 4 → 2 + 2 → single images; the marker fails alone.
        assert sizes == [4, 2, 1, 1, 2, 1, 1], sizes
        rows = [IndexedImage.objects.get(pk=pk) for pk in ids]
        assert [r.status for r in rows] == [Status.READY] * 3 + [Status.FAILED]
        assert rows[3].failure_reason == "out_of_memory" and rows[3].attempts == 1
        # The worker survived: it embeds the next upload.
        later = photo_product(make_product, colour_png(9))
        wait_for(lambda: tracked(later).status == Status.READY, timeout=60)


# --- 21–23: a real prefork worker in a subprocess ---------------------------------------------------


@pytest.fixture
def worker_process(
    transactional_db: Any, settings: Any, tmp_path: Path, celery_app_real: Any
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``celery worker --pool prefork --concurrency 1`` on the fault queues, with the
    IMGREC overrides given (this process uses the same ones)."""
    from django.contrib.contenttypes.models import ContentType

    ContentType.objects.clear_cache()
    started: list[WorkerProcess] = []

    def start(env: dict[str, str] | None = None, **overrides: Any) -> WorkerProcess:
        imgrec = {**FAULT_IMGREC, "QUEUES": FAULT_QUEUES, **overrides}
        settings.IMGREC = {**settings.IMGREC, **imgrec}
        _purge(celery_app_real)
        worker = WorkerProcess(
            queues=list(FAULT_QUEUES.values()),
            imgrec=imgrec,
            media_root=settings.MEDIA_ROOT,
            database=connection.settings_dict,
            log_path=tmp_path / "worker.log",
            env=env,
        )
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.__exit__()
    _purge(celery_app_real)
    ContentType.objects.clear_cache()


def _ready(ids: list[int]) -> dict[int, Any]:
    """Ready images and when they were indexed."""
    return dict(IndexedImage.objects.filter(pk__in=ids, status=Status.READY).values_list("pk", "indexed_at"))


def _batch(make_product: Any, pictures: list[bytes]) -> list[int]:
    """Products saved in one transaction: their tasks are published together after commit, so
    the first task claims them all as one batch."""
    with transaction.atomic():
        products = [photo_product(make_product, data) for data in pictures]
    return [tracked(p).pk for p in products]


@pytest.mark.worker
def test_sigkill_mid_batch_redoes_the_rest_and_keeps_what_was_done(
    worker_process: Callable[..., WorkerProcess], make_product: Any
) -> None:
    worker = worker_process(BATCH_SIZE=2, TASK_BATCH_SIZE=8, BACKBONE_OPTIONS={"delay": 1.5})
    ids = _batch(make_product, [colour_png(i) for i in range(8)])
    wait_for(lambda: len(_ready(ids)) >= 2, timeout=60, interval=0.05)
    done_before = _ready(ids)
    killed = worker.kill_pool_child()
    assert IndexedImage.objects.filter(pk__in=ids, status=Status.PROCESSING).exists()

    wait_for(lambda: settled(ids), timeout=120)
    assert worker.alive() and killed not in worker.pool_pids()
    rows = {r.pk: r for r in IndexedImage.objects.filter(pk__in=ids)}
    assert all(r.status == Status.READY for r in rows.values()), {
        r.pk: (r.status, r.failure_reason) for r in rows.values()
    }
    for pk, indexed_at in done_before.items():  # finished items stay done: not embedded again
        assert rows[pk].indexed_at == indexed_at and rows[pk].attempts == 1
    assert any(r.attempts == 2 for r in rows.values())  # the interrupted ones were redone
    one_vector_each(ids)
    assert worker.log().count("exited with 'signal 9 (SIGKILL)'") == 1


@pytest.mark.worker
def test_poison_image_that_kills_every_worker_ends_worker_lost_and_the_queue_flows(
    worker_process: Callable[..., WorkerProcess], make_product: Any, settings: Any
) -> None:
    worker = worker_process(BATCH_SIZE=2, TASK_BATCH_SIZE=8, MAX_ATTEMPTS=3)
    ids = _batch(make_product, [fault.marker_png("kill")] + [colour_png(i) for i in range(3)])
    poison, good = ids[0], ids[1:]
    wait_for(lambda: settled(ids), timeout=150)
    row = IndexedImage.objects.get(pk=poison)
    assert (row.status, row.failure_reason) == (Status.FAILED, "worker_lost")
    assert row.attempts <= 3
    assert worker.log().count("exited with 'signal 9 (SIGKILL)'") == row.attempts
    assert IndexedImage.objects.filter(pk__in=good, status=Status.READY).count() == 3
    one_vector_each(good)
    # The queue keeps flowing after the poison.
    later = photo_product(make_product, colour_png(7))
    wait_for(lambda: tracked(later).status == Status.READY, timeout=60)
    assert worker.alive()


@pytest.mark.worker
def test_postgres_restarted_mid_batch_is_retried_and_completes(
    worker_process: Callable[..., WorkerProcess], make_product: Any
) -> None:
    """A real restart of the embedded PostgreSQL (``pg_ctl restart -m fast``) while the worker is
    inside a batch: its connection dies, the task releases what it can, retries with backoff on
    a new connection and finishes every image."""
    worker = worker_process(BATCH_SIZE=2, TASK_BATCH_SIZE=8, BACKBONE_OPTIONS={"delay": 1.5})
    ids = _batch(make_product, [colour_png(i) for i in range(6)])
    wait_for(lambda: len(_ready(ids)) >= 2, timeout=60, interval=0.05)  # inside the 2nd forward pass
    done_before = _ready(ids)
    restart_postgres(connection.settings_dict)
    connections.close_all()
    wait_for(lambda: settled(ids), timeout=120)
    assert len(_ready(ids)) == len(ids)
    assert {pk: at for pk, at in _ready(ids).items() if pk in done_before} == done_before
    one_vector_each(ids)
    assert "transient error" in worker.log() and "retrying in" in worker.log()


# --- issue 13 §1: an image is never ready without its product's vector --------------------------------


def _refresh_failing_once(error: BaseException) -> Any:
    """``refresh_product_vectors`` that raises ``error`` on its first call (the old window:
    images written ready, product vectors not yet), then works."""
    real = indexing.refresh_product_vectors
    calls: list[int] = []

    def refresh(pairs: Any, model_id: str) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise error
        return real(pairs, model_id)

    return mock.patch.object(indexing, "refresh_product_vectors", refresh)


def _on_shelves(products: list[Any]) -> None:
    model_id = configured_model().model_id
    for p in products:
        assert tracked(p).status == Status.READY, p.pk
        assert ProductVector.objects.filter(object_id=str(p.pk), model_id=model_id, modality="image").count() == 1, p.pk
    assert indexing.products_missing_vectors(model_id) == []


@pytest.mark.django_db
def test_database_error_at_the_product_vector_write_is_retried_and_the_products_are_on_shelves(
    fault_backbone: Any, make_product: Any
) -> None:
    """Issue 13 §1: an OperationalError where the product vectors are written.  The sub-batch's
    statuses, image vectors and product vectors are one transaction, so the error leaves the
    images claimed (not ``ready``), the task retries and every product gets its vector."""
    from django.db import OperationalError

    with mock.patch.object(indexing, "publish"):
        with transaction.atomic():
            products = [photo_product(make_product, colour_png(i)) for i in range(3)]
    ids = [tracked(p).pk for p in products]
    with _refresh_failing_once(OperationalError("server closed the connection unexpectedly (injected)")):
        result = embed_images.apply(args=[ids])  # apply() runs the retry eagerly
    assert result.successful(), result.traceback
    _on_shelves(products)
    one_vector_each(ids)
    # The transient failure put the claim back without counting it against MAX_ATTEMPTS.
    assert set(IndexedImage.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == {1}


@pytest.mark.django_db
def test_crash_at_the_product_vector_write_writes_nothing_and_the_sweeper_finishes_it(
    fault_backbone: Any, make_product: Any
) -> None:
    """Issue 13 §1: the task dies (an error that is not retried) where the product vectors are
    written: no image of the sub-batch is ``ready`` and none has a vector; the sweeper queues
    them again and they end on shelves."""
    with mock.patch.object(indexing, "publish"):
        with transaction.atomic():
            products = [photo_product(make_product, colour_png(i)) for i in range(3)]
    ids = [tracked(p).pk for p in products]
    with _refresh_failing_once(RuntimeError("the worker died here (injected)")):
        result = embed_images.apply(args=[ids])
    assert result.failed()
    assert not IndexedImage.objects.filter(pk__in=ids, status=Status.READY).exists()
    assert not ImageEmbedding.objects.filter(image_id__in=ids).exists()
    with mock.patch.object(indexing, "publish") as publish:
        assert indexing.sweep_stuck(older_than=timedelta(0))["requeued"] == 3
    (requeued,), _ = publish.call_args
    assert embed_images.apply(args=[requeued]).successful()
    _on_shelves(products)


@pytest.mark.django_db
def test_sweeper_writes_missing_product_vectors_and_status_counts_them(
    fault_backbone: Any, make_product: Any
) -> None:
    """The reconciliation: ready images whose product has no vector (data written before the
    one-transaction write, or a failed refresh after a move) are repaired by the sweeper;
    ``imgrec_status`` shows how many there are."""
    with mock.patch.object(indexing, "publish"):
        products = [photo_product(make_product, colour_png(i)) for i in range(2)]
    indexing.process_images([tracked(p).pk for p in products])
    ProductVector.objects.filter(object_id=str(products[0].pk)).delete()
    out = io.StringIO()
    call_command("imgrec_status", stdout=out)
    assert "Products missing a vector: 1" in out.getvalue()
    out = io.StringIO()
    call_command("imgrec_sweep", stdout=out)
    assert "1 missing product vector(s) written" in out.getvalue()
    _on_shelves(products)
    out = io.StringIO()
    call_command("imgrec_status", stdout=out)
    assert "Products missing a vector: 0" in out.getvalue()


@pytest.mark.worker
def test_worker_killed_at_the_product_vector_write_leaves_every_product_on_shelves(
    worker_process: Callable[..., WorkerProcess], make_product: Any, tmp_path: Path
) -> None:
    """Issue 13 §1 with a real worker: the pool child SIGKILLs itself inside the write window
    (when it starts writing product vectors, tests/faults/windows.py).  Its transaction dies
    with it, the message is redelivered, and every product ends ready *and* on shelves —
    before, the images were committed ready first and their products never got a vector."""
    flag = tmp_path / "kill-at-refresh"
    flag.touch()
    worker = worker_process(BATCH_SIZE=2, TASK_BATCH_SIZE=8, env={"IMGREC_FAULT_KILL_AT_REFRESH": str(flag)})
    with transaction.atomic():
        products = [photo_product(make_product, colour_png(i)) for i in range(4)]
    ids = [tracked(p).pk for p in products]
    wait_for(lambda: "exited with 'signal 9 (SIGKILL)'" in worker.log(), timeout=120)
    wait_for(lambda: settled(ids), timeout=120)
    assert not flag.exists() and worker.log().count("exited with 'signal 9 (SIGKILL)'") == 1
    _on_shelves(products)
    one_vector_each(ids)


# --- issue 13 §3.1: a killed worker's claim, under any task's name, is recovered at once ---------------


def _claims(ids: list[int]) -> dict[Any, int]:
    """Images still processing, by claim (their shared ``started_at`` stamp)."""
    from django.db.models import Count

    rows = IndexedImage.objects.filter(pk__in=ids, status=Status.PROCESSING).values("started_at")
    return {r["started_at"]: r["n"] for r in rows.annotate(n=Count("pk")).order_by()}


@pytest.mark.worker
def test_second_worker_kill_strands_no_batch(worker_process: Callable[..., WorkerProcess], make_product: Any) -> None:
    """Issue 13 §3.1: the pool child is SIGKILLed inside batch S1, then the child that took the
    next task is SIGKILLed inside the batch *it* claimed (S2, other tasks' images by greedy
    batching).  Before, S2 stayed ``processing`` until ``STUCK_AFTER`` (10 min): the redelivered
    message only looked for its own ids' batch.  Now the next task takes over every dead claim
    first, so all images are ready long before ``STUCK_AFTER`` with no sweeper running."""
    worker = worker_process(BATCH_SIZE=2, TASK_BATCH_SIZE=4, BACKBONE_OPTIONS={"delay": 1.0})
    ids = _batch(make_product, [colour_png(i) for i in range(12)])
    first = wait_for(lambda: [s for s, n in _claims(ids).items() if n >= 3], timeout=60, interval=0.05)[0]
    wait_for(lambda: len(_ready(ids)) >= 2, timeout=60, interval=0.05)  # inside S1's second pass
    worker.kill_pool_child()
    wait_for(lambda: [s for s, n in _claims(ids).items() if s != first and n >= 2], timeout=60, interval=0.05)
    worker.kill_pool_child()
    wait_for(lambda: settled(ids), timeout=90)  # STUCK_AFTER is 600 s and nothing sweeps
    assert len(_ready(ids)) == len(ids), IndexedImage.objects.filter(pk__in=ids).exclude(status=Status.READY).values(
        "pk", "status", "attempts"
    )
    one_vector_each(ids)
    assert worker.log().count("exited with 'signal 9 (SIGKILL)'") == 2
    _on_shelves([IndexedImage.objects.get(pk=pk).product for pk in ids])


def _claim_in_a_thread(
    ids: list[int], *, hold: threading.Event, claimed: threading.Event, backend: list[int]
) -> threading.Thread:
    """Claim ``ids`` on another connection; keep the claim (and the connection) until ``hold``
    is set, then close the connection without ending the claim (a worker that dies)."""

    def run() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                backend.append(cursor.fetchone()[0])
            indexing.claim(ids, model_id=configured_model().model_id)
            claimed.set()
            hold.wait(20)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    assert claimed.wait(20)
    return thread


def _backend_gone(pid: int) -> bool:
    """The server process of a closed connection has exited (and dropped its locks)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_sweeper_requeues_a_dead_claim_at_once_and_never_a_live_one(fault_backbone: Any, make_product: Any) -> None:
    """A claim whose worker is alive is left alone (even by ``--older-than 0`` it is re-queued
    only as stuck, never taken over as dead); once its connection is gone the sweeper queues it
    again at once — without waiting ``STUCK_AFTER`` — and the task takes it over."""
    with mock.patch.object(indexing, "publish"):
        products = [photo_product(make_product, colour_png(i)) for i in range(3)]
    ids = [tracked(p).pk for p in products]
    hold, claimed, backend = threading.Event(), threading.Event(), []
    thread = _claim_in_a_thread(ids, hold=hold, claimed=claimed, backend=backend)
    try:
        assert indexing.dead_claims() == []
        with mock.patch.object(indexing, "publish") as publish:
            assert indexing.sweep_stuck()["requeued"] == 0
        publish.assert_not_called()
        assert indexing.process_images(ids, reclaim=True).claimed == 0  # a live claim is not taken over
    finally:
        hold.set()
        thread.join(20)
    wait_for(lambda: _backend_gone(backend[0]), timeout=10, interval=0.01)  # Postgres ends it asynchronously
    assert sorted(indexing.dead_claims()) == sorted(ids)
    with mock.patch.object(indexing, "publish") as publish:
        result = indexing.sweep_stuck()
    assert (result["requeued"], result["dead_claims"]) == (3, 3)
    (requeued,), _ = publish.call_args
    assert sorted(requeued) == sorted(ids)
    assert IndexedImage.objects.filter(pk__in=ids, status=Status.PROCESSING).count() == 3
    summary = embed_images.apply(args=[requeued]).result
    assert summary["ready"] == 3
    _on_shelves(products)
    assert set(IndexedImage.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == {2}


# --- issue 13 "Also seen": a pending image whose publish failed is published again soon ----------------


@pytest.mark.worker
def test_image_whose_publish_failed_is_published_again_after_republish_after(
    celery_worker: Any, celery_app_real: Any, fault_backbone: Any, make_product: Any
) -> None:
    """The broker refuses the publish after commit: the image waits ``pending`` and is marked
    unpublished.  The periodic sweep (``STUCK_AFTER`` 600 s, not overridden) publishes it again
    once the failure is ``REPUBLISH_AFTER`` old, and the worker gets it ready."""
    fault_backbone(REPUBLISH_AFTER=1)
    with broker_at(celery_app_real, f"redis://127.0.0.1:{free_port()}/6"):
        product = photo_product(make_product, colour_png(1))
    image = tracked(product)
    assert image.status == Status.PENDING and image.publish_failed_at is not None
    with mock.patch.object(indexing, "publish") as publish:
        assert indexing.sweep_stuck()["requeued"] == 0  # younger than REPUBLISH_AFTER
    publish.assert_not_called()
    wait_for(lambda: indexing.sweep_stuck()["requeued"] == 1, timeout=10, interval=0.3)
    wait_for(lambda: tracked(product).status == Status.READY, timeout=60)
    assert tracked(product).publish_failed_at is None
