"""The experiments admin, for product managers: design, launch, pause and conclude experiments; read the records.

Thin over ``experiments.services``: lifecycle actions, saves and the arm and
guardrail inlines call services; exposures, outcome events and results are
records, read-only and never deleted here.
"""

import json
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import model_ngettext
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count
from django.forms.models import BaseInlineFormSet
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from experiments import admin_api_keys, selectors, services  # noqa: F401 (admin_api_keys registers the key admin)
from experiments.admin_forms import NewPhaseForm, ShipForm, TargetingField, constraint_message
from experiments.disclosure import segments_suppress
from experiments.models import (
    Arm,
    DataSource,
    Experiment,
    ExperimentAlert,
    Exposure,
    Guardrail,
    Holdout,
    Layer,
    OutcomeEvent,
    PrivacyTreatment,
    ResultSnapshot,
    Rollout,
    Surface,
    default_layer_id,
)
from experiments.privacy_ladder import arms_privacy_order
from experiments.targeting import TARGETING_ATTRIBUTES
from experiments.validation import experiment_decision_problems

ONE_CONTROL = "arm_one_control_per_experiment"


class ServiceInlineFormSet(BaseInlineFormSet):
    """An inline whose rows are written by services (``create``/``update``/``remove``), not ``form.save()``.

    The admin calls ``formset.save()``; Django's bookkeeping (the change
    message's new, changed and deleted objects) keeps working because the
    hooks return what the services wrote.
    """

    def _fields(self, form) -> dict:
        # The inline's own fields; the experiment (the formset's foreign key) is passed by the hooks.
        return {name: form.cleaned_data.get(name) for name in form._meta.fields if name != self.fk.name}

    def create(self, **fields):
        raise NotImplementedError

    def update(self, obj, **fields):
        raise NotImplementedError

    def remove(self, obj) -> None:
        raise NotImplementedError

    def save_new(self, form, commit=True):
        if not commit:
            return super().save_new(form, commit=False)
        return self.create(**self._fields(form))

    def save_existing(self, form, obj, commit=True):
        if not commit:
            return super().save_existing(form, obj, commit=False)
        return self.update(obj, **self._fields(form))

    def delete_existing(self, obj, commit=True):
        if commit:
            self.remove(obj)


class ArmFormSet(ServiceInlineFormSet):
    """The arms, checked together (one control, the privacy order) before anything is saved."""

    def _construct_form(self, i, **kwargs):
        form = super()._construct_form(i, **kwargs)
        # One control among the submitted arms, not among the stored ones: checked in clean().
        form.instance.constraints_checked_by_caller = frozenset({ONE_CONTROL})
        return form

    def _live_forms(self):
        return [form for form in self.forms
                if form.cleaned_data and not (self.can_delete and form.cleaned_data.get("DELETE"))]

    def clean(self):
        super().clean()
        controls = [form for form in self._live_forms() if form.cleaned_data.get("is_control")]
        for form in controls[1:]:
            form.add_error("is_control", constraint_message(Arm, ONE_CONTROL))
        experiment = self.instance
        if not experiment.privacy_order:
            return
        if self.can_delete and any(form.cleaned_data.get("DELETE") for form in self.forms if form.cleaned_data):
            keys = [form.cleaned_data["key"] for form in self.forms
                    if form.cleaned_data and not form.cleaned_data.get("DELETE") and form.cleaned_data.get("key")]
        elif any(form.has_changed() for form in self.forms):
            keys = [form.cleaned_data["key"] for form in self.forms if form.cleaned_data.get("key")]
        else:
            keys = list(experiment.arms.values_list("key", flat=True)) if experiment.pk else []
        problems = experiment_decision_problems(experiment=experiment, arm_keys=keys).get("privacy_order")
        if problems:
            raise ValidationError(["Privacy order: " + problem for problem in problems])

    def create(self, **fields) -> Arm:
        return services.arm_create(experiment=self.instance, **fields)

    def update(self, obj: Arm, **fields) -> Arm:
        # Moving the control from one arm to another: the service unticks the old one first.
        return services.arm_update(arm=obj, **fields)

    def remove(self, obj: Arm) -> None:
        services.arm_delete(arm=obj)


def _accessible_name(formfield, name: str):
    """Give a widget that has no visible label of its own (a table cell, a split date/time) a name."""
    if formfield is None:
        return formfield
    widget = formfield.widget
    # The related-object wrapper (add/change links) holds the real widget.
    widget = getattr(widget, "widget", widget)
    if isinstance(widget, forms.SplitDateTimeWidget):
        widget.widgets[0].attrs["aria-label"] = f"{name}: date"
        widget.widgets[1].attrs["aria-label"] = f"{name}: time"
    else:
        widget.attrs["aria-label"] = name
    return formfield


