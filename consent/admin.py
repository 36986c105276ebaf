"""Admin for PMs and the data protection officer.

Subjects are found by the marketplace's user id: the search box posts it (a
form body, never a URL, so no access log or browser history holds it), the
admin hashes it with the pseudonym key and shows the subject's pseudonym,
which is what the list then filters on. The raw id is never stored or shown.
The ledger is read-only; requests show their due time and status. Writes go
through the services.
"""

import re
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.forms.models import BaseInlineFormSet
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from consent.models import (
    SUBJECT_RECORD,
    ConsentEvent,
    ConsentTally,
    CurrentConsent,
    DataSubjectRequest,
    ErasureRecord,
    Notice,
    NoticeText,
    Purpose,
    Subject,
)
from consent.pseudonyms import PSEUDONYM_LENGTH, subject_id_problem, subject_pseudonym
from consent.services.dsr import (
    RequestNotCancellable,
    dsr_cancel,
    dsr_enqueue,
    dsr_file,
    subject_processing_resume,
)
from consent.services.notices import (
    notice_in_use,
    notice_save,
    notice_text_save,
    notice_texts_check,
    purpose_save,
)

_PSEUDONYM = re.compile(rf"[0-9a-f]{{{PSEUDONYM_LENGTH}}}")


class PseudonymSearchMixin:
    """Search by the marketplace's raw user id (posted, hashed here) or by pseudonym.

    The changelist's search box is a POST form to ``…/find/``, which turns the
    id into its pseudonym and redirects to the list filtered by it (``?q=``
    holds pseudonyms only; a raw id there finds nothing and says why).
    """

    pseudonym_lookup = "pk"
    search_help_text = "The marketplace's user id (sent in the form, hashed before searching) or a pseudonym."
    change_list_template = "admin/consent/pseudonym_change_list.html"

    def get_search_fields(self, request):
        return ("pseudonym-search",)  # non-empty, so the admin shows the search box

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip().lower()
        if not term:
            return queryset, False
        if not _PSEUDONYM.fullmatch(term):
            self.message_user(
                request,
                "Search by the search box: it sends the marketplace's id in the form, never in the address.",
                messages.WARNING,
            )
            return queryset.none(), False
        return queryset.filter(**{self.pseudonym_lookup: term}), False

    def get_urls(self):
        opts = self.model._meta
        find = path(
            "find/",
            self.admin_site.admin_view(self.pseudonym_find_view),
            name=f"{opts.app_label}_{opts.model_name}_find",
        )
        return [find, *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        opts = self.model._meta
        extra_context = {
            **(extra_context or {}),
            "pseudonym_find_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_find"),
            "pseudonym_search_term": request.GET.get("q", ""),
        }
        return super().changelist_view(request, extra_context)

    @method_decorator(require_POST)
    def pseudonym_find_view(self, request):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        opts = self.model._meta
        term = request.POST.get("subject_id", "").strip()
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        if not term:
            return HttpResponseRedirect(changelist)
        if _PSEUDONYM.fullmatch(term.lower()):
            pseudonym = term.lower()
        elif subject_id_problem(term) is None:
            pseudonym = subject_pseudonym(term)
        else:
            self.message_user(request, "That is neither a marketplace user id nor a pseudonym.", messages.ERROR)
            return HttpResponseRedirect(changelist)
        return HttpResponseRedirect(f"{changelist}?{urlencode({'q': pseudonym})}")


class ReadOnlyAdminMixin:
    """For records nobody edits here: the append-only ledger, erasure records, tallies.

    No add, no change, and no delete (the ledger loses rows only to an erasure or
    the retention purge, through their services; an erasure record is the proof of
    compliance).
    """

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class CurrentConsentInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = CurrentConsent
    fields = ("purpose", "granted", "notice", "changed_at", "expires_at", "last_event_id")
    readonly_fields = fields
    extra = 0


