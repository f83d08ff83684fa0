from __future__ import annotations

from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from storage.models import Pool


@permission_required("storage.view_pool", raise_exception=True)
def pool_list(request: HttpRequest) -> HttpResponse:
    pools = Pool.objects.select_related("host")
    return render(request, "storage/list.html", {"pools": pools})