class DraftOnlyInline(admin.TabularInline):
    """Rows that are frozen once the experiment has started (a new phase: see services)."""

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        # A tabular row's inputs sit under column headers, not labels: name each one.
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        return _accessible_name(formfield, f"{self.model._meta.verbose_name} {db_field.verbose_name}".capitalize())

    def _editable(self, obj) -> bool:
        return obj is None or obj.is_editable

    def has_add_permission(self, request, obj=None):
        return self._editable(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return self._editable(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self._editable(obj) and super().has_delete_permission(request, obj)


class GuardrailFormSet(ServiceInlineFormSet):
    def create(self, **fields) -> Guardrail:
        return services.guardrail_create(experiment=self.instance, **fields)

    def update(self, obj: Guardrail, **fields) -> Guardrail:
        return services.guardrail_update(guardrail=obj, **fields)

    def remove(self, obj: Guardrail) -> None:
        services.guardrail_delete(guardrail=obj)


class GuardrailInline(DraftOnlyInline):
    # Part of the analysis: frozen with services.ANALYSIS_FIELDS once the experiment has started.
    model = Guardrail
    formset = GuardrailFormSet
    extra = 0
    fields = ["metric", "margin", "relative", "plan_baseline", "plan_standard_deviation"]


class ArmInline(DraftOnlyInline):
    # Arms and weights are frozen once an experiment has run (a new phase changes the weights).
    model = Arm
    formset = ArmFormSet
    extra = 0
    min_num = 2
    fields = ["key", "treatment", "weight", "is_control"]
    # A plain select (the treatments are few): select2's autocomplete has no accessible name.


def _findings_html(findings) -> str:
    if not findings:
        return "No findings."
    return format_html(
        "<ul>{}</ul>",
        format_html_join(
            "",
            "<li><strong>{}</strong> {} <em>({})</em></li>",
            ((finding.severity.upper(), finding.message, finding.reference) for finding in findings),
        ),
    )


def _lifecycle_action(action: str, description: str):
    def run(modeladmin, request, queryset):
        done = 0
        for experiment in queryset:
            try:
                services.experiment_transition(experiment=experiment, action=action)
            except ValidationError as exc:
                modeladmin.message_user(request, f"{experiment.key}: {' '.join(exc.messages)}", messages.ERROR)
                continue
            modeladmin.log_change(request, experiment, f"Lifecycle: {action}")
            done += 1
        if done:
            modeladmin.message_user(
                request, f"{description}: {done} {model_ngettext(modeladmin.opts, done)}.", messages.SUCCESS
            )

    run.__name__ = f"action_{action}"
    run.short_description = description
    run.allowed_permissions = ("lifecycle",)  # ExperimentAdmin.has_lifecycle_permission
    return run


LIFECYCLE_DONE = {"pause": "paused", "resume": "resumed", "stop": "stopped", "conclude": "concluded"}


def _not_deletable_message(experiments) -> str:
    listed = ", ".join(f"{e.key} ({e.status})" for e in experiments)
    return (
        f"Only draft experiments can be deleted; not {listed}. A started experiment keeps its exposures and "
        "results for the record: stop it instead (and conclude it when its verdict is in)."
    )


# Permissions behind the admin's actions (experiments.models.Experiment.Meta.permissions).
RUN_EXPERIMENT = "experiments.run_experiment"
COMPUTE_RESULTS = "experiments.compute_results"
ACKNOWLEDGE_ALERT = "experiments.acknowledge_experimentalert"


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "status", "layer", "coverage", "owner", "started_at", "exposure_count"]
    list_filter = ["status", "layer", "owner"]
    search_fields = ["key", "name", "hypothesis"]
    inlines = [ArmInline, GuardrailInline]
    filter_horizontal = ["viewers"]
    readonly_fields = [
        "status", "phase", "salt", "layer_ranges", "started_at", "ended_at", "created_at", "updated_at", "compliance_findings",
        "privacy_ladder", "planned_days", "plan_summary",
        "compliance_override_approved_by", "compliance_override_approved_at",
    ]
    fieldsets = [
        (None, {"fields": ["key", "name", "hypothesis", "owner", "viewers", "status", "phase"]}),
        (
            "Traffic",
            {
                "fields": [
                    "surface", "layer", "layer_start", "layer_end", "layer_ranges", "coverage", "salt", "targeting",
                ],
                "description": "A layer splits traffic between experiments that must not share subjects: each "
                "experiment of a layer owns a range of [0, 1) that no other running experiment of the layer "
                "overlaps, so a subject is in at most one of them (the range's width is its share of the layer's "
                "traffic). Experiments in different layers are independent and may share subjects. Coverage is "
                "the share of the range's traffic that takes part; it may only grow once started.",
            },
        ),
        ("Schedule", {"fields": ["scheduled_start", "scheduled_end", "started_at", "ended_at"]}),
        (
            "Analysis and decision",
            {
                "fields": [
                    "primary_metric", "alpha", "decision_rule", "decision_margin", "testing_mode",
                    "minimum_runtime_days", "privacy_order", "privacy_ladder", "gmv_cap_percentile",
                    "pre_exposure_days", "data_source", "analysis_engine", "prior_mean", "prior_variance",
                    "suspicious_uplift",
                ],
                "description": "The rule decides the verdict (docs/statistics.md §9). Guardrails are below; each "
                "must pass its one-sided non-inferiority test for an arm to ship.",
            },
        ),
        (
            "Plan",
            {
                "fields": [
                    "plan_daily_subjects", "plan_baseline", "plan_standard_deviation", "plan_minimum_effect",
                    "plan_power", "planned_subjects_per_arm", "planned_days", "plan_summary",
                ],
                "description": "Fill in the daily traffic and the primary metric's baseline (and each guardrail's "
                "baseline in its row below): on save the planner sizes the experiment for the whole rule and sets "
                "the planned subjects per arm and days. Or set the planned subjects per arm yourself.",
            },
        ),
        (
            "Compliance",
            {
                "fields": [
                    "compliance_findings", "compliance_override_reason",
                    "compliance_override_approved_by", "compliance_override_approved_at",
                ]
            },
        ),
        ("History", {"fields": ["created_at", "updated_at"]}),
    ]
    change_form_template = "admin/experiments/experiment/change_form.html"
    actions = [
        "delete_selected",
        "action_start",
        _lifecycle_action("pause", "Pause"),
        _lifecycle_action("resume", "Resume"),
        _lifecycle_action("stop", "Stop"),
        _lifecycle_action("conclude", "Conclude"),
        "action_new_phase",
        "action_ship",
        "compute_results_now",
        "approve_compliance_override",
    ]

    def has_lifecycle_permission(self, request) -> bool:
        return request.user.has_perm(RUN_EXPERIMENT)

    # --- deleting: drafts only -------------------------------------------------------------

    def has_delete_permission(self, request, obj=None):
        # A started experiment has exposures and results: it is stopped, never deleted.
        if obj is not None and obj.status != Experiment.Status.DRAFT:
            return False
        return super().has_delete_permission(request, obj)

    def delete_view(self, request, object_id, extra_context=None):
        experiment = self.get_object(request, object_id)
        if experiment is not None and experiment.status != Experiment.Status.DRAFT:
            self.message_user(request, _not_deletable_message([experiment]), messages.ERROR)
            return redirect("admin:experiments_experiment_change", experiment.pk)
        return super().delete_view(request, object_id, extra_context)

    @admin.action(description="Delete selected draft experiments", permissions=["delete"])
    def delete_selected(self, request, queryset):
        started = list(queryset.exclude(status=Experiment.Status.DRAFT).order_by("key"))
        if started:
            self.message_user(request, _not_deletable_message(started), messages.ERROR)
            return None
        return django_delete_selected(self, request, queryset)

    # --- starting: a confirmation with the compliance review and the plan ----------------------

    @admin.action(description="Start…", permissions=["lifecycle"])
    def action_start(self, request, queryset):
        experiments = list(queryset.select_related("layer"))
        choice = request.POST.get("confirm")
        if choice in ("start", "start_now", "schedule"):
            for experiment in experiments:
                self._start(request, experiment, choice)
            return None
        return self._start_confirmation(
            request, experiments, form_url=reverse("admin:experiments_experiment_changelist"),
            hidden=[("action", "action_start"), *((ACTION_CHECKBOX_NAME, e.pk) for e in experiments)],
        )

    def start_view(self, request, object_id):
        experiment = self._lifecycle_object(request, object_id)
        if request.method == "POST" and request.POST.get("confirm") in ("start", "start_now", "schedule"):
            self._start(request, experiment, request.POST["confirm"])
            return redirect("admin:experiments_experiment_change", experiment.pk)
        return self._start_confirmation(
            request, [experiment], form_url=reverse("admin:experiments_experiment_start", args=[experiment.pk]),
            hidden=[],
        )

    def _start(self, request, experiment, choice: str) -> None:
        """Start it, or, scheduled for later and not "start now", leave it to the scheduler."""
        if choice != "start_now" and services.experiment_scheduled_later(experiment=experiment):
            problems = services.experiment_start_problems(experiment=experiment)
            when = f"{timezone.localtime(experiment.scheduled_start):%Y-%m-%d %H:%M %Z}"
            if problems:
                self.message_user(request, f"{experiment.key}: scheduled for {when}, but it could not start now: "
                                  + " ".join(problems), messages.WARNING)
            else:
                self.message_user(request, f"{experiment.key}: scheduled; the scheduler starts it at {when}.",
                                  messages.SUCCESS)
            self.log_change(request, experiment, f"Lifecycle: start scheduled for {when}")
            return
        try:
            services.experiment_transition(experiment=experiment, action="start", ignore_schedule=choice == "start_now")
        except ValidationError as exc:
            self.message_user(request, f"{experiment.key}: {' '.join(exc.messages)}", messages.ERROR)
            return
        self.log_change(request, experiment, "Lifecycle: start")
        self.message_user(request, f"{experiment.key}: started.", messages.SUCCESS)

    def _start_confirmation(self, request, experiments, *, form_url: str, hidden):
        items = []
        for experiment in experiments:
            items.append({
                "experiment": experiment,
                "arms": experiment.arms.select_related("treatment").order_by("id"),
                "findings": self.compliance_findings(experiment),
                "plan": self.plan_summary(experiment),
                "problems": services.experiment_start_problems(experiment=experiment)
                if experiment.status == Experiment.Status.DRAFT else [f"It is {experiment.status}: only a draft starts."],
                "scheduled_later": services.experiment_scheduled_later(experiment=experiment),
            })
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Start experiments?" if len(items) > 1 else f"Start {experiments[0].name}?",
            "items": items,
            "form_url": form_url,
            "hidden": hidden,
            "any_ready": any(not item["problems"] for item in items),
            "any_scheduled": any(item["scheduled_later"] for item in items),
        }
        return TemplateResponse(request, "admin/experiments/experiment/start_confirmation.html", context)

    # --- the lifecycle's other buttons and a new phase ------------------------------------------

    def _lifecycle_object(self, request, object_id):
        if not self.has_lifecycle_permission(request):
            raise PermissionDenied
        experiment = self.get_object(request, object_id)
        if experiment is None:
            raise Http404("No such experiment.")
        return experiment

    def lifecycle_view(self, request, object_id, action):
        experiment = self._lifecycle_object(request, object_id)
        if request.method != "POST" or action not in ("pause", "resume", "stop", "conclude"):
            return redirect("admin:experiments_experiment_change", experiment.pk)
        try:
            services.experiment_transition(experiment=experiment, action=action)
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
        else:
            self.log_change(request, experiment, f"Lifecycle: {action}")
            self.message_user(request, f"{experiment.key}: {LIFECYCLE_DONE[action]}.", messages.SUCCESS)
        return redirect("admin:experiments_experiment_change", experiment.pk)

    def new_phase_view(self, request, object_id):
        experiment = self._lifecycle_object(request, object_id)
        arms = list(experiment.arms.order_by("id"))
        guardrails = list(experiment.guardrails.order_by("id"))
        form = NewPhaseForm(request.POST or None, instance=experiment, arms=arms, guardrails=guardrails)
        if request.method == "POST" and form.is_valid():
            before = {name: form[name].initial for name in form.changed_data}
            try:
                services.experiment_new_phase(
                    experiment=experiment, weights=form.weights(), analysis=form.analysis_changes(),
                    guardrail_margins=form.guardrail_margins(),
                )
            except ValidationError as exc:
                form.add_service_errors(exc)
            else:
                experiment.refresh_from_db()
                self.log_change(request, experiment, form.history_message(experiment.phase, before))
                self.message_user(
                    request, f"{experiment.key}: phase {experiment.phase} set up (new salt; exposed subjects keep "
                    "their arm). Resume the experiment to run it.", messages.SUCCESS,
                )
                return redirect("admin:experiments_experiment_change", experiment.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": experiment,
            "title": f"New phase of {experiment.name}",
            "form": form,
            "weight_fields": [form[name] for name in form.weight_names],
            "analysis_fields": [form[name] for name in form.analysis_names],
            "margin_fields": [form[name] for name in form.margin_names],
            "paused": experiment.status == Experiment.Status.PAUSED,
        }
        return TemplateResponse(request, "admin/experiments/experiment/new_phase.html", context)

    def ship_view(self, request, object_id):
        experiment = self._lifecycle_object(request, object_id)
        verdict = experiment.decisions.filter(phase=experiment.phase).first()
        shipped_arm = verdict.arm if verdict is not None and verdict.outcome == "ship" else None
        form = ShipForm(request.POST or None, arms=list(experiment.arms.order_by("id")), initial_arm=shipped_arm)
        if request.method == "POST" and form.is_valid():
            try:
                rollout = services.experiment_ship(
                    experiment=experiment, arm_key=form.cleaned_data["arm"], reason=form.cleaned_data["reason"],
                    steps=form.cleaned_data["steps"], hold_hours=form.cleaned_data["hold_hours"], actor=request.user,
                )
            except ValidationError as exc:
                form.add_service_errors(exc)
            else:
                self.log_change(request, experiment, f"Shipped {rollout.arm.key} to {rollout.surface.key}: rollout "
                                f"{rollout.pk} ({', '.join(f'{s}%' for s in rollout.steps)}). {rollout.reason}")
                self.message_user(request, f"{experiment.key}: rollout of {rollout.arm.key} on {rollout.surface.key} "
                                  f"started at {rollout.percent}%.", messages.SUCCESS)
                return redirect("admin:experiments_experiment_change", experiment.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": experiment,
            "title": f"Ship an arm of {experiment.name}",
            "form": form,
            "verdict": verdict,
        }
        return TemplateResponse(request, "admin/experiments/experiment/ship.html", context)

    @admin.action(description="Ship… (roll an arm out on the surface)", permissions=["lifecycle"])
    def action_ship(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Choose one experiment to ship.", messages.WARNING)
            return None
        return redirect("admin:experiments_experiment_ship", queryset.get().pk)

    @admin.action(description="New phase… (new weights and salt)", permissions=["lifecycle"])
    def action_new_phase(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Choose one experiment for a new phase.", messages.WARNING)
            return None
        return redirect("admin:experiments_experiment_new_phase", queryset.get().pk)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/start/", view(self.start_view), name="experiments_experiment_start"),
            path("<path:object_id>/new-phase/", view(self.new_phase_view), name="experiments_experiment_new_phase"),
            path("<path:object_id>/ship/", view(self.ship_view), name="experiments_experiment_ship"),
            path("<path:object_id>/lifecycle/<slug:action>/", view(self.lifecycle_view),
                 name="experiments_experiment_lifecycle"),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.pk is not None:
            context.update({
                "can_run": self.has_lifecycle_permission(request),
                "dashboard_url": reverse("dashboard:experiment-detail", args=[obj.key]),
                "not_deletable": None if obj.status == Experiment.Status.DRAFT else _not_deletable_message([obj]),
            })
        return super().render_change_form(request, context, add, change, form_url, obj)

    def has_compute_permission(self, request) -> bool:
        return request.user.has_perm(COMPUTE_RESULTS)

    def has_approve_override_permission(self, request) -> bool:
        return request.user.has_perm(services.APPROVE_OVERRIDE)

    @admin.action(
        description="Approve the compliance override (data protection officer)", permissions=["approve_override"]
    )
    def approve_compliance_override(self, request, queryset):
        for experiment in queryset:
            try:
                services.experiment_override_approve(experiment=experiment, approver=request.user)
            except ValidationError as exc:
                self.message_user(request, f"{experiment.key}: {' '.join(exc.messages)}", messages.ERROR)
                continue
            self.log_change(request, experiment, "Compliance override approved")
            self.message_user(request, f"{experiment.key}: compliance override approved.", messages.SUCCESS)

    @admin.action(description="Compute results now", permissions=["compute"])
    def compute_results_now(self, request, queryset):
        from experiments.results import results_enqueue

        count = results_enqueue(experiment_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Results computation queued for {count} experiment(s).", messages.SUCCESS)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_exposures=Count("exposures"))

    @admin.display(description="Compliance review of the arms' treatments")
    def compliance_findings(self, obj):
        if obj is None or obj.pk is None:
            return "Save the experiment with its arms to see the review."
        per_arm = selectors.experiment_compliance_findings(experiment=obj)
        return format_html_join(
            "", "<p>Arm <code>{}</code>:</p>{}", ((key, _findings_html(f)) for key, f in per_arm.items())
        )

    @admin.display(description="Privacy order by the ladder")
    def privacy_ladder(self, obj):
        if obj is None or obj.pk is None:
            return "Save the experiment with its arms to see the order."
        order = arms_privacy_order(obj.arms.select_related("treatment").order_by("id"))
        used = "used" if not obj.privacy_order else "overridden by the privacy order above"
        return f"{' > '.join(order)} (most private first; {used})"

    @admin.display(description="Plan")
    def plan_summary(self, obj):
        if obj is None or obj.pk is None:
            return "Save the experiment with its arms and guardrails to see the plan."
        try:
            plan = selectors.experiment_decision_plan(experiment=obj)
        except selectors.PlanIncomplete as problem:
            return str(problem)
        start = obj.started_at or obj.scheduled_start or timezone.now()
        tests = format_html_join(
            "", "<li>{}: {} (alpha {}), power {}</li>",
            ((test.kind.replace("noninferiority", "non-inferiority"), test.metric if test.metric != "primary"
              else obj.get_primary_metric_display(), f"{test.alternative}, {test.alpha:.3g}", f"{test.power:.0%}")
             for test in plan.tests),
        )
        return format_html(
            "<p>{} subjects per arm ({} in all) in {} days at {} a day: the rule ships a truly good arm with "
            "probability {}. Expected end: {}.</p><ul>{}</ul>",
            f"{plan.planned_subjects_per_arm:,}", f"{plan.total_subjects:,}", plan.days,
            f"{plan.daily_subjects:,.0f}", f"{plan.power:.0%}", (start + timedelta(days=plan.days)).date().isoformat(),
            tests,
        )

    @admin.display(description="Subjects", ordering="_exposures")
    def exposure_count(self, obj):
        return obj._exposures

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and not obj.is_editable:
            readonly += sorted((services.FROZEN_FIELDS | services.ANALYSIS_FIELDS) - set(readonly))
        return readonly

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)

        class ExperimentForm(form):
            def _post_clean(self):
                # After the instance carries the submitted values, ask the service.
                super()._post_clean()
                try:
                    services.experiment_validate_change(experiment=self.instance, changed=self.changed_data)
                except ValidationError as exc:
                    self.add_error(None, exc)
                layer_fields = {"layer", "layer_start", "layer_end"}
                if self.instance.is_editable and layer_fields <= set(self.fields) and not layer_fields & set(self.errors):
                    try:
                        services.experiment_validate_layer_range(experiment=self.instance)
                    except ValidationError as exc:
                        self.add_error(None, exc)

        return ExperimentForm

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "targeting":
            return TargetingField(label="Targeting", help_text="Who may be assigned. An attribute left empty is not "
                                  "targeted; nothing chosen anywhere: everyone.")
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.get_internal_type() == "DateTimeField":
            # The admin's split date and time inputs have no label each: "Scheduled start: date".
            formfield = _accessible_name(formfield, str(db_field.verbose_name).capitalize())
        return formfield

    def get_changeform_initial_data(self, request):
        initial = {"owner": request.user.pk}
        # Offer the first free range of the default layer (the defaults [0, 1) clash with any running experiment).
        free = selectors.layer_free_ranges(selectors.layer_claims(layer_id=default_layer_id()))
        if free:
            initial.update(layer_start=free[0][0], layer_end=free[0][1])
        return {**initial, **super().get_changeform_initial_data(request)}

    @admin.display(description="Ranges in use")
    def layer_ranges(self, obj):
        rows = []
        for layer in Layer.objects.order_by("name"):
            claims = selectors.layer_claims(layer_id=layer.pk, exclude_experiment_id=getattr(obj, "pk", None))
            free = selectors.layer_free_ranges(claims)
            taken = "; ".join(f"{selectors.format_range(c.start, c.end)} by {c.experiment} ({c.status})" for c in claims)
            rows.append((layer.name, layer.key, taken or "nothing",
                         ", ".join(selectors.format_range(*r) for r in free) or "nothing: use another layer"))
        return format_html(
            "<ul class=\"layer-ranges\">{}</ul><p>{}</p>",
            format_html_join("", "<li>{} (<code>{}</code>): taken {}; free {}</li>", rows),
            format_html('<a href="{}">Add a new layer</a> for an experiment that may share subjects with the '
                        "others.", reverse("admin:experiments_layer_add")),
        )

    def save_model(self, request, obj, form, change):
        services.experiment_save(experiment=obj, changed=form.changed_data)
        stored = form.initial.get("targeting")
        unknown = sorted(set(stored) - set(TARGETING_ATTRIBUTES)) if isinstance(stored, dict) else []
        if "targeting" in form.changed_data and unknown:
            # Saved before targeting was checked: the widget cannot show them, so say they are gone.
            self.message_user(request, f"Targeting: removed {', '.join(unknown)}, which the marketplace does not "
                              "report (it matched nobody).", messages.WARNING)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        obj = form.instance
        if obj.is_editable and obj.plan_daily_subjects is not None and obj.plan_baseline is not None:
            try:
                plan = services.experiment_plan_apply(experiment=obj)
            except selectors.PlanIncomplete as problem:
                self.message_user(request, f"Planned subjects not changed: {problem}", messages.WARNING)
            else:
                self.message_user(
                    request,
                    f"Planned: {plan.planned_subjects_per_arm:,} subjects per arm, {plan.days} days "
                    f"(power {plan.power:.0%} for the whole rule).",
                    messages.INFO,
                )
        if obj.is_editable:
            try:
                services.experiment_validate_arms(experiment=obj)
            except ValidationError as exc:
                self.message_user(
                    request, "Not ready to start yet: " + " ".join(exc.messages), messages.WARNING
                )


@admin.register(DataSource)
class DataSourceAdmin(admin.ModelAdmin):
    """Named warehouse connections (docs/warehouse.md); the URL stays in the environment."""

    list_display = ["name", "engine", "url_setting", "query_timeout_seconds", "max_scanned_rows"]
    actions = ["test_connection"]

    @admin.action(description="Test connection (a cheap query: row counts and the columns found)")
    def test_connection(self, request, queryset):
        from experiments.warehouse.connect import data_source_probe

        for source in queryset:
            report = data_source_probe(source=source)
            level = messages.SUCCESS if report["ok"] else messages.ERROR
            self.message_user(request, f"{source.name}: {report['summary']}", level)


@admin.register(PrivacyTreatment)
class PrivacyTreatmentAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "consent_prompt",
        "default_personalization_consent",
        "personalization_level",
        "sensitive_category_policy",
        "retention_days",
    ]
    list_filter = ["consent_prompt", "personalization_level", "sensitive_category_policy"]
    search_fields = ["name", "description"]
    readonly_fields = ["compliance_findings", "frozen_by"]
    actions = ["duplicate"]

    class Media:
        js = ["experiments_admin/required_by_choice.js"]

    @admin.display(description="Compliance review (UU PDP / GDPR)")
    def compliance_findings(self, obj):
        if obj is None or obj.pk is None:
            return "Save the treatment to see the review."
        return _findings_html(selectors.treatment_compliance_findings(treatment=obj))

    @admin.display(description="Frozen by")
    def frozen_by(self, obj):
        keys = services.treatment_frozen_by(treatment=obj) if obj is not None else []
        if not keys:
            return "Not applied by a running or paused experiment: it can change."
        return "Applied by running or paused experiment(s) " + ", ".join(keys) + ": it cannot change (duplicate it)."

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and services.treatment_frozen_by(treatment=obj):
            readonly += [f.name for f in PrivacyTreatment._meta.concrete_fields if f.editable and f.name != "id"]
        return readonly

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)

        class TreatmentForm(form):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                level = self.fields.get("personalization_level")
                if level is not None:
                    # required_by_choice.js marks these fields required when their level is chosen.
                    level.widget.attrs["data-requires"] = json.dumps(
                        {name: list(levels) for name, levels in PrivacyTreatment.FIELDS_REQUIRED_BY_LEVEL.items()}
                    )

            def _post_clean(self):
                # After the instance carries the submitted values, ask the service.
                super()._post_clean()
                try:
                    services.treatment_validate_change(treatment=self.instance)
                except ValidationError as exc:
                    self.add_error(None, exc)

        return TreatmentForm

    def save_model(self, request, obj, form, change):
        findings = services.treatment_save(treatment=obj)
        # The save's own message (response_add/response_change) becomes a warning carrying them.
        request._treatment_compliance_errors = [finding for finding in findings if finding.is_error]

    def message_user(self, request, message, level=messages.INFO, extra_tags="", fail_silently=False):
        errors = getattr(request, "_treatment_compliance_errors", None)
        if errors and level == messages.SUCCESS:
            request._treatment_compliance_errors = None
            message = format_html(
                "{} Its compliance review has {}: {} An experiment applying this treatment cannot start without "
                "a data protection officer's approved override.",
                message, "an error" if len(errors) == 1 else f"{len(errors)} errors",
                " ".join(f"{f.message} ({f.reference})" for f in errors),
            )
            level = messages.WARNING
        super().message_user(request, message, level, extra_tags, fail_silently)

    @admin.action(description="Duplicate as a new treatment (to change a frozen one)", permissions=["add"])
    def duplicate(self, request, queryset):
        for treatment in queryset:
            copy = services.treatment_copy(treatment=treatment)
            self.message_user(request, f"Created {copy.name!r}.", messages.SUCCESS)


