from storage.jobs import clone_body, wipe_body
from xenweb.jobs.tasks_base import job_task

clone_task = job_task("storage.tasks.clone")(clone_body)
wipe_task = job_task("storage.tasks.wipe")(wipe_body)
