"""Writes of surfaces: where in the marketplace the platform decides the privacy treatment, and its default."""

import logging

from django.db import transaction

from experiments.models import PrivacyTreatment, Surface
from experiments.services.lifecycle import experiment_config_changed

logger = logging.getLogger(__name__)


def surface_save(*, surface: Surface) -> Surface:
    """Create or change a surface (its default included); serving processes reload on commit."""
    surface.full_clean()
    with transaction.atomic():
        surface.save()
        experiment_config_changed()
    logger.info("surface %s saved: default treatment %s", surface.key, surface.default_treatment_id)
    return surface


def surface_create(
    *, key: str, name: str, default_treatment: PrivacyTreatment | None = None, description: str = ""
) -> Surface:
    return surface_save(
        surface=Surface(key=key, name=name, default_treatment=default_treatment, description=description)
    )
