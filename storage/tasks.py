from storage.jobs import clone_body, wipe_body
from storage.p2v.job import p2v_body
from storage.v2v.export_job import run_export
from storage.v2v.import_job import run_import
from xenweb.jobs.tasks_base import job_task

clone_task = job_task("storage.tasks.clone")(clone_body)
wipe_task = job_task("storage.tasks.wipe")(wipe_body)
import_task = job_task("storage.tasks.import_guest")(run_import)
export_task = job_task("storage.tasks.export_guest")(run_export)
p2v_task = job_task("storage.tasks.p2v")(p2v_body)