@admin.register(Layer)
class LayerAdmin(admin.ModelAdmin):
    list_display = ["key", "name"]
    search_fields = ["key", "name"]
    readonly_fields = ["salt"]


@admin.register(Surface)
class SurfaceAdmin(admin.ModelAdmin):
    """Surfaces and their defaults; every change is in the object's history (who, when, which fields)."""

    list_display = ["key", "name", "default_treatment"]
    search_fields = ["key", "name"]
    autocomplete_fields = ["default_treatment"]

    def save_model(self, request, obj, form, change):
        services.surface_save(surface=obj)


@admin.register(Holdout)
class HoldoutAdmin(admin.ModelAdmin):
    list_display = ["__str__", "share"]
    readonly_fields = ["salt"]

    def has_add_permission(self, request):
        return not Holdout.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)

        class HoldoutForm(form):
            def clean(self):
                cleaned = super().clean()
                if "share" in cleaned:
                    try:
                        services.holdout_validate_share(share=cleaned["share"])
                    except ValidationError as exc:
                        self.add_error(None, exc)
                return cleaned

        return HoldoutForm

    def save_model(self, request, obj, form, change):
        services.holdout_set_share(share=obj.share)


# --- exposures, outcome events, results and alerts: records, read-only here ---------------


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class AppendOnlyAdmin(ReadOnlyAdmin):
    """Records the analysis is computed from: nobody deletes one here (retention and erasure do, by service)."""

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Exposure)
class ExposureAdmin(AppendOnlyAdmin):
    list_display = ["experiment", "arm", "first_exposed_at", "phase"]
    list_filter = ["experiment", "arm"]
    list_select_related = ["experiment", "arm"]
    date_hierarchy = "first_exposed_at"


