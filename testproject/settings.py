"""Settings of the example project used by the tests, the demo and the benchmarks."""

from __future__ import annotations

import os
from urllib.parse import parse_qs, unquote, urlparse

from testproject.pgembed import ensure_database_url


def _database(url: str) -> dict[str, object]:
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL must be a postgres:// URL, not {url!r}")
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")) or "postgres",
        "USER": unquote(parsed.username or "postgres"),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": query.pop("host", None) or parsed.hostname or "",
        "PORT": str(parsed.port or ""),
        "OPTIONS": query,
        "TEST": {"NAME": os.environ.get("TEST_DATABASE_NAME", "test_pgpubsub_simplehistory")},
    }


SECRET_KEY = "testproject-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.messages",
    "django.contrib.sessions",
    # The admin's CSS and scripts (runserver, and the live server of the browser test).
    "django.contrib.staticfiles",
    "pgpubsub_simplehistory",
    "pgpubsub",
    "pgtrigger",
    "simple_history",
    "testproject.shop",
    "testproject.evolving",
    "testproject.configs",
    "testproject.bench",
    "testproject.follow",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "testproject.urls"
STATIC_URL = "/static/"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

_URL = ensure_database_url()
_TEST_NAME = os.environ.get("TEST_DATABASE_NAME", "test_pgpubsub_simplehistory")
DATABASES = {
    "default": _database(_URL),
    # A second alias on the same server, for the multi-database tests (created by the tests).
    "other": {**_database(_URL), "NAME": "psh_other", "TEST": {"NAME": f"{_TEST_NAME}_other"}},
}

PGPUBSUB_SIMPLEHISTORY_SWEEP_INTERVAL = float(os.environ.get("SWEEP_INTERVAL", "5"))
# Fault tests shorten these through the environment of their worker subprocesses.
PGPUBSUB_SIMPLEHISTORY_LEASE_SECONDS = float(os.environ.get("PSH_LEASE_SECONDS", "10"))
PGPUBSUB_SIMPLEHISTORY_RELEASE_AFTER = float(os.environ.get("PSH_RELEASE_AFTER", "1.0"))
PGPUBSUB_SIMPLEHISTORY_SUMMARY_INTERVAL = float(os.environ.get("PSH_SUMMARY_INTERVAL", "60"))
