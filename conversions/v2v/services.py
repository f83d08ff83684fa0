"""Starting an import: check the request against a fresh inspection, then enqueue the job."""

from __future__ import annotations

from typing import Any

from conversions.v2v import guest_devices
from conversions.v2v.import_job import guest_for, plan_import, settle_type
from conversions.v2v.inspect import inspect
from conversions.v2v.proposal import ImportRefused, Proposal
from conversions.v2v.xva_output import XVA_KIND, check_xva_output
from xenweb.audit.services import record
from xenweb.jobs.models import Job
from xenweb.jobs.services import start_job

# Their names from before the conversions app existed (job rows and queued messages name them).
IMPORT_TASK = "storage.tasks.import_guest"
EXPORT_TASK = "storage.tasks.export_guest"
XVA_TASK = "conversions.tasks.convert_to_xva"


def inspect_source(source: str, *, user: Any, request: Any = None) -> Proposal:
    """The proposed guest, with what its first disk holds where that can be read now."""
    try:
        proposal = inspect(source)
        found = guest_devices.inspect_source(proposal)
        if found is not None:
            proposal.inspection = {**found.as_dict(), "conversion": guest_devices.what_changes(
                proposal.name, found)}
            proposal.warnings.extend(f"Inspection: {note}" for note in found.warnings)
        return proposal
    except ImportRefused as exc:
        record("import.inspect", user=user, request=request, target_type="import",
               target_label=str(source)[:200], result="failed", message=str(exc))
        raise


def start_import(params: dict[str, Any], *, user: Any, request: Any = None) -> Job:
    """Refuse what can be refused now (unsafe source, bad target); else a queued job."""
    source = params["source"]
    if params.get("output") == "xva":
        return _start_xva_output(params, user=user, request=request)
    try:
        proposal = inspect(source)
        plan = plan_import(proposal, params)
        found = guest_devices.inspect_source(proposal)
        settle_type(plan, proposal, found, params)
        guest_plan = guest_for(plan, proposal)  # the host runs the type (capabilities)
        if found is not None:
            guest_devices.plan_devices(plan.name, found, guest_plan.spec.domain_type,
                                       plan.os_type)
    except ImportRefused as exc:
        record("guest.import", user=user, request=request, target_type="import",
               target_label=str(source)[:200], result="failed", message=str(exc))
        raise

    total = sum(d.virtual_size for d in proposal.images)
    return start_job(IMPORT_TASK, kind="guest.import", owner=user,
                     title=f"Import {source} as {plan.name}", target=plan.pool,
                     params={**params, "name": plan.name}, unit=Job.Unit.BYTES,
                     total=total or None, request=request)


def _start_xva_output(params: dict[str, Any], *, user: Any, request: Any) -> Job:
    """The source into an XVA file, no guest defined (conversions.v2v.xva_output)."""
    source = params["source"]
    try:
        proposal = inspect(source)
        name = check_xva_output(proposal, params)
    except ImportRefused as exc:
        record("import.xva", user=user, request=request, target_type="import",
               target_label=str(source)[:200], result="failed", message=str(exc))
        raise
    total = 2 * sum(d.virtual_size for d in proposal.images)
    return start_job(XVA_TASK, kind=XVA_KIND, owner=user, title=f"Convert {source} to XVA",
                     params={**params, "name": name}, unit=Job.Unit.BYTES,
                     total=total or None, request=request)


def start_export(guest: Any, *, fmt: str, compress: str = "", disk: int = 0, user: Any,
                 request: Any = None) -> Job:
    from conversions.v2v.export_job import check_export

    try:
        check_export(guest, fmt, disk)
    except ImportRefused as exc:
        record("guest.export", user=user, request=request, target=guest, result="failed",
               message=str(exc), format=fmt)
        raise

    return start_job(EXPORT_TASK, kind="guest.export", owner=user,
                     title=f"Export {guest.name} as {fmt}", target=guest,
                     params={"format": fmt, "compress": compress, "disk": disk},
                     unit=Job.Unit.BYTES, request=request)