@admin.register(Subject)
class SubjectAdmin(PseudonymSearchMixin, admin.ModelAdmin):
    list_display = (
        "short_pseudonym",
        "age_band",
        "province",
        "platform",
        "first_seen",
        "restricted",
        "objected",
    )
    list_filter = (
        "platform",
        "age_band",
        ("restricted_at", admin.EmptyFieldListFilter),
        ("objected_at", admin.EmptyFieldListFilter),
    )
    readonly_fields = SUBJECT_RECORD
    inlines = [CurrentConsentInline]
    actions = ["file_access", "file_erasure", "lift_restriction", "lift_objection"]
    date_hierarchy = "first_seen"

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # erasure goes through a data subject request, and leaves its record

    def has_change_permission(self, request, obj=None):
        return False  # attributes come from the marketplace; rights go through requests

    def has_dsr_permission(self, request):
        return request.user.has_perm("consent.change_datasubjectrequest")

    @admin.display(description="Pseudonym", ordering="pseudonym")
    def short_pseudonym(self, obj):
        return f"{obj.pseudonym[:16]}…"

    @admin.display(boolean=True, ordering="restricted_at")
    def restricted(self, obj):
        return obj.restricted_at is not None

    @admin.display(boolean=True, ordering="objected_at")
    def objected(self, obj):
        return obj.objected_at is not None

    def _file(self, request, queryset, type_):
        filed = 0
        for subject in queryset:
            _, created = dsr_file(
                type=type_, pseudonym=subject.pk, filed_by=f"admin:{request.user.get_username()}"
            )
            filed += created
        self.message_user(request, f"Filed {filed} {type_} request(s).", messages.SUCCESS)

    @admin.action(description="File an access request (export)", permissions=["dsr"])
    def file_access(self, request, queryset):
        self._file(request, queryset, DataSubjectRequest.Type.ACCESS)

    @admin.action(description="File an erasure request", permissions=["dsr"])
    def file_erasure(self, request, queryset):
        self._file(request, queryset, DataSubjectRequest.Type.ERASURE)

    @admin.action(description="Lift the restriction of processing", permissions=["dsr"])
    def lift_restriction(self, request, queryset):
        for subject in queryset:
            subject_processing_resume(pseudonym=subject.pk, restriction=True)
        self.message_user(request, "Restriction lifted.", messages.SUCCESS)

    @admin.action(description="Lift the objection to profiling", permissions=["dsr"])
    def lift_objection(self, request, queryset):
        for subject in queryset:
            subject_processing_resume(pseudonym=subject.pk, objection=True)
        self.message_user(request, "Objection lifted.", messages.SUCCESS)


class NoticeInline(admin.TabularInline):
    model = Notice
    fields = ("version", "effective_at", "requires_reconsent")
    readonly_fields = fields
    extra = 0
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Purpose)
class PurposeAdmin(admin.ModelAdmin):
    list_display = (
        "key",
        "name",
        "retention_days",
        "consent_validity_days",
        "sensitive",
        "involves_profiling",
    )
    inlines = [NoticeInline]

    def get_readonly_fields(self, request, obj=None):
        return ("key",) if obj is not None else ()

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        purpose_save(purpose=obj)


class NoticeTextFormSet(BaseInlineFormSet):
    """A notice's texts; which languages it needs is the notice service's rule."""

    def clean(self):
        super().clean()
        languages = {
            form.cleaned_data.get("language")
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE")
        }
        # The service's ValidationError becomes the formset's error, shown above the texts.
        notice_texts_check(notice=self.instance, languages=languages)


class NoticeTextInline(admin.StackedInline):
    model = NoticeText
    formset = NoticeTextFormSet
    extra = 0
    min_num = 1
    can_delete = False

    def has_change_permission(self, request, obj=None):
        return (
            obj is None or not notice_in_use(notice=obj)
        ) and super().has_change_permission(request, obj)


@admin.register(Notice)
class NoticeAdmin(admin.ModelAdmin):
    list_display = ("purpose", "version", "effective_at", "requires_reconsent", "languages")
    list_filter = ("purpose", "requires_reconsent")
    inlines = [NoticeTextInline]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("texts")

    @admin.display(description="Languages")
    def languages(self, obj):
        return ", ".join(text.language for text in obj.texts.all())

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and notice_in_use(notice=obj):
            return ("purpose", "version", "effective_at")
        return ()

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        notice_save(notice=obj)

    def save_formset(self, request, form, formset, change):
        texts = formset.save(commit=False)
        with transaction.atomic():
            for text in texts:
                notice_text_save(text=text)


