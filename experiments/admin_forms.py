"""Form fields of the experiments admin that are more than a model field's default."""

from __future__ import annotations

from django import forms

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