@admin.register(OutcomeEvent)
class OutcomeEventAdmin(AppendOnlyAdmin):
    list_display = ["event_id", "type", "occurred_at", "amount", "product_id", "category"]
    list_filter = ["type"]
    search_fields = ["event_id"]
    date_hierarchy = "occurred_at"
    show_full_result_count = False  # the table is large: no COUNT(*) per page


@admin.register(ResultSnapshot)
class ResultSnapshotAdmin(AppendOnlyAdmin):
    list_display = ["experiment", "window_end", "status", "subjects", "srm_flag", "guardrail_breached", "computed_at"]
    list_filter = ["status", "srm_flag", "guardrail_breached", "experiment"]
    list_select_related = ["experiment"]
    date_hierarchy = "window_end"
    readonly_fields = [
        "experiment", "schema_version", "status", "phase", "window_start", "window_end", "computed_at",
        "compute_seconds", "subjects", "srm_flag", "guardrail_breached", "monitored_at", "document",
    ]
    exclude = ["data"]

    class Media:
        css = {"all": ["dashboard/admin.css"]}

    @admin.display(description="Results document (JSON)")
    def document(self, obj):
        # Small segment cells are suppressed here as on the dashboard (experiments.disclosure).
        data = segments_suppress(obj.data) if isinstance(obj.data, dict) else obj.data
        return format_html('<pre class="results-document">{}</pre>', json.dumps(data, indent=2))