@admin.register(ConsentEvent)
class ConsentEventAdmin(PseudonymSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """The ledger, read-only: the proof of every consent decision."""

    pseudonym_lookup = "subject_id"
    list_display = (
        "recorded_at",
        "short_subject",
        "purpose",
        "action",
        "notice",
        "source_prompt",
        "source_channel",
        "source_experiment",
        "source_arm",
    )
    list_filter = ("purpose", "action", "source_prompt", "source_channel", "language")
    list_select_related = ("purpose", "notice")
    date_hierarchy = "recorded_at"
    show_full_result_count = False

    @admin.display(description="Subject", ordering="subject_id")
    def short_subject(self, obj):
        return f"{obj.subject_id[:16]}…"


@admin.register(DataSubjectRequest)
class DataSubjectRequestAdmin(PseudonymSearchMixin, admin.ModelAdmin):
    pseudonym_lookup = "subject_pseudonym"
    list_display = (
        "id",
        "type",
        "status",
        "received_at",
        "due_at",
        "due_state",
        "not_before",
        "completed_at",
        "filed_by",
        "attempts",
    )
    list_filter = ("type", "status")
    readonly_fields = (
        "id",
        "subject_pseudonym",
        "type",
        "status",
        "received_at",
        "due_at",
        "not_before",
        "completed_at",
        "cancelled_at",
        "filed_by",
        "attempts",
        "last_error",
        "export_cleared_at",
        "export",
    )
    date_hierarchy = "received_at"
    actions = ["process_now", "cancel_erasure"]

    class Media:
        css = {"all": ["consent/admin.css"]}

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Due")
    def due_state(self, obj):
        if obj.status == DataSubjectRequest.Status.CANCELLED:
            return "cancelled"
        if obj.status == DataSubjectRequest.Status.COMPLETED:
            on_time = obj.completed_at <= obj.due_at
            return format_html(
                '<span class="{}">{}</span>',
                "dsr-on-time" if on_time else "dsr-late",
                "on time" if on_time else "late",
            )
        left = obj.due_at - timezone.now()
        if left.total_seconds() < 0:
            return format_html('<strong class="dsr-overdue">{}</strong>', "OVERDUE")
        return f"{left.days * 24 + left.seconds // 3600} h left"

    @admin.action(description="Process the selected requests now", permissions=["change"])
    def process_now(self, request, queryset):
        open_ids = list(
            queryset.filter(status=DataSubjectRequest.Status.RECEIVED).values_list("id", flat=True)
        )
        for request_id in open_ids:
            dsr_enqueue(request_id=request_id)
        self.message_user(
            request,
            f"Enqueued {len(open_ids)} request(s); an erasure in its grace period waits until it is over.",
            messages.SUCCESS,
        )

    @admin.action(description="Cancel the selected erasures (before they run)", permissions=["change"])
    def cancel_erasure(self, request, queryset):
        cancelled = 0
        for dsr in queryset.filter(type=DataSubjectRequest.Type.ERASURE):
            try:
                dsr_cancel(
                    request_id=dsr.pk,
                    pseudonym=dsr.subject_pseudonym,
                    cancelled_by=f"admin:{request.user.get_username()}",
                )
            except (DataSubjectRequest.DoesNotExist, RequestNotCancellable):
                continue
            cancelled += 1
        self.message_user(request, f"Cancelled {cancelled} erasure request(s).", messages.SUCCESS)


@admin.register(ErasureRecord)
class ErasureRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "completed_at",
        "received_at",
        "due_at",
        "on_time",
        "rows_erased",
        "cache_keys_erased",
        "found_nothing",
    )
    list_filter = ("found_nothing",)
    readonly_fields = (
        "received_at",
        "due_at",
        "completed_at",
        "rows_erased",
        "rows_by_source",
        "cache_keys_erased",
        "found_nothing",
    )

    @admin.display(boolean=True)
    def on_time(self, obj):
        return obj.on_time


@admin.register(ConsentTally)
class ConsentTallyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("day", "purpose", "action", "count")
    list_filter = ("purpose", "action")
    date_hierarchy = "day"
