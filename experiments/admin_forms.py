"""Form fields of the experiments admin that are more than a model field's default."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from experiments import services
from experiments.models import Arm, Experiment
from experiments.targeting import MAX_VALUE_LENGTH, TARGETING_ATTRIBUTES


class TargetingWidget(forms.MultiWidget):
    """One control per targetable attribute: the known values as checkboxes, or a list to type.

    Plain HTML (no script): a group per attribute, named by its legend or label.
    """

    template_name = "experiments_admin/widgets/targeting.html"

    def __init__(self, attrs=None):
        widgets = {}
        for spec in TARGETING_ATTRIBUTES.values():
            if spec.closed:
                widgets[spec.key] = forms.CheckboxSelectMultiple(choices=[(value, value) for value in spec.values])
            else:
                widgets[spec.key] = forms.TextInput(attrs={"list": f"targeting-{spec.key}-values", "size": 60})
        super().__init__(widgets, attrs)

    def decompress(self, value):
        value = value if isinstance(value, dict) else {}
        parts = []
        for spec in TARGETING_ATTRIBUTES.values():
            values = value.get(spec.key) or []
            values = [values] if isinstance(values, str) else list(values)
            parts.append(values if spec.closed else ", ".join(map(str, values)))
        return parts

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        context["widget"]["attributes"] = list(
            zip(TARGETING_ATTRIBUTES.values(), context["widget"]["subwidgets"], strict=True)
        )
        return context

    def id_for_label(self, id_):
        return ""  # each attribute's group has its own legend or label


class TargetingField(forms.MultiValueField):
    """Targeting as {attribute: [values]}; an attribute left empty is not targeted."""

    widget = TargetingWidget

    def __init__(self, **kwargs):
        for name in ("encoder", "decoder", "max_length"):
            kwargs.pop(name, None)
        fields = [
            forms.MultipleChoiceField(choices=[(value, value) for value in spec.values], required=False)
            if spec.closed
            else forms.CharField(required=False, max_length=2000)
            for spec in TARGETING_ATTRIBUTES.values()
        ]
        kwargs["required"] = False
        super().__init__(fields=fields, require_all_fields=False, **kwargs)

    def compress(self, data_list):
        targeting = {}
        for spec, value in zip(TARGETING_ATTRIBUTES.values(), data_list, strict=False):
            if spec.closed:
                values = list(value or [])
            else:
                values = [part.strip() for part in (value or "").split(",") if part.strip()]
                too_long = [part for part in values if len(part) > MAX_VALUE_LENGTH]
                if too_long:
                    raise forms.ValidationError(
                        f"{spec.label}: a value has at most {MAX_VALUE_LENGTH} characters.", code="too_long"
                    )
            if values:
                targeting[spec.key] = values
        return targeting


def constraint_message(model, name: str) -> str:
    """A model constraint's message in words (shown where a form checks the rule itself)."""
    constraint = next(c for c in model._meta.constraints if c.name == name)
    return str(constraint.violation_error_message)


