from conversions.p2v.job import P2V_TASK, p2v_body
from conversions.v2v.export_job import run_export
from conversions.v2v.import_job import run_import
from conversions.v2v.services import EXPORT_TASK, IMPORT_TASK, XVA_TASK
from conversions.v2v.xva_output import run_convert_to_xva
from xenweb.jobs.tasks_base import job_task

# The names keep the "storage.tasks." prefix from before this app existed: job rows
# (Job.task_name) and messages already queued name these tasks, and must still find them.
import_task = job_task(IMPORT_TASK)(run_import)
export_task = job_task(EXPORT_TASK)(run_export)
p2v_task = job_task(P2V_TASK)(p2v_body)
xva_task = job_task(XVA_TASK)(run_convert_to_xva)
