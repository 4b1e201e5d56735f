"""The indexing pipeline: tracking, on-commit queueing, claims, stale writes, failures, switches."""

from __future__ import annotations

import io
from unittest import mock

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command

from imgrec_app.models import ImageEmbedding, IndexedImage, ProductImage, ProductVector, ServingModel
from imgrec_app.services import indexing
from imgrec_app.services.models import configured_model
from tests.conftest import make_image_bytes, upload, wait_for

Status = IndexedImage.Status


# --- unit level: real database, no worker -----------------------------------------------------------


@pytest.mark.django_db
def test_task_is_queued_only_after_commit(make_product, add_image, django_capture_on_commit_callbacks):
    product = make_product()
    with mock.patch.object(indexing, "publish") as publish:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            image = add_image(product)
        publish.assert_not_called()
        for cb in callbacks:
            cb()
    tracked = IndexedImage.objects.get(source_id=str(image.pk), source="imgrec_app.productimage.image")
    publish.assert_called_once_with([tracked.pk], chunk_size=None)
    assert tracked.status == Status.PENDING


@pytest.mark.django_db
def test_rolled_back_save_queues_nothing(make_product, add_image):
    from django.db import transaction

    product = make_product()
    with mock.patch.object(indexing, "publish") as publish:
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                add_image(product)
                raise RuntimeError("rollback")
    publish.assert_not_called()
    assert not IndexedImage.objects.filter(source="imgrec_app.productimage.image").exists()


@pytest.mark.django_db
def test_raw_fixture_loads_are_skipped(make_product):
    """A fixture load (``raw=True``) of a product *with a photo* tracks nothing; the same
    signal without ``raw`` does (so the first assertion is about the ``raw`` check)."""
    from django.db.models.signals import post_save

    from shop_demo.catalog.models import Product

    with mock.patch.object(indexing, "publish"):
        product = make_product(photo=upload("fixture.png", make_image_bytes("PNG")))
    IndexedImage.objects.filter(object_id=str(product.pk)).delete()
    post_save.send(Product, instance=product, raw=True, created=True, update_fields=None, using="default")
    assert not IndexedImage.objects.filter(object_id=str(product.pk)).exists()
    post_save.send(Product, instance=product, raw=False, created=True, update_fields=None, using="default")
    assert IndexedImage.objects.filter(object_id=str(product.pk), source="catalog.product.photo").count() == 1


@pytest.mark.django_db
def test_unchanged_file_is_not_requeued(make_product, add_image, django_capture_on_commit_callbacks):
    product = make_product()
    image = add_image(product)
    with mock.patch.object(indexing, "publish") as publish:
        with django_capture_on_commit_callbacks(execute=True):
            image.alt_text = "new alt text"
            image.save()
        publish.assert_not_called()
        with django_capture_on_commit_callbacks(execute=True):
            image.image = upload("other.jpg", make_image_bytes(color=(10, 10, 200)))
            image.save()
        assert publish.call_count == 1
    assert IndexedImage.objects.get(source_id=str(image.pk)).revision == 2


