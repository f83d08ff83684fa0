from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.password_validation import validate_password

from wizard.services import default_first_host, valid_time_zones


class TokenForm(forms.Form):
    token = forms.CharField(
        label="Setup token",
        max_length=200,
        help_text="Printed in the server log at first start and stored in the data "
        "directory as setup-token.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "autofocus": True}),
    )


class AdminForm(forms.Form):
    username = forms.RegexField(
        regex=r"^[\w.@+-]+\Z", max_length=150, initial="admin",
        error_messages={"invalid": "Use letters, digits and @/./+/-/_ only."},
    )
    email = forms.EmailField(required=False)
    password1 = forms.CharField(label="Password", widget=forms.PasswordInput, strip=False)
    password2 = forms.CharField(label="Password again", widget=forms.PasswordInput, strip=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("password1") != data.get("password2"):
            self.add_error("password2", "The two passwords differ.")
        elif data.get("password1"):
            try:
                validate_password(data["password1"])
            except forms.ValidationError as exc:
                self.add_error("password1", exc)
        return data


class ApplianceForm(forms.Form):
    name = forms.CharField(max_length=100, initial="xenweb", label="Appliance name")
    time_zone = forms.ChoiceField(initial="UTC")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["time_zone"].choices = [(tz, tz) for tz in valid_time_zones()]


class HostForm(forms.Form):
    name = forms.RegexField(
        regex=r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z", max_length=100,
        error_messages={"invalid": "Start with a letter or digit; use letters, digits, . _ -"},
    )
    uri = forms.CharField(max_length=500, label="libvirt URI")
    skip = forms.BooleanField(required=False, label="Add no host now")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["name"].initial, self.fields["uri"].initial = default_first_host()
        default = (
            "this machine's own hypervisor" if settings.LOCAL_HYPERVISOR
            else "the embedded demo host"
        )
        self.fields["uri"].help_text = (
            "xen:///system for this dom0, xen+ssh://root@dom0/system for a remote one; "
            f"the default is {default}."
        )
