"""Database constraints whose messages land on the field a person has to change.

Django validates every model constraint before saving (``Model.validate_constraints``,
run by ``full_clean`` and so by every ``ModelForm``), but puts a
``CheckConstraint``'s message at the top of the form, far from the field it is
about. A model that names, per constraint, the field to blame gets the message
there instead: a form shows it beside that field, and a service's
``ValidationError`` is keyed by it.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import router


class ConstraintFieldsMixin:
    """``CONSTRAINT_FIELDS`` maps a constraint's name to the field its message belongs to.

    A constraint that is not named there keeps Django's placement (a
    single-field unique constraint on its field, anything else for the whole form).
    """

    CONSTRAINT_FIELDS: dict[str, str] = {}

    # Constraints a caller checks itself over several rows at once (a formset of arms),
    # skipped on this instance: checked row by row they would see rows the caller is changing.
    constraints_checked_by_caller: frozenset[str] = frozenset()

    def validate_constraints(self, exclude=None):
        using = router.db_for_write(type(self), instance=self)
        errors: dict = {}
        for model_class, constraints in self.get_constraints():
            for constraint in constraints:
                if constraint.name in self.constraints_checked_by_caller:
                    continue
                try:
                    constraint.validate(model_class, self, exclude=exclude, using=using)
                except ValidationError as error:
                    field = self.CONSTRAINT_FIELDS.get(constraint.name)
                    fields = getattr(constraint, "fields", ())
                    if field is None and getattr(error, "code", None) == "unique" and len(fields) == 1:
                        field = fields[0]
                    # A constraint is checked only when none of its fields is excluded, so the
                    # field it is blamed on is one the caller validates (a form shows it).
                    if field is not None and not (exclude and field in exclude):
                        errors.setdefault(field, []).extend(error.error_list)
                    else:
                        errors = error.update_error_dict(errors)
        if errors:
            raise ValidationError(errors)
