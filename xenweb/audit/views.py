from __future__ import annotations

from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from xenweb.audit.models import AuditRecord


@permission_required("audit.view_auditrecord", raise_exception=True)
def audit_list(request: HttpRequest) -> HttpResponse:
    records = AuditRecord.objects.all()
    query = request.GET.get("q", "").strip()
    if query:
        records = records.filter(action__icontains=query) | records.filter(
            username__icontains=query
        ) | records.filter(target_label__icontains=query)
    page = Paginator(records, 100).get_page(request.GET.get("page"))
    return render(request, "audit/list.html", {"page": page, "q": query})
