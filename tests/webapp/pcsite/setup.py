"""Creates the database, the citizen's account and the OIDC client: python -m pcsite.setup"""
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pcsite.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from oauth2_provider.models import Application  # noqa: E402

call_command("migrate", verbosity=0, interactive=False)
User.objects.create_user(os.environ["PC_USER"], password=os.environ["PC_PASSWORD"])
Application.objects.create(
    name="Erhverv",
    client_id=settings.PC_CLIENT_ID,
    client_secret=settings.PC_CLIENT_SECRET,
    hash_client_secret=False,
    client_type=Application.CLIENT_CONFIDENTIAL,
    authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
    redirect_uris=f"{settings.PC_SERVICE}/erhverv/callback/",
    algorithm=Application.RS256_ALGORITHM,
    skip_authorization=False,
)
print("READY")