class NewPhaseForm(forms.ModelForm):
    """A new phase: each arm's weight, and any analysis setting that changes with it."""

    class Meta:
        model = Experiment
        fields = sorted(services.ANALYSIS_FIELDS)

    def __init__(self, *args, arms, guardrails=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.arms = arms
        self.guardrails = list(guardrails)
        self.margin_names = []
        for guardrail in self.guardrails:
            name = f"guardrail_margin__{guardrail.metric}"
            unit = "relative to the control, e.g. 0.05 for 5 %" if guardrail.relative else "in the metric's unit"
            self.fields[name] = forms.FloatField(
                label=f"Margin of the {guardrail.get_metric_display()} guardrail", initial=guardrail.margin,
                help_text=f"The harm it tolerates ({unit}).",
            )
            self.margin_names.append(name)
        self.weight_names = []
        for arm in arms:
            name = f"weight__{arm.key}"
            self.fields[name] = forms.FloatField(
                label=f"Weight of arm {arm.key}" + (" (control)" if arm.is_control else ""),
                initial=arm.weight, help_text="Its share of new traffic relative to the other arms' weights.",
            )
            self.weight_names.append(name)
        order = [f.name for f in Experiment._meta.fields if f.name in services.ANALYSIS_FIELDS]
        self.analysis_names = order

    def clean(self):
        cleaned = super().clean()
        for name in self.weight_names:
            if cleaned.get(name) is not None and not cleaned[name] > 0:
                self.add_error(name, constraint_message(Arm, "arm_weight_positive"))
        return cleaned

    def guardrail_margins(self) -> dict[str, float]:
        """The guardrail margins that change, by metric."""
        return {
            guardrail.metric: self.cleaned_data[f"guardrail_margin__{guardrail.metric}"]
            for guardrail in self.guardrails if f"guardrail_margin__{guardrail.metric}" in self.changed_data
        }

    def weights(self) -> dict[str, float]:
        return {arm.key: self.cleaned_data[f"weight__{arm.key}"] for arm in self.arms}

    def analysis_changes(self) -> dict:
        return {name: self.cleaned_data[name] for name in self.changed_data if name in services.ANALYSIS_FIELDS}

    def add_service_errors(self, exc: ValidationError) -> None:
        if not hasattr(exc, "error_dict"):
            self.add_error(None, exc)
            return
        for field, errors in exc.message_dict.items():
            target = f"weight__{field}" if f"weight__{field}" in self.fields else field
            self.add_error(target if target in self.fields else None, errors)

    def history_message(self, phase: int, before: dict) -> str:
        weights = ", ".join(f"{key} {weight:g}" for key, weight in self.weights().items())
        changes = "; ".join(
            f"{Experiment._meta.get_field(name).verbose_name} {before.get(name)!r} → {self.cleaned_data[name]!r}"
            for name in self.changed_data if name in services.ANALYSIS_FIELDS
        )
        changes = "; ".join(filter(None, [changes, *(
            f"{guardrail.get_metric_display()} guardrail margin {before.get(f'guardrail_margin__{guardrail.metric}')!r}"
            f" → {self.cleaned_data[f'guardrail_margin__{guardrail.metric}']!r}"
            for guardrail in self.guardrails if f"guardrail_margin__{guardrail.metric}" in self.changed_data
        )]))
        return f"New phase {phase}: weights {weights}" + (f"; {changes}" if changes else "; analysis unchanged")


class ShipForm(forms.Form):
    """Ship an arm: which arm, why (required without a final ship verdict), and the ramp (docs/surfaces.md)."""

    arm = forms.ChoiceField(help_text="The arm whose treatment is rolled out.")
    reason = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Why it is shipped. Required unless the phase's final verdict ships this arm.",
    )
    steps = forms.CharField(
        help_text="Percent of the surface's traffic per step, increasing, ending at 100, e.g. 10, 25, 50, 100."
    )
    hold_hours = forms.FloatField(help_text="How long each step is held before the next.")

    def __init__(self, *args, arms, initial_arm=None, **kwargs):
        from django.conf import settings

        super().__init__(*args, **kwargs)
        self.fields["arm"].choices = [(arm.key, arm.key) for arm in arms]
        self.fields["arm"].initial = initial_arm
        self.fields["steps"].initial = ", ".join(map(str, settings.ROLLOUT_STEPS))
        self.fields["hold_hours"].initial = settings.ROLLOUT_HOLD_HOURS

    def clean_steps(self):
        try:
            return [int(part) for part in self.cleaned_data["steps"].replace(" ", "").split(",")]
        except ValueError as exc:
            raise forms.ValidationError("Whole percentages separated by commas, e.g. 10, 25, 50, 100.") from exc

    def add_service_errors(self, exc) -> None:
        for field, messages_ in exc.message_dict.items():
            self.add_error(field if field in self.fields else None, messages_)
