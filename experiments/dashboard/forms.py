"""Query-string forms: the list's filters and the detail page's metric choices."""

from django import forms
from django.contrib.auth import get_user_model

from experiments.models import Experiment, Metric


class ExperimentFilterForm(forms.Form):
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *Experiment.Status.choices])
    owner = forms.ModelChoiceField(
        required=False,
        queryset=get_user_model().objects.none(),
        to_field_name="username",
        empty_label="Any owner",
    )

    def __init__(self, *args, owners, **kwargs):
        super().__init__(*args, **kwargs)
        # Only owners of experiments the user can see: the filter must not list everyone.
        self.fields["owner"].queryset = owners


class MetricChoiceForm(forms.Form):
    """Which metric the segment tables and the effect-over-time chart show (default: the primary)."""

    segments = forms.ChoiceField(required=False, choices=[("", "Primary metric"), *Metric.choices])
    timeline = forms.ChoiceField(required=False, choices=[("", "Primary metric"), *Metric.choices])

    def metric(self, name: str) -> str:
        """The valid choice, or "" (the primary metric) when the query string was wrong."""
        if not self.is_bound:
            return ""
        self.is_valid()  # an invalid field is left out of cleaned_data; the others still count
        return self.cleaned_data.get(name) or ""
