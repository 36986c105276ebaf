"""Secrets, settings and infrastructure: the pseudonym key, hosts, CSP, logins, sessions, cache, logs, files."""

import io
import logging
import pickle
import re
import tomllib
import unicodedata

import pytest
import yaml
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import override_settings

from consent.pseudonyms import subject_pseudonym
from tests.test_platform import PRODUCTION_ENV, ROOT, _manage

# --- the pseudonym key ---------------------------------------------------------------


def test_services_mode_needs_the_pseudonym_key_even_with_debug_on():
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "PRIVACYLAB_PSEUDONYM_KEY"} | {"DJANGO_DEBUG": "1"}
    result = _manage("check", env=env)
    assert result.returncode != 0 and "PRIVACYLAB_PSEUDONYM_KEY must be set" in result.stderr


@pytest.mark.parametrize("key", ["short", "x" * 31, "é" * 15])  # 15 × 2 bytes = 30 bytes
def test_a_pseudonym_key_under_32_bytes_is_refused(key):
    result = _manage("check", env=PRODUCTION_ENV | {"PRIVACYLAB_PSEUDONYM_KEY": key})
    assert result.returncode != 0 and "at least 32 bytes" in result.stderr


def test_the_embedded_default_key_is_long_enough_too():
    result = _manage("shell", "--no-imports", "-c", "from django.conf import settings; print(len(settings.PSEUDONYM_KEY.encode()))",
                     env={"DJANGO_SETTINGS_MODULE": "config.settings"})
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 32


def test_subject_ids_are_nfc_normalised_before_hashing():
    composed, decomposed = "budi.s\u00e9tiawan", "budi.se\u0301tiawan"
    assert composed != decomposed and unicodedata.normalize("NFC", decomposed) == composed
    assert subject_pseudonym(composed) == subject_pseudonym(decomposed)
    assert subject_pseudonym("budi") != subject_pseudonym("Budi")  # only the normal form, not case


@pytest.mark.django_db
def test_the_api_finds_a_subject_whatever_the_normal_form(api):
    from tests.consent.factories import grant

    grant("sit\u00ec")
    purposes = api.get("/api/v1/subjects/siti\u0300/consents").json()["purposes"]
    assert {p["purpose"]: p["status"] for p in purposes}["personalization"] == "granted"


# --- settings ----------------------------------------------------------------------------


def test_production_answers_no_testserver_host():
    result = _manage("shell", "--no-imports", "-c", "from django.conf import settings; print(settings.ALLOWED_HOSTS)",
                     env=PRODUCTION_ENV | {"DJANGO_ALLOWED_HOSTS": ""})
    assert result.returncode == 0, result.stderr
    assert "testserver" not in result.stdout


def test_staff_passwords_need_twelve_characters():
    with pytest.raises(ValidationError, match="at least 12 characters"):
        validate_password("Tr0ub4dor&3")  # 11
    validate_password("Tr0ub4dor&3x")


def test_sessions_last_twelve_hours_by_default_and_are_configurable():
    assert settings.SESSION_COOKIE_AGE == 12 * 3600
    result = _manage("shell", "--no-imports", "-c", "from django.conf import settings; print(settings.SESSION_COOKIE_AGE)",
                     env=PRODUCTION_ENV | {"DJANGO_SESSION_HOURS": "1.5"})
    assert result.stdout.strip() == "5400"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/accounts/password_reset/", "/accounts/reset/done/", "/accounts/reset/MQ/set-password/",
             "/accounts/password_reset/done/"]
)
def test_no_password_reset_routes(client, path):
    assert client.get(path).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/accounts/login/", "/admin/login/", "/api/docs/"])
