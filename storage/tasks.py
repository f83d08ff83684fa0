from storage.jobs import clone_body, wipe_body
from xenweb.jobs.tasks_base import job_task

clone_task = job_task("storage.tasks.clone")(clone_body)
wipe_task = job_task("storage.tasks.wipe")(wipe_body)
from storage.v2v.import_job import run_import  # noqa: E402

import_task = job_task("storage.tasks.import_guest")(run_import)
from storage.v2v.export_job import run_export  # noqa: E402

export_task = job_task("storage.tasks.export_guest")(run_export)
