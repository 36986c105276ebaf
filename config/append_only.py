"""The Python half of an append-only table: rows are inserted, never changed (a database trigger is the other half).

Two class decorators, each naming the app's own error and the messages that say
what to do instead:

- ``append_only_queryset`` on a ``QuerySet``: ``update()`` and ``bulk_update()``
  are refused, and ``delete()`` too when ``delete_refused`` is given (then also
  on the manager ``as_manager()`` builds, so ``Model.objects.delete()`` is
  refused rather than missing);
- ``append_only_model`` on a model: ``save()`` of a stored row is refused, and
  ``delete()`` when ``delete_refused`` is given.

Decorators rather than base classes: the refusals are the class's own methods,
so ``super()`` from the class reaches Django's, the way a test reaches past the
Python layer to prove the trigger holds. A sanctioned deletion (an erasure, the
retention purge) is a method of the app's queryset, never a plain ``delete()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from django.db import models

Q = TypeVar("Q", bound=type[models.QuerySet])
M = TypeVar("M", bound=type[models.Model])


def append_only_queryset(
    *, error: type[Exception], update_refused: str, delete_refused: str | None = None
) -> Callable[[Q], Q]:
    """Refuse ``update()``/``bulk_update()`` (and ``delete()`` when ``delete_refused``) on the queryset class."""

    def decorate(queryset_class: Q) -> Q:
        def update(self, **kwargs):
            raise error(update_refused)

        def bulk_update(self, objs, fields, batch_size=None):
            raise error(update_refused)

        update.alters_data = bulk_update.alters_data = True
        queryset_class.update = update
        queryset_class.bulk_update = bulk_update
        if delete_refused is not None:

            def delete(self):
                raise error(delete_refused)

            delete.alters_data = True
            queryset_class.delete = delete
        return queryset_class

    return decorate


def append_only_model(
    *, error: type[Exception], update_refused: str, delete_refused: str | None = None
) -> Callable[[M], M]:
    """Refuse ``save()`` of a stored row (and ``delete()`` when ``delete_refused``) on the model class."""

    def decorate(model_class: M) -> M:
        save_row = model_class.save

        def save(self, *args, **kwargs):
            if not self._state.adding:
                raise error(update_refused)
            save_row(self, *args, **kwargs)

        save.alters_data = True
        model_class.save = save
        if delete_refused is not None:

            def delete(self, *args, **kwargs):
                raise error(delete_refused)

            delete.alters_data = True
            model_class.delete = delete
        return model_class

    return decorate
