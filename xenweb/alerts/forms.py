from __future__ import annotations

from django import forms
from django.core.validators import validate_email

from xenweb.alerts.models import AlertRoute


class RouteForm(forms.ModelForm):
    webhook_url = forms.URLField(required=False, max_length=500, assume_scheme="https",
                                 label="Webhook URL")

    class Meta:
        model = AlertRoute
        fields = ["emails", "webhook_url"]
        labels = {"emails": "E-mail to", "webhook_url": "Webhook URL"}

    def clean_emails(self) -> str:
        addresses = [a.strip() for a in self.cleaned_data["emails"].split(",") if a.strip()]
        for address in addresses:
            try:
                validate_email(address)
            except forms.ValidationError as exc:
                raise forms.ValidationError(f"'{address}' is not an e-mail address.") from exc
        return ", ".join(addresses)

    def clean_webhook_url(self) -> str:
        url = self.cleaned_data["webhook_url"].strip()
        if url and not url.startswith(("http://", "https://")):
            raise forms.ValidationError("The webhook must be an http:// or https:// URL.")
        return url
