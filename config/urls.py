"""The site's routes: health, the admin, logins, the API (``/api/v1/``, its schema and docs), the dashboard."""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from config.health import health

api_v1 = [
    path("", include("experiments.api_urls")),
    path("", include("consent.api_urls")),
    path("", include("recommender.api_urls")),
]

urlpatterns = [
    path("health/", health, name="health"),
    # Browsers ask for /favicon.ico on pages that name none (the admin, the API docs).
    # (The unhashed name: whitenoise serves it too, and no manifest is read at import.)
    path("favicon.ico", RedirectView.as_view(url=f"{settings.STATIC_URL}dashboard/favicon.svg", permanent=True)),
    path("admin/", admin.site.urls),
    # Log in and out, and change one's password. No password reset: nothing here sends
    # email, and a reset route that cannot reach its owner only helps an attacker.
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path(
        "accounts/password_change/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its script from a URL of its own: no inline script (CSP).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("", include("experiments.dashboard.urls")),
]

handler404 = "config.errors.page_not_found"
handler500 = "config.errors.server_error"
