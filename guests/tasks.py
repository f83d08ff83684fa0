from guests.migration.evacuation import EVACUATE_TASK, evacuate_body
from guests.migration.job import migrate_body
from guests.migration.services import MIGRATE_TASK
from guests.retry import restart_evacuation, restart_migration, restart_shutdown
from guests.services import SLOW_ACTION_TASKS
from guests.slow_actions import managed_save_body, restore_body, save_body, shutdown_body
from guests.snapshots.jobs import create_body, revert_body
from xenweb.jobs.tasks_base import Retry, job_task

# A retry needs what the action needs (the API views' action_permissions; tests check
# they agree) and goes through the action's own service (guests.retry).
CHANGE_GUEST = "guests.change_guest"
guest_shutdown = job_task(SLOW_ACTION_TASKS["shutdown"], retry=Retry(
    CHANGE_GUEST, restart_shutdown))(shutdown_body)
guest_save = job_task(SLOW_ACTION_TASKS["save"])(save_body)
guest_restore = job_task(SLOW_ACTION_TASKS["restore"])(restore_body)
guest_managed_save = job_task(SLOW_ACTION_TASKS["managedsave"])(managed_save_body)

# A migration checks everything again before it moves anything: safe to repeat.
guest_migrate = job_task(MIGRATE_TASK, retry=Retry(
    CHANGE_GUEST, restart_migration))(migrate_body)
# Evacuation is an administrator's action (hosts.change_host).
host_evacuate = job_task(EVACUATE_TASK, retry=Retry(
    "hosts.change_host", restart_evacuation))(evacuate_body)

snapshot_create = job_task("guests.tasks.snapshot_create")(create_body)
snapshot_revert = job_task("guests.tasks.snapshot_revert")(revert_body)
