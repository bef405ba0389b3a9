import itertools
import secrets
from urllib.parse import urlencode

import requests
from django import forms
from django.conf import settings
from django.core.mail import send_mail
from django.http import HttpResponseForbidden, HttpResponseRedirect
from django.shortcuts import render
from formtools.wizard.views import SessionWizardView

RECEIPTS = itertools.count(1)
TOPICS = [("veje", "Veje"), ("affald", "Affald"), ("skole", "Skole")]


class KontaktForm(forms.Form):
    name = forms.CharField(max_length=100)
    email = forms.EmailField(required=False)
    topics = forms.MultipleChoiceField(choices=TOPICS, widget=forms.CheckboxSelectMultiple)
    message = forms.CharField(widget=forms.Textarea)


def deliver(where, name, topics, message):
    receipt = f"DJ-{next(RECEIPTS):06d}"
    body = f"Ny henvendelse via {where}\nKvittering: {receipt}\nNavn: {name}\nEmner: {', '.join(topics)}\n\n{message}\n"
    send_mail(f"Henvendelse {receipt}", body, None, [settings.PC_RECIPIENT])
    return HttpResponseRedirect(f"/tak/?{urlencode({'r': receipt, 'emner': ', '.join(topics)})}")


def kontakt_page(request, where):
    form = KontaktForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        return deliver(where, d["name"], d["topics"], d["message"])
    return render(request, "kontakt.html", {"form": form})


def kontakt(request):
    return kontakt_page(request, "/kontakt/")


def tak(request):
    return render(request, "tak.html", {"receipt": request.GET.get("r", ""), "topics": request.GET.get("emner", "")})


class WhoForm(forms.Form):
    name = forms.CharField(max_length=100)


class WhatForm(forms.Form):
    message = forms.CharField(widget=forms.Textarea)


class Wizard(SessionWizardView):
    template_name = "wizard.html"

    def done(self, form_list, **kwargs):
        data = {}
        for f in form_list:
            data.update(f.cleaned_data)
        return deliver("/wizard/", data["name"], [], data["message"])


def erhverv_kontakt(request):
    if not request.session.get("oidc_user"):
        state = secrets.token_urlsafe(16)
        request.session["oidc_state"] = state
        q = urlencode(
            {
                "client_id": settings.PC_CLIENT_ID,
                "redirect_uri": f"{settings.PC_SERVICE}/erhverv/callback/",
                "response_type": "code",
                "scope": "openid",
                "state": state,
                "nonce": secrets.token_urlsafe(8),
            }
        )
        return HttpResponseRedirect(f"{settings.PC_IDP}/o/authorize/?{q}")
    return kontakt_page(request, "/erhverv/kontakt/")


def erhverv_callback(request):
    if "error" in request.GET:
        return HttpResponseForbidden("<h1>Login afvist</h1><p>Du blev ikke logget ind.</p>")
    if request.GET.get("state") != request.session.get("oidc_state"):
        return HttpResponseForbidden("<h1>Forkert state</h1>")
    r = requests.post(
        f"{settings.PC_IDP}/o/token/",
        data={
            "grant_type": "authorization_code",
            "code": request.GET.get("code", ""),
            "redirect_uri": f"{settings.PC_SERVICE}/erhverv/callback/",
        },
        auth=(settings.PC_CLIENT_ID, settings.PC_CLIENT_SECRET),
        verify=settings.PC_CA or True,
        timeout=10,
    )
    if r.status_code != 200 or "id_token" not in r.json():
        return HttpResponseForbidden(f"<h1>Token afvist</h1><p>{r.status_code}</p>")
    request.session["oidc_user"] = "erhverv"
    return HttpResponseRedirect("/erhverv/kontakt/")
