from guests.slow_actions import restore_body, save_body, shutdown_body
from xenweb.jobs.tasks_base import job_task

guest_shutdown = job_task("guests.tasks.shutdown")(shutdown_body)
guest_save = job_task("guests.tasks.save")(save_body)
guest_restore = job_task("guests.tasks.restore")(restore_body)

SLOW_TASKS = {"shutdown": guest_shutdown, "save": guest_save, "restore": guest_restore}