def test_every_page_carries_a_strict_content_security_policy(client, path):
    response = client.get(path, follow=True)
    policy = response["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


@pytest.mark.django_db
def test_the_api_docs_page_has_no_inline_script_or_style(client):
    page = client.get("/api/docs/").content.decode()
    assert not re.search(r"<script>(?!\s*</script>)", page) and "<style" not in page
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()


# --- login lockout -----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("login_url", ["/accounts/login/", "/admin/login/"])
def test_repeated_failed_logins_lock_the_account(client, login_url):
    get_user_model().objects.create_user("olivia", password="the-right-password-1", is_staff=True)
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = client.post(login_url, {"username": "olivia", "password": "wrong-password"})
        assert response.status_code == 200  # the form again, with the error
    assert client.post(login_url, {"username": "olivia", "password": "wrong-password"}).status_code == 429
    locked = client.post(login_url, {"username": "olivia", "password": "the-right-password-1"})
    assert locked.status_code == 429
    assert b"Too many failed logins" in locked.content
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_a_successful_login_before_the_limit_resets_the_count(client):
    get_user_model().objects.create_user("victor", password="the-right-password-2")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        client.post("/accounts/login/", {"username": "victor", "password": "nope"})
    assert client.post("/accounts/login/", {"username": "victor", "password": "the-right-password-2"}).status_code == 302


def test_the_client_address_is_read_past_trusted_proxies_only():
    from django.test import RequestFactory

    from config.security import client_ip

    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    assert client_ip(request) == "10.0.0.2"  # no proxy trusted: the header is anyone's
    with override_settings(TRUSTED_PROXIES=1):
        assert client_ip(request) == "203.0.113.9"  # the entry our proxy appended, not the forged one


# --- the cache -----------------------------------------------------------------------------


class _Planted:
    ran = False

    def __reduce__(self):
        return (_plant_ran, ())


def _plant_ran():
    _Planted.ran = True
    return "planted"


@pytest.mark.redis
@pytest.mark.django_db
def test_the_cache_never_unpickles_what_it_reads():
    from django.core.cache import cache
    from django_redis import get_redis_connection

    from consent.selectors import consent_state, state_cache_key
    from tests.consent.factories import grant

    grant("victim")
    key = state_cache_key(subject_pseudonym("victim"))
    get_redis_connection("default").set(cache.make_key(key), pickle.dumps(_Planted()))
    assert cache.get(key) is None  # read as a miss…
    assert not _Planted.ran  # …and nothing ran
    assert consent_state(subject_id="victim").personalization_allowed  # the database answered
    cache.set("plain", {"a": [1, 2]})
    assert get_redis_connection("default").get(cache.make_key("plain")) == b'{"a": [1, 2]}'  # JSON on the wire


# --- logs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        '"GET /api/v1/subjects/u-42/consents HTTP/1.1" 200',
        '"GET //api/v1//subjects//u-42/requests HTTP/1.1" 404',
        '"GET /api/v1/subjects%2Fu-42%2Fconsents HTTP/1.1" 404',
        '"GET /API/V1/Recommendations/u-42?limit=5 HTTP/1.1" 404',
        '"GET /api///v1/recommendations/u-42 HTTP/1.1" 404',
    ],
)
def test_redaction_covers_repeated_and_encoded_slashes(line):
    from config.logging import redact

    assert "u-42" not in redact(line)
    assert "<subject>" in redact(line)


def test_the_development_servers_request_log_is_redacted_too():
    """``make demo`` serves with runserver, whose request lines go to the ``django.server`` logger."""
    logger = logging.getLogger("django.server")
    handler = next(h for h in logger.handlers if h.get_name() == "console" or h.filters)
    stream, handler.stream = handler.stream, io.StringIO()
    try:
        logger.info('"%s" %s %s', "GET /api/v1/recommendations/buyer-77?limit=5 HTTP/1.1", 200, 1234)
        written = handler.stream.getvalue()
    finally:
        handler.stream = stream
    assert "buyer-77" not in written and "/api/v1/recommendations/<subject>?limit=5" in written


# --- deploy files and dependencies ------------------------------------------------------------


def test_compose_gives_redis_a_password_and_publishes_no_service_port_but_the_web():
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    redis = services["redis"]
    assert "--requirepass" in redis["command"] and "REDIS_PASSWORD" in redis["command"]
    assert "noeviction" in redis["command"]
    assert "ports" not in redis and "ports" not in services["postgres"]
    assert services["web"]["ports"] == ["8000:8000"]
    for name in ("web", "worker", "beat"):
        assert re.match(r"redis://:\$\{REDIS_PASSWORD[^}]*\}@redis:6379/0", services[name]["environment"]["REDIS_URL"])


def _requirement_name(text: str) -> str:
    return re.split(r"[<>=!~\[;\s]", text, maxsplit=1)[0].lower().replace("_", "-")


def test_the_lock_file_pins_every_dependency_with_hashes_and_satisfies_pyproject():
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    lock = (ROOT / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\\n", lock, flags=re.MULTILINE))
    pins = {name.lower().replace("_", "-"): version for name, version in pins.items()}
    for text in wanted:
        requirement = Requirement(text.split("#")[0].strip())
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside {requirement.specifier}: run `make lock`"
        )
    blocks = re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", lock.split("\n", 6)[-1])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)
    # The security floors of the issue.
    assert tuple(int(p) for p in pins["django"].split(".")[:3]) >= (5, 2, 8)
    assert int(pins["gunicorn"].split(".")[0]) >= 23


def test_ci_installs_from_the_lock_with_hashes_required():
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r $(LOCK)" in makefile and "--no-deps -e ." in makefile
    assert "make venv" in (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^lock:", makefile, flags=re.MULTILINE)
