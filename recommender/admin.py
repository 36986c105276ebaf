"""Admin for the recommender: the catalog, the record of builds (read-only), each arm's lists and DP spend."""

from datetime import timedelta

from django.contrib import admin, messages
from django.db.models import Max, Q, Sum
from django.utils import timezone

from recommender.conf import recommender_setting
from recommender.models import ArmRecommendations, Category, ModelBuild, Product
from recommender.services import builds


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "sensitive"]
    list_filter = ["sensitive"]
    search_fields = ["key", "name"]


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["sku", "name", "category", "price", "active"]
    list_filter = ["active", "category__sensitive", "category"]
    list_select_related = ["category"]
    search_fields = ["sku", "name"]
    autocomplete_fields = ["category"]


@admin.register(ModelBuild)
class ModelBuildAdmin(admin.ModelAdmin):
    """The record of builds: read-only (builds come from the schedule or the arms' action)."""

    list_display = [
        "id", "arm", "strategy", "build_key", "status", "published_at", "subjects_trained",
        "lists_written", "epsilon_spent", "duration_seconds", "outcome",
    ]
    list_filter = ["status", "strategy"]
    list_select_related = ["arm", "arm__experiment"]
    date_hierarchy = "started_at"

    @admin.display(description="Why it failed")
    def outcome(self, obj):
        # A refused DP build says why (no data in it); any other failure only its class.
        return (obj.params or {}).get("refused") or obj.error or "—"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.action(description="Build recommendations now", permissions=["build"])
def build_now(modeladmin, request, queryset):
    arm_ids = list(queryset.values_list("id", flat=True))
    key = f"manual-{timezone.now():%Y%m%dT%H%M%S}"
    builds.recommendations_build_enqueue(arm_ids=arm_ids, build_key=key, include_platform=False)
    modeladmin.message_user(request, f"Queued {len(arm_ids)} build(s) as {key}.", messages.SUCCESS)


@admin.register(ArmRecommendations)
class ArmRecommendationsAdmin(admin.ModelAdmin):
    """Arms as the recommender sees them: strategy, last build, privacy budget spent; build on demand."""

    list_display = ["__str__", "level", "last_build", "epsilon_period", "epsilon_total"]
    list_filter = ["experiment__status", "treatment__personalization_level"]
    list_select_related = ["experiment", "treatment"]
    search_fields = ["key", "experiment__key"]
    actions = [build_now]

    def has_build_permission(self, request) -> bool:
        # A build costs a worker minutes (and a DP build spends privacy budget): its own permission.
        return request.user.has_perm("recommender.build_recommendations")

    def get_queryset(self, request):
        since = timezone.now() - timedelta(days=int(recommender_setting("RECOMMENDER_DP_BUDGET_DAYS")))
        return super().get_queryset(request).annotate(
            _epsilon=Sum("recommendation_builds__epsilon_spent"),
            _epsilon_period=Sum(
                "recommendation_builds__epsilon_spent", filter=Q(recommendation_builds__started_at__gt=since)
            ),
            _last=Max("recommendation_builds__published_at"),
        )

    @admin.display(description="Strategy")
    def level(self, obj):
        return obj.treatment.personalization_level

    @admin.display(description="Last published build", ordering="_last")
    def last_build(self, obj):
        return obj._last

    @admin.display(description="ε spent in the budget period", ordering="_epsilon_period")
    def epsilon_period(self, obj):
        if obj.treatment.dp_epsilon is None and not obj._epsilon_period:
            return "—"
        budget = float(recommender_setting("RECOMMENDER_DP_BUDGET_EPSILON"))
        days = int(recommender_setting("RECOMMENDER_DP_BUDGET_DAYS"))
        return f"{obj._epsilon_period or 0:g} of {budget:g} (last {days} days)"

    @admin.display(description="ε spent (all builds)", ordering="_epsilon")
    def epsilon_total(self, obj):
        return obj._epsilon

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