@pytest.mark.django_db(transaction=True)
def test_claim_is_exclusive(make_product, add_image):
    """Two claims at the same time on two connections: while the first holds its rows (paused
    inside its transaction, after its ``SELECT … FOR UPDATE SKIP LOCKED``), the second skips
    them at once — it takes the row the first did not ask for, and its greedy fill skips the
    held rows too — instead of waiting (``lock_timeout`` turns a wait into an error)."""
    import threading

    from django.db import connection

    with mock.patch.object(indexing, "publish"):
        product = make_product()
        a, b, c = (add_image(product, name=f"{n}.jpg") for n in "abc")
    ids = [IndexedImage.objects.get(source_id=str(i.pk), source="imgrec_app.productimage.image").pk for i in (a, b, c)]
    locked, resume = threading.Event(), threading.Event()
    first: list = []

    def pause_after_the_select(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if "FOR UPDATE" in sql and not locked.is_set():
            locked.set()
            resume.wait(10)
        return result

    def first_claim():
        try:
            with connection.execute_wrapper(pause_after_the_select):
                first.extend(indexing.claim(ids[:2], model_id="m"))
        finally:
            connection.close()

    thread = threading.Thread(target=first_claim)
    thread.start()
    try:
        assert locked.wait(10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
        second = indexing.claim(ids, model_id="m")
        greedy = indexing.claim([], model_id="m", extra=10)
        assert thread.is_alive()  # the first claim still holds its rows
    finally:
        resume.set()
        thread.join(20)
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    assert [i.pk for i in second] == [ids[2]] and greedy == []
    assert sorted(i.pk for i in first) == ids[:2]
    rows = {r.pk: r for r in IndexedImage.objects.filter(pk__in=ids)}
    assert all(r.status == Status.PROCESSING and r.attempts == 1 for r in rows.values())
    assert indexing.claim(ids, model_id="m") == []  # sequentially too


@pytest.mark.django_db
def test_stale_result_is_discarded(make_product, add_image):
    """An image replaced while its old task runs: the old task's write is dropped."""
    product = make_product()
    image = add_image(product)
    tracked = IndexedImage.objects.get(source_id=str(image.pk), source="imgrec_app.productimage.image")
    claimed = indexing.claim([tracked.pk], model_id=configured_model().model_id)[0]
    image.image = upload("new.jpg", make_image_bytes(color=(0, 200, 0)))
    image.save()  # revision bumps, status back to pending
    vec = np.ones(1280, dtype=np.float32) / np.sqrt(1280)
    result = indexing._Result(claimed, Status.READY, vec, [], "hash")
    assert indexing.write_results([result], configured_model().model_id) == []
    tracked.refresh_from_db()
    assert tracked.status == Status.PENDING and tracked.revision == 2
    # The new file is claimed again (processing, revision 2): the old result still never lands,
    # by its revision alone (no claim token given) or by its claim.
    again = indexing.claim([tracked.pk], model_id=configured_model().model_id)[0]
    assert indexing.write_results([result], configured_model().model_id) == []
    assert indexing.write_results([result], configured_model().model_id, token=claimed.claim_token) == []
    assert not ImageEmbedding.objects.filter(image=tracked).exists()
    assert not ProductVector.objects.filter(object_id=str(product.pk)).exists()
    for token in (claimed.claim_token, again.claim_token):
        indexing.end_claim(token)


@pytest.mark.django_db
def test_result_of_a_claim_taken_over_is_dropped(make_product, add_image):
    """A claim whose rows another claim took over (its worker was thought dead) writes nothing."""
    product = make_product()
    image = add_image(product)
    tracked = IndexedImage.objects.get(source_id=str(image.pk), source="imgrec_app.productimage.image")
    claimed = indexing.claim([tracked.pk], model_id=configured_model().model_id)[0]
    IndexedImage.objects.filter(pk=tracked.pk).update(claim_token=claimed.claim_token + 1)  # taken over
    vec = np.ones(1280, dtype=np.float32) / np.sqrt(1280)
    result = indexing._Result(claimed, Status.READY, vec, [], "hash")
    assert indexing.write_results([result], configured_model().model_id, token=claimed.claim_token) == []
    assert not ImageEmbedding.objects.filter(image=tracked).exists()
    assert indexing.write_results([result], configured_model().model_id, token=claimed.claim_token + 1) == [result]
    assert ProductVector.objects.filter(object_id=str(product.pk)).count() == 1
    indexing.end_claim(claimed.claim_token)


def test_bad_vectors_are_never_usable():
    ok = np.ones(4, dtype=np.float32) / 2
    assert indexing.is_usable_vector(ok, 4)
    assert not indexing.is_usable_vector(np.zeros(4, dtype=np.float32), 4)
    assert not indexing.is_usable_vector(np.array([np.nan, 0, 0, 1], dtype=np.float32), 4)
    assert not indexing.is_usable_vector(np.array([np.inf, 0, 0, 1], dtype=np.float32), 4)
    assert not indexing.is_usable_vector(ok, 8)
    # The failure detail names the problem (docs/RELIABILITY.md: shape, NaN/Inf, zero).
    assert indexing.vector_problem(ok, 4) == ""
    assert "non-finite" in indexing.vector_problem(np.array([np.nan, 0, 0, 1], dtype=np.float32), 4)
    assert "non-finite" in indexing.vector_problem(np.array([np.inf, 0, 0, 1], dtype=np.float32), 4)
    assert "zero vector" in indexing.vector_problem(np.zeros(4, dtype=np.float32), 4)
    assert "shape" in indexing.vector_problem(ok, 8)


@pytest.mark.django_db
def test_sync_reindex_embeds_in_process(make_product, add_image):
    product = make_product()
    add_image(product, make_image_bytes("PNG", shape="box"), name="p.png")
    out = io.StringIO()
    call_command("imgrec_reindex", "--missing", "--sync", stdout=out, verbosity=0)
    assert "1 ready, 0 failed" in out.getvalue()
    tracked = IndexedImage.objects.get(object_id=str(product.pk))
    assert tracked.status == Status.READY
    status = io.StringIO()
    call_command("imgrec_status", stdout=status)
    assert "ready       1" in status.getvalue()


@pytest.mark.django_db
def test_existing_images_are_discovered_without_reupload(make_product):
    """Images that existed before imgrec (signals off) are found by --missing."""
    from django.db.models.signals import post_save

    from imgrec_app.signal_handlers import image_saved
    from shop_demo.catalog.models import Product

    post_save.disconnect(image_saved, sender=Product, dispatch_uid="imgrec_app.image_source.catalog.product.save")
    try:
        product = make_product(photo=upload("old.png", make_image_bytes("PNG")))
    finally:
        post_save.connect(image_saved, sender=Product, dispatch_uid="imgrec_app.image_source.catalog.product.save")
    assert not IndexedImage.objects.filter(object_id=str(product.pk)).exists()
    call_command("imgrec_reindex", "--missing", "--sync", stdout=io.StringIO(), verbosity=0)
    tracked = IndexedImage.objects.get(object_id=str(product.pk))
    assert tracked.status == Status.READY and tracked.file_name == product.photo.name


@pytest.mark.django_db
def test_deleting_an_image_updates_the_product_vector(make_product, add_image, django_capture_on_commit_callbacks):
    product = make_product()
    a = add_image(product, make_image_bytes(color=(200, 0, 0)))
    b = add_image(product, make_image_bytes(color=(0, 0, 200), shape="box"), name="b.jpg")
    call_command("imgrec_reindex", "--missing", "--sync", stdout=io.StringIO(), verbosity=0)
    pv = ProductVector.objects.get(object_id=str(product.pk))
    assert pv.source_count == 2
    with django_capture_on_commit_callbacks(execute=True):
        b.delete()
    pv.refresh_from_db()
    assert pv.source_count == 1
    only_a = ImageEmbedding.objects.get(image__source_id=str(a.pk)).vector
    assert np.allclose(np.asarray(pv.vector), np.asarray(only_a), atol=1e-5)
    with django_capture_on_commit_callbacks(execute=True):
        a.delete()
    assert not ProductVector.objects.filter(object_id=str(product.pk)).exists()


@pytest.mark.django_db
def test_deleting_a_product_forgets_it(make_product, add_image):
    product = make_product()
    add_image(product)
    call_command("imgrec_reindex", "--missing", "--sync", stdout=io.StringIO(), verbosity=0)
    key = str(product.pk)
    product.delete()
    assert not ProductImage.objects.filter(object_id=key).exists()
    assert not IndexedImage.objects.filter(object_id=key).exists()
    assert not ProductVector.objects.filter(object_id=key).exists()


# --- with a real worker --------------------------------------------------------------------------------


def _settled(ids):
    return not IndexedImage.objects.filter(pk__in=ids, status__in=[Status.PENDING, Status.PROCESSING]).exists()


def _photo_product(make_product, name, data, filename):
    return make_product(name, photo=ContentFile(data, name=filename))


@pytest.mark.worker
def test_bad_files_fail_once_with_a_reason(celery_worker, make_product):
    good = make_image_bytes("JPEG", (800, 600))
    products = {
        "truncated": _photo_product(make_product, "Truncated", good[: len(good) // 2], "t.jpg"),
        "corrupt": _photo_product(make_product, "Corrupt", b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, "c.png"),
        "not_an_image": _photo_product(make_product, "Text", b"hello, I am not an image" * 20, "n.jpg"),
        "ok": _photo_product(make_product, "Fine", good, "ok.jpg"),
    }
    ids = {k: IndexedImage.objects.get(source="catalog.product.photo", source_id=str(p.pk)).pk for k, p in products.items()}
    wait_for(lambda: _settled(ids.values()))
    rows = {k: IndexedImage.objects.get(pk=pk) for k, pk in ids.items()}
    assert rows["ok"].status == Status.READY
    assert rows["truncated"].failure_reason == "truncated"
    assert rows["corrupt"].failure_reason in ("corrupt", "truncated")
    assert rows["not_an_image"].failure_reason == "not_an_image"
    for k in ("truncated", "corrupt", "not_an_image"):
        assert rows[k].status == Status.FAILED and rows[k].attempts == 1 and rows[k].failure_detail
        assert not ImageEmbedding.objects.filter(image_id=rows[k].pk).exists()


@pytest.mark.worker
def test_backbone_switch_backfills_while_old_vectors_serve(celery_worker, make_product, settings, tmp_path):
    import torch
    import torchvision

    from imgrec_app.ml.encoder import clear_encoders
    from imgrec_app.services.recommend import similar_products

    colors = [(220, 30, 30), (200, 40, 40), (30, 30, 220), (40, 40, 200)]
    products = [
        _photo_product(make_product, f"P{i}", make_image_bytes("PNG", color=c, shape="box" if i > 1 else "circle"), f"p{i}.png")
        for i, c in enumerate(colors)
    ]
    ids = list(IndexedImage.objects.filter(object_id__in=[str(p.pk) for p in products]).values_list("pk", flat=True))
    wait_for(lambda: _settled(ids))
    old = configured_model()
    wait_for(lambda: ServingModel.objects.filter(modality="image", model_id=old.model_id).exists())

    original = dict(settings.IMGREC)
    weights = tmp_path / "resnet18-random.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    # Random weights make every image look alike: switch near-duplicate collapsing off.
    settings.IMGREC = {
        **settings.IMGREC,
        "BACKBONE": "resnet18",
        "BACKBONE_OPTIONS": {"weights_path": str(weights)},
        "NEAR_DUPLICATE_SIMILARITY": 1.01,
    }
    clear_encoders()
    new = configured_model()
    assert new.model_id != old.model_id and new.dim == 512

    # Before the backfill, the old vectors keep answering.
    assert len(similar_products(products[0], limit=3)) == 3
    assert ServingModel.objects.get(modality="image").model_id == old.model_id

    call_command("imgrec_reindex", "--stale", "--wait", "--timeout", "120", stdout=io.StringIO(), verbosity=0)
    wait_for(lambda: ServingModel.objects.get(modality="image").model_id == new.model_id)
    assert ImageEmbedding.objects.filter(model_id=new.model_id).count() == 4
    assert ImageEmbedding.objects.filter(model_id=old.model_id).count() == 4
    items = similar_products(products[0], limit=3)
    assert len(items) == 3 and all(i.source.startswith("similar:") for i in items)

    # Rolling back is a setting change: the old vectors are complete, so they serve again.
    settings.IMGREC = {
        **settings.IMGREC,
        "BACKBONE": original.get("BACKBONE", "efficientnet_lite0"),
        "BACKBONE_OPTIONS": original.get("BACKBONE_OPTIONS", {}),
    }
    call_command("imgrec_sweep", stdout=io.StringIO())
    assert ServingModel.objects.get(modality="image").model_id == old.model_id
    call_command("imgrec_prune_vectors", stdout=io.StringIO())
    assert not ImageEmbedding.objects.filter(model_id=new.model_id).exists()
    clear_encoders()


@pytest.mark.worker
def test_upgrading_from_the_p1_recipe_backfills_while_p1_serves(celery_worker, make_product, settings):
    """0.1.0's default recipe (centre crop, average pooling: ``…:p1``) to today's default
    (``…:prod1-gem-multi``): a model switch like any other, shelves served throughout."""
    from imgrec_app.ml.encoder import clear_encoders
    from imgrec_app.services.recommend import similar_products

    # Synthetic boxes and circles look alike to any backbone: keep near-duplicates on the shelf.
    p1 = {"preprocess": "crop", "pooling": "avg"}
    settings.IMGREC = {**settings.IMGREC, "BACKBONE_OPTIONS": p1, "NEAR_DUPLICATE_SIMILARITY": 1.01}
    clear_encoders()
    colors = [(220, 30, 30), (200, 40, 40), (30, 30, 220), (40, 40, 200)]
    products = [
        _photo_product(
            make_product, f"U{i}", make_image_bytes("PNG", color=c, shape="box" if i > 1 else "circle"), f"u{i}.png"
        )
        for i, c in enumerate(colors)
    ]
    ids = list(IndexedImage.objects.filter(object_id__in=[str(p.pk) for p in products]).values_list("pk", flat=True))
    wait_for(lambda: _settled(ids))
    old = configured_model()
    assert old.model_id.endswith(":p1") and old.dim == 1280
    wait_for(lambda: ServingModel.objects.filter(modality="image", model_id=old.model_id).exists())

    settings.IMGREC = {**settings.IMGREC, "BACKBONE_OPTIONS": {}}  # upgrade: the default recipe
    clear_encoders()
    new = configured_model()
    assert new.model_id.endswith(":prod1-gem-multi") and new.dim == 1664
    assert len(similar_products(products[0], limit=3)) == 3  # p1 still serves
    assert ServingModel.objects.get(modality="image").model_id == old.model_id

    call_command("imgrec_reindex", "--stale", "--wait", "--timeout", "120", stdout=io.StringIO(), verbosity=0)
    wait_for(lambda: ServingModel.objects.get(modality="image").model_id == new.model_id)
    stored = ImageEmbedding.objects.filter(model_id=new.model_id)
    assert stored.count() == 4 and all(len(e.vector) == 1664 for e in stored)
    items = similar_products(products[0], limit=3)
    assert len(items) == 3 and all(i.source.startswith("similar:") for i in items)
    clear_encoders()


@pytest.mark.worker
def test_missing_weights_leave_images_pending(celery_worker, make_product, settings, tmp_path):
    from imgrec_app.ml.encoder import clear_encoders

    settings.IMGREC = {**settings.IMGREC, "BACKBONE": "resnet18", "BACKBONE_OPTIONS": {"weights_path": str(tmp_path / "absent.pth")}}
    clear_encoders()
    product = _photo_product(make_product, "Waiting", make_image_bytes("PNG"), "w.png")
    tracked = IndexedImage.objects.get(source="catalog.product.photo", source_id=str(product.pk))
    summary = None
    with pytest.raises(Exception) as exc:
        summary = indexing.process_images([tracked.pk])
    assert "absent.pth" in str(exc.value) and summary is None
    tracked.refresh_from_db()
    assert tracked.status == Status.PENDING and tracked.attempts == 0
    clear_encoders()


@pytest.mark.django_db
def test_text_tasks_batch_greedily(make_product):
    """Issue 12 "Freshness": a product save records its text as waiting; one text task embeds
    its own products and the other waiting ones in one go (up to its limit, its own first); the
    tasks of the products it took find nothing left; the sweeper publishes waiting ones again."""
    from datetime import timedelta

    from imgrec_app.models import PendingText
    from imgrec_app.services import text
    from imgrec_app.tasks import embed_texts

    products = [make_product(f"Red apple number {i}") for i in range(5)]
    keys = [str(p.pk) for p in products]
    assert sorted(PendingText.objects.values_list("object_id", flat=True)) == sorted(keys)
    assert text.embed_waiting([keys[4]], limit=2) == 2
    assert keys[4] not in PendingText.objects.values_list("object_id", flat=True)  # its own first
    assert PendingText.objects.count() == 3
    assert embed_texts.apply(args=[[keys[0]]]).result == 3  # the rest, in one task
    assert not PendingText.objects.exists()
    assert ProductVector.objects.filter(modality="text", object_id__in=keys).count() == 5
    assert embed_texts.apply(args=[[keys[1]]]).result == 0  # its product was taken: nothing to do

    products[0].name = "Green pear"
    products[0].save()
    assert list(PendingText.objects.values_list("object_id", flat=True)) == [keys[0]]
    with mock.patch.object(text, "publish_text", return_value=True) as publish:
        assert text.sweep_waiting(older_than=timedelta(hours=1)) == 0
        assert text.sweep_waiting(older_than=timedelta(0)) == 1
    publish.assert_called_once_with([keys[0]])
