from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import views

urlpatterns = [
    path("kontakt/", views.kontakt, name="kontakt"),
    path("tak/", views.tak),
    path("wizard/", views.Wizard.as_view([views.WhoForm, views.WhatForm])),
    path("erhverv/kontakt/", views.erhverv_kontakt),
    path("erhverv/callback/", views.erhverv_callback),
    path("accounts/login/", auth_views.LoginView.as_view(template_name="registration/login.html")),
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
]