@admin.register(ExperimentAlert)
class ExperimentAlertAdmin(AppendOnlyAdmin):
    """An alert is acknowledged, never deleted: it is the record of what the monitor saw and did."""

    list_display = ["experiment", "kind", "arm", "metric", "action", "created_at", "acknowledged_at"]
    list_filter = ["kind", "action", "acknowledged_at"]
    list_select_related = ["experiment"]
    readonly_fields = ["experiment", "kind", "arm", "metric", "snapshot", "message", "details", "action",
                       "created_at", "acknowledged_at"]
    actions = ["acknowledge"]

    def has_acknowledge_permission(self, request) -> bool:
        return request.user.has_perm(ACKNOWLEDGE_ALERT)

    @admin.action(description="Acknowledge (a new occurrence will alert again)", permissions=["acknowledge"])
    def acknowledge(self, request, queryset):
        from experiments.results import alerts_acknowledge

        count = alerts_acknowledge(alert_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{count} alert(s) acknowledged.", messages.SUCCESS)


@admin.register(Rollout)
class RolloutAdmin(AppendOnlyAdmin):
    """Shipped arms' rollouts (started by the experiment's *Ship* action; the ramp runs from Celery beat)."""

    list_display = ["__str__", "status", "percent", "step_started_at", "created_by", "created_at", "finished_at"]
    list_filter = ["status", "surface"]
    list_select_related = ["experiment", "arm", "surface", "created_by"]
    readonly_fields = ["experiment", "arm", "surface", "treatment", "previous_default", "steps", "step_index",
                       "step_started_at", "hold_seconds", "targeting", "status", "reason", "created_by", "created_at",
                       "finished_at", "finish_reason"]
    actions = ["roll_back"]

    @admin.display(description="Now at")
    def percent(self, obj):
        return f"{obj.percent}%"

    @admin.action(description="Roll back (everyone gets the surface's default again)")
    def roll_back(self, request, queryset):
        if not request.user.has_perm(RUN_EXPERIMENT):
            raise PermissionDenied
        for rollout in queryset.filter(status=Rollout.Status.RAMPING):
            services.rollout_roll_back(rollout=rollout, reason="Rolled back in the admin.", actor=request.user)
            self.message_user(request, f"Rollout {rollout} rolled back.", messages.SUCCESS)
