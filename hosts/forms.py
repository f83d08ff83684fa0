from __future__ import annotations

from django import forms


class HostForm(forms.Form):
    name = forms.RegexField(
        regex=r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z", max_length=100,
        error_messages={"invalid": "Start with a letter or digit; use letters, digits, . _ -"},
    )
    uri = forms.CharField(
        max_length=500, label="libvirt URI",
        help_text="xen:///system, xen+ssh://root@dom0/system, xen+tls://dom0/system, qemu:///system",
    )
