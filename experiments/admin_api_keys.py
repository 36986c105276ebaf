"""Admin for the marketplace services' API keys: the library's key admin, with the key's scopes.

djangorestframework-api-key registers its own admin for ``APIKey``; it is
replaced here by one that shows each key's scopes in the list and edits them
inline (imported by ``experiments.admin``).
"""

from django.contrib import admin
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from config.authentication import key_scopes
from config.permissions import SCOPES
from experiments.models import ApiKeyScopes


class ApiKeyScopesInline(admin.StackedInline):
    model = ApiKeyScopes
    can_delete = False
    extra = 1
    max_num = 1
    min_num = 1
    fields = list(ApiKeyScopes.FIELDS.values())
    verbose_name = "scopes"
    verbose_name_plural = "scopes (changes take effect within seconds)"


if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


@admin.register(APIKey)
class ScopedApiKeyAdmin(APIKeyModelAdmin):
    inlines = [ApiKeyScopesInline]
    list_display = ("prefix", "name", "scope_list", "created", "expiry_date", "_has_expired", "revoked")
    list_filter = ("revoked", "scopes__dsr", "scopes__consent_read", "created")
    list_select_related = ("scopes",)

    @admin.display(description="Scopes")
    def scope_list(self, obj):
        scopes = key_scopes(obj)
        return ", ".join(scope for scope in SCOPES if scope in scopes)
