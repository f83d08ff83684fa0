from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model, update_session_auth_hash
from django.contrib.auth.decorators import permission_required
from django.contrib.auth.forms import PasswordChangeForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST, require_safe

from xenweb.accounts import services
from xenweb.accounts.forms import AdminSetPasswordForm, UserCreateForm, UserEditForm
from xenweb.accounts.models import ApiToken
from xenweb.accounts.roles import role_of

manage_users = permission_required("auth.change_user", raise_exception=True)


def _profile(request: HttpRequest, new_token: str | None = None) -> HttpResponse:
    token = ApiToken.objects.filter(user=request.user).first()
    return render(request, "accounts/profile.html", {
        "role": role_of(request.user),
        "token_created": token.created if token else None,
        "new_token": new_token,
    })


@require_safe
def profile(request: HttpRequest) -> HttpResponse:
    return _profile(request)


@require_POST
def token_create(request: HttpRequest) -> HttpResponse:
    """The new key is in this answer only: not in the session, the database or a message
    (only its hash is kept), so it is shown exactly once."""
    key = services.issue_token(user=request.user, request=request)
    messages.success(request, "A new API token was created. Copy it now: it is shown only once.")
    response = _profile(request, new_token=key)
    response["Cache-Control"] = "no-store"
    return response


@require_POST
def token_revoke(request: HttpRequest) -> HttpResponse:
    if services.revoke_token(user=request.user, request=request):
        messages.success(request, "Your API token was revoked.")
    return redirect("accounts:profile")


def password_change(request: HttpRequest) -> HttpResponse:
    form = PasswordChangeForm(request.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        update_session_auth_hash(request, user)
        services.set_password(actor=request.user, user=user, request=request)
        messages.success(request, "Your password was changed.")
        return redirect("accounts:profile")
    return render(request, "accounts/password_change.html", {"form": form})


@manage_users
def user_list(request: HttpRequest) -> HttpResponse:
    users = get_user_model().objects.order_by("username").prefetch_related("groups")
    rows = [(user, role_of(user)) for user in users]
    return render(request, "accounts/user_list.html", {"rows": rows})


@manage_users
def user_create(request: HttpRequest) -> HttpResponse:
    form = UserCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        user = services.create_user(
            actor=request.user, request=request, role=data["role"], password=data["password1"],
            username=data["username"], email=data["email"], first_name=data["first_name"],
            last_name=data["last_name"],
        )
        messages.success(request, f"User '{user}' was created.")
        return redirect("accounts:users")
    return render(request, "accounts/user_form.html", {"form": form, "title": "New user"})


@manage_users
def user_edit(request: HttpRequest, pk: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=pk)
    form = UserEditForm(request.POST or None, instance=user, initial={"role": role_of(user)})
    if request.method == "POST" and form.is_valid():
        try:
            services.update_user(
                actor=request.user, user=form.save(commit=False), role=form.cleaned_data["role"],
                request=request,
            )
        except services.AccountError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"User '{user}' was updated.")
            return redirect("accounts:users")
    return render(request, "accounts/user_form.html", {"form": form, "title": f"User {user}"})


@manage_users
def user_password(request: HttpRequest, pk: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=pk)
    form = AdminSetPasswordForm(user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        form.save()
        services.set_password(actor=request.user, user=user, request=request)
        messages.success(request, f"The password of '{user}' was set.")
        return redirect("accounts:users")
    return render(request, "accounts/user_form.html",
                  {"form": form, "title": f"Set password of {user}"})
