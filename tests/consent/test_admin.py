"""The admin for PMs and the DPO: search by marketplace id, a read-only ledger, requests, notices."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from consent import services
from consent.models import (
    ConsentEvent,
    ConsentTally,
    DataSubjectRequest,
    ErasureRecord,
    Notice,
    Purpose,
    Subject,
)
from consent.pseudonyms import subject_pseudonym
from tests.consent.factories import grant, raw_id

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("dpo", password="dpo-password-123")
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "model", ["subject", "purpose", "notice", "consentevent", "datasubjectrequest", "erasurerecord", "consenttally"]
)
def test_every_changelist_loads(staff_client, model):
    grant(raw_id())
    assert staff_client.get(f"/admin/consent/{model}/").status_code == 200


def test_subjects_are_found_by_the_marketplace_id_hashed_and_never_put_in_a_url(staff_client):
    wanted, other = "buyer-8812", "buyer-9999"
    grant(wanted)
    grant(other)
    # The search box posts the id; the answer is a redirect to the list filtered by its pseudonym.
    page = staff_client.get("/admin/consent/subject/").content.decode()
    assert 'method="post" action="/admin/consent/subject/find/"' in page and 'name="subject_id"' in page
    response = staff_client.post("/admin/consent/subject/find/", {"subject_id": wanted})
    assert response.status_code == 302
    assert wanted not in response["Location"]
    assert response["Location"].endswith(f"?q={subject_pseudonym(wanted)}")
    page = staff_client.get(response["Location"]).content.decode()
    assert subject_pseudonym(wanted)[:16] in page
    assert subject_pseudonym(other)[:16] not in page
    assert "1 result" in page and wanted not in page
    # The ledger and the requests are searchable the same way.
    response = staff_client.post("/admin/consent/consentevent/find/", {"subject_id": wanted}, follow=True)
    assert subject_pseudonym(wanted)[:16] in response.content.decode()
    assert subject_pseudonym(other)[:16] not in response.content.decode()
    assert staff_client.post("/admin/consent/datasubjectrequest/find/", {"subject_id": wanted}).status_code == 302
    # A pseudonym works too; a raw id put in the address is not searched (and not hashed).
    response = staff_client.post("/admin/consent/subject/find/", {"subject_id": subject_pseudonym(other)}, follow=True)
    assert "1 result" in response.content.decode()
    page = staff_client.get("/admin/consent/subject/", {"q": wanted}).content.decode()
    assert "0 results" in page and "never in the address" in page
    # The find view answers only POST.
    assert staff_client.get("/admin/consent/subject/find/", {"subject_id": wanted}).status_code == 405


def test_the_ledger_is_read_only(staff_client):
    subject = raw_id()
    grant(subject)
    event = ConsentEvent.objects.get()
    change = staff_client.get(f"/admin/consent/consentevent/{event.pk}/change/")
    assert change.status_code == 200 and 'name="_save"' not in change.content.decode()
    assert staff_client.post(f"/admin/consent/consentevent/{event.pk}/change/", {"action": "withdraw"}).status_code == 403
    assert staff_client.post(f"/admin/consent/consentevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert staff_client.get("/admin/consent/consentevent/add/").status_code == 403
    assert ConsentEvent.objects.get(pk=event.pk).action == "grant"
    # Subjects cannot be deleted around their ledger either.
    assert staff_client.post(f"/admin/consent/subject/{event.subject_id}/delete/", {"post": "yes"}).status_code == 403


def test_requests_show_due_time_and_status(staff_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        services.dsr_file(type="access", subject_id=raw_id(), now=timezone.now() - timedelta(hours=80))
    with django_capture_on_commit_callbacks(execute=False):
        services.dsr_file(type="erasure", subject_id=raw_id())
    page = staff_client.get("/admin/consent/datasubjectrequest/").content.decode()
    assert "OVERDUE" in page
    assert "h left" in page


def test_process_now_serves_open_requests(staff_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        request, _ = services.dsr_file(type="access", subject_id=raw_id())
    response = staff_client.post(
        "/admin/consent/datasubjectrequest/",
        {"action": "process_now", "_selected_action": [str(request.pk)]},
        follow=True,
    )
    assert response.status_code == 200
    assert DataSubjectRequest.objects.get(pk=request.pk).status == "completed"


def test_filing_an_erasure_from_the_subject_page(staff_client, django_capture_on_commit_callbacks):
    subject = raw_id()
    grant(subject)
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(
            "/admin/consent/subject/",
            {"action": "file_erasure", "_selected_action": [subject_pseudonym(subject)]},
            follow=True,
        )
    request = DataSubjectRequest.objects.get(type="erasure")
    assert request.filed_by == "admin:dpo"
    # In its grace period the subject is restricted, and nothing is erased yet.
    assert Subject.objects.get(pk=subject_pseudonym(subject)).restricted_at is not None
    with django_capture_on_commit_callbacks(execute=True):
        services.dsr_process(request_id=request.pk, now=request.not_before)
    assert not Subject.objects.filter(pk=subject_pseudonym(subject)).exists()
    assert not ConsentEvent.objects.exists()


def test_an_erasure_is_cancelled_from_the_requests_page(staff_client, django_capture_on_commit_callbacks):
    subject = raw_id()
    grant(subject)
    with django_capture_on_commit_callbacks(execute=True):
        request, _ = services.dsr_file(type="erasure", subject_id=subject)
    staff_client.post(
        "/admin/consent/datasubjectrequest/",
        {"action": "cancel_erasure", "_selected_action": [str(request.pk)]},
        follow=True,
    )
    request.refresh_from_db()
    assert request.status == "cancelled" and request.cancelled_at is not None
    assert Subject.objects.get(pk=subject_pseudonym(subject)).restricted_at is None
    assert services.dsr_process(request_id=request.pk, now=request.due_at)["outcome"] == "already_done"
    assert ConsentEvent.objects.exists()


def test_a_notice_in_use_is_frozen(staff_client):
    grant(raw_id())
    notice = Notice.objects.get(purpose="personalization", version="1")
    page = staff_client.get(f"/admin/consent/notice/{notice.pk}/change/").content.decode()
    assert 'name="effective_at_0"' not in page and 'name="version"' not in page
    assert 'name="texts-0-body"' not in page
    with pytest.raises(Exception, match="publish a new version"):
        notice.effective_at = timezone.now()
        services.notice_save(notice=notice)


def test_a_new_notice_needs_its_indonesian_text(staff_client):
    form = {
        "purpose": "marketing", "version": "2", "effective_at_0": "2030-01-01", "effective_at_1": "00:00:00",
        "requires_reconsent": "on",
        "texts-TOTAL_FORMS": "1", "texts-INITIAL_FORMS": "0", "texts-MIN_NUM_FORMS": "1", "texts-MAX_NUM_FORMS": "1000",
        "texts-0-language": "en", "texts-0-title": "Marketing", "texts-0-body": "English only.",
    }
    response = staff_client.post("/admin/consent/notice/add/", form)
    assert response.status_code == 200 and "Bahasa Indonesia" in response.content.decode()
    assert not Notice.objects.filter(purpose="marketing", version="2").exists()
    form.update({"texts-TOTAL_FORMS": "2", "texts-1-language": "id", "texts-1-title": "Pemasaran",
                 "texts-1-body": "Bahasa Indonesia."})
    response = staff_client.post("/admin/consent/notice/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    notice = Notice.objects.get(purpose="marketing", version="2")
    assert notice.requires_reconsent and set(notice.texts.values_list("language", flat=True)) == {"en", "id"}


def test_editing_a_purpose_goes_through_the_service(staff_client):
    form = {"name": "Marketing messages", "description": "", "retention_days": "400", "consent_validity_days": "",
            "involves_profiling": "on",
            "notices-TOTAL_FORMS": "0", "notices-INITIAL_FORMS": "1", "notices-MIN_NUM_FORMS": "0",
            "notices-MAX_NUM_FORMS": "1000"}
    form["notices-INITIAL_FORMS"] = "0"
    response = staff_client.post("/admin/consent/purpose/marketing/change/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    purpose = Purpose.objects.get(key="marketing")
    assert (purpose.retention_days, purpose.consent_validity_days, purpose.involves_profiling) == (400, None, True)
    # Without an expiry, a new grant never expires.
    assert grant(raw_id(), "marketing").expires_at is None


@pytest.mark.parametrize("model", [ConsentEvent, ErasureRecord, ConsentTally])
def test_append_only_records_cannot_be_deleted_in_the_admin(staff_client, model):
    grant(raw_id())
    now = timezone.now()
    ErasureRecord.objects.create(received_at=now, due_at=now, completed_at=now, rows_erased=0)
    row = model.objects.get()
    url = f"/admin/consent/{model._meta.model_name}/"
    changelist = staff_client.get(url)
    assert changelist.status_code == 200 and "delete_selected" not in changelist.content.decode()
    assert staff_client.post(f"{url}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert staff_client.post(url, {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"}).status_code != 500
    assert model.objects.filter(pk=row.pk).exists()
