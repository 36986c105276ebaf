"""The experiment owners' dashboard: thin views over ``pages``, ``exports`` and ``recompute``.

Every view needs a login. An experiment's pages answer only to users with
``experiments.view_experiment_results`` on it (``experiments.rules``: owner,
named viewers, staff); anyone else gets the same 404 as for an experiment that
does not exist, so the dashboard never reveals which experiments exist.
"""

from __future__ import annotations

import csv
from urllib.parse import urlencode

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views import View
from django.views.generic import TemplateView
from rules.contrib.views import PermissionRequiredMixin

from experiments.dashboard import exports, pages, recompute, selectors
from experiments.dashboard.forms import ExperimentFilterForm, MetricChoiceForm
from experiments.models import Experiment
from experiments.rules import RECOMPUTE_RESULTS, VIEW_RESULTS

EXPERIMENTS_PER_PAGE = 25


class ExperimentListView(LoginRequiredMixin, TemplateView):
    template_name = "dashboard/experiment_list.html"

    def get(self, request, *args, **kwargs):
        form = ExperimentFilterForm(request.GET or None, owners=selectors.dashboard_owner_choices(user=request.user))
        filters = form.cleaned_data if form.is_bound and form.is_valid() else {}
        experiments = selectors.dashboard_experiments(
            user=request.user, status=filters.get("status", ""), owner=filters.get("owner")
        )
        page = Paginator(experiments, EXPERIMENTS_PER_PAGE).get_page(request.GET.get("page"))
        owner = filters.get("owner")
        kept = {"status": filters.get("status", ""), "owner": owner.get_username() if owner else ""}
        context = self.get_context_data(
            form=form,
            filter_query=urlencode({name: value for name, value in kept.items() if value}),
            page_obj=page,
            rows=pages.experiment_list_rows(experiments=list(page.object_list)),
            filtered=bool(filters.get("status") or filters.get("owner")),
        )
        # A filter the form refuses is the client's mistake: say so, show everything.
        return self.render_to_response(context, status=400 if form.is_bound and form.errors else 200)


class ExperimentAccessMixin(LoginRequiredMixin, PermissionRequiredMixin):
    """Loads the experiment named in the URL and checks an object permission on it (django-rules)."""

    permission_required = VIEW_RESULTS

    def get_object(self) -> Experiment:
        if not hasattr(self, "_experiment"):
            experiment = selectors.experiment_for_dashboard(key=self.kwargs["key"])
            if experiment is None:
                raise Http404("no such experiment")
            self._experiment = experiment
        return self._experiment

    @property
    def experiment(self) -> Experiment:
        return self.get_object()

    def handle_no_permission(self):
        if not self.request.user.is_authenticated:
            return super().handle_no_permission()  # to the login page
        if self.request.user.has_perm(VIEW_RESULTS, self.get_object()):
            raise PermissionDenied("Only the experiment's owner and staff can do this.")
        raise Http404("no such experiment")  # indistinguishable from an unknown key

    def dispatch(self, request, *args, **kwargs):
        try:
            return super().dispatch(request, *args, **kwargs)
        except Http404:
            return render(request, "dashboard/not_found.html", status=404)
        except PermissionDenied as denied:
            return render(request, "dashboard/forbidden.html", {"message": str(denied)}, status=403)


class ExperimentDetailView(ExperimentAccessMixin, TemplateView):
    template_name = "dashboard/experiment_detail.html"

    def get_context_data(self, **kwargs):
        form = MetricChoiceForm(self.request.GET or None)
        page = pages.results_page(
            experiment=self.experiment, segment_metric=form.metric("segments"), timeline_metric=form.metric("timeline")
        )
        return super().get_context_data(
            page=page,
            metric_form=form,
            can_recompute=self.request.user.has_perm(RECOMPUTE_RESULTS, self.experiment),
            **kwargs,
        )


class RecomputeView(ExperimentAccessMixin, View):
    """POST: enqueue the results task now; the page then shows its progress."""

    permission_required = RECOMPUTE_RESULTS
    http_method_names = ["post"]

    def post(self, request, *args, **kwargs):
        recompute.results_recompute_request(experiment=self.experiment, requested_by=request.user)
        status = recompute.recompute_status(experiment=self.experiment)
        if request.headers.get("Accept", "").startswith("application/json"):
            return JsonResponse(status.as_json(), status=202)
        return HttpResponseRedirect(reverse("dashboard:experiment-detail", args=[self.experiment.key]) + "#freshness")


class RecomputeStatusView(ExperimentAccessMixin, View):
    http_method_names = ["get"]

    def get(self, request, *args, **kwargs):
        status = recompute.recompute_status(experiment=self.experiment)
        return JsonResponse(status.as_json(), headers={"Cache-Control": "no-store"})


class ResultsJsonView(ExperimentAccessMixin, View):
    """The detail page's data as JSON (session login, same permission as the page)."""

    http_method_names = ["get"]

    def get(self, request, *args, **kwargs):
        page = pages.results_page(experiment=self.experiment)
        return JsonResponse(
            exports.results_payload(page),
            encoder=DjangoJSONEncoder,
            json_dumps_params={"allow_nan": False},
            headers={"Cache-Control": "no-store"},
        )


class _ExportView(ExperimentAccessMixin, View):
    http_method_names = ["get"]

    def unavailable(self, message: str):
        return render(
            self.request, "dashboard/export_unavailable.html",
            {"experiment": self.experiment, "message": message}, status=409,
        )

    def attachment(self, response: HttpResponse, snapshot, extension: str) -> HttpResponse:
        name = exports.download_name(experiment=self.experiment, snapshot=snapshot, extension=extension)
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        response["Cache-Control"] = "private, no-store"
        return response


class ExportJsonView(_ExportView):
    """The latest snapshot as stored, in any schema version, with its run metadata."""

    def get(self, request, *args, **kwargs):
        snapshot = selectors.snapshot_latest(experiment=self.experiment)
        if snapshot is None:
            return self.unavailable("No results have been computed for this experiment yet.")
        response = HttpResponse(
            exports.export_json_body(experiment=self.experiment, snapshot=snapshot), content_type="application/json"
        )
        return self.attachment(response, snapshot, "json")


class ExportCsvView(_ExportView):
    """Every comparison of the latest snapshot (overall and per segment), one per row."""

    def get(self, request, *args, **kwargs):
        snapshot = selectors.snapshot_latest(experiment=self.experiment)
        if snapshot is None:
            return self.unavailable("No results have been computed for this experiment yet.")
        problem = pages.snapshot_schema_problem(snapshot)
        if problem:
            return self.unavailable(
                f"{problem} The CSV export needs that version too; the JSON export keeps any version as stored."
            )
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        csv.writer(response).writerows(exports.export_csv_rows(experiment=self.experiment, snapshot=snapshot))
        return self.attachment(response, snapshot, "csv")
