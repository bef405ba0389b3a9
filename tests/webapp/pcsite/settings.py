"""A municipal site on Django for postcanary's form tests: a CSRF-protected
contact form, a formtools wizard, and an OIDC provider (django-oauth-toolkit)
with its consent page, for a service that logs in with it. Everything comes
from the environment the test sets (tests/support/webapp.rs); loopback only."""
import os
from pathlib import Path

BASE = Path(__file__).resolve().parent
ENV = os.environ

SECRET_KEY = ENV.get("PC_SECRET_KEY", "test-only-secret-key-for-a-throwaway-site")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "formtools",
    "oauth2_provider",
    "pcsite",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "pcsite.urls"
WSGI_APPLICATION = "pcsite.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ENV.get("PC_DB", "/tmp/pcsite.db")}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
# HTTPS only: secure cookies; CsrfViewMiddleware checks Origin (or, without
# it, a same-origin Referer) on every POST over HTTPS.
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
LOGIN_URL = "/accounts/login/"

EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = int(ENV.get("PC_SMTP_PORT", "25"))
DEFAULT_FROM_EMAIL = "Selvbetjening <noreply@kommune.example>"
PC_RECIPIENT = ENV.get("PC_RECIPIENT", "borger@kommune.example")

# The IdP is https://127.0.0.1:P, the service that logs in with it https://localhost:P.
PC_PORT = ENV.get("PC_PORT", "8443")
PC_IDP = f"https://127.0.0.1:{PC_PORT}"
PC_SERVICE = f"https://localhost:{PC_PORT}"
PC_CA = ENV.get("PC_CA", "")
PC_CLIENT_ID = ENV.get("PC_CLIENT_ID", "erhverv")
PC_CLIENT_SECRET = ENV.get("PC_CLIENT_SECRET", "")

_key = ENV.get("PC_OIDC_KEY")
OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    "OIDC_RSA_PRIVATE_KEY": Path(_key).read_text() if _key else "",
    "PKCE_REQUIRED": False,
    "SCOPES": {"openid": "OpenID Connect"},
}
LOGGING = {
    "version": 1,
    "handlers": {"err": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["err"], "level": "WARNING"}},
}
