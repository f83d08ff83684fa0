"""The per-object lock (xenweb.jobs.locks): jobs say whether they hold their target, and the
database admits one queued or running exclusive job per target.

Before the constraint, existing rows are marked by the rule jobs are made with (frozen
here), and where a database already holds several active exclusive jobs on one object
(two requests that raced before this lock existed) all but the newest are marked
interrupted, as the reaper would, so that the index can be built."""

from django.db import migrations, models
from django.utils import timezone

ACTIVE = ["queued", "running"]
SHARED_KINDS = ["volume.download", "guest.export", "guest.import"]
INTERRUPTED = ("Interrupted when the per-object job lock was introduced: another job on "
               "the same object was started after it. Check the target's state and start "
               "it again if needed.")


def mark_exclusive(apps, schema_editor):
    Job = apps.get_model("jobs", "Job")
    Job.objects.exclude(target_type="").exclude(kind__in=SHARED_KINDS).update(exclusive=True)
    active = Job.objects.filter(exclusive=True, state__in=ACTIVE)
    seen = set()
    for job in active.order_by("-created_at", "-id").only("pk", "target_type", "target_id"):
        key = (job.target_type, job.target_id)
        if key in seen:
            Job.objects.filter(pk=job.pk).update(
                state="interrupted", finished_at=timezone.now(), message="Interrupted",
                error=INTERRUPTED)
        seen.add(key)


class Migration(migrations.Migration):

    dependencies = [
        ("jobs", "0003_permissions_to_see_and_cancel_others_jobs"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="exclusive",
            field=models.BooleanField(default=False, editable=False),
        ),
        migrations.RunPython(mark_exclusive, migrations.RunPython.noop, elidable=True),
        migrations.AddConstraint(
            model_name="job",
            constraint=models.UniqueConstraint(
                condition=models.Q(("exclusive", True), ("state__in", ACTIVE)),
                fields=("target_type", "target_id"),
                name="jobs_one_active_exclusive_job_per_target",
            ),
        ),
    ]
