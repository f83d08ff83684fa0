from __future__ import annotations

from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from guests.models import Guest


@permission_required("guests.view_guest", raise_exception=True)
def guest_list(request: HttpRequest) -> HttpResponse:
    guests = Guest.objects.select_related("host")
    query = request.GET.get("q", "").strip()
    if query:
        guests = guests.filter(name__icontains=query)
    page = Paginator(guests, 100).get_page(request.GET.get("page"))
    return render(request, "guests/list.html", {"page": page, "q": query})
