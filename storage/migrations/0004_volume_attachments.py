import django.db.models.deletion
from django.db import migrations, models

# The rules of guests.attachments as they were when the records were introduced.
HOLDING_STATES = {"running", "blocked", "paused", "shutdown", "pmsuspended"}


def _rows(Attachment, guest):
    devices = guest.devices or {}
    in_use = guest.state in HOLDING_STATES
    for key, role in (("disks", "disk"), ("next_boot_disks", "next_boot_disk")):
        for disk in devices.get(key, []):
            if disk.get("source"):
                yield Attachment(
                    guest_id=guest.pk, role=role, path=disk["source"],
                    target=disk.get("target") or "", in_use=in_use,
                    shareable=bool(disk.get("shareable")),
                    writable=disk.get("device", "disk") == "disk" and not disk.get("readonly"))
    if guest.saved_volume_id and guest.saved_path:
        yield Attachment(guest_id=guest.pk, role="saved_memory", path=guest.saved_path,
                         in_use=in_use)


def record_existing_guests(apps, schema_editor):
    Guest = apps.get_model("guests", "Guest")
    Attachment = apps.get_model("storage", "VolumeAttachment")
    for guest in Guest.objects.iterator():
        Attachment.objects.bulk_create(list(_rows(Attachment, guest)))


class Migration(migrations.Migration):

    dependencies = [
        ('guests', '0007_save_image_volume'),
        ('storage', '0003_volume_content_state'),
    ]

    operations = [
        migrations.CreateModel(
            name='VolumeAttachment',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('role', models.CharField(choices=[('disk', 'disk'), ('next_boot_disk', 'disk from the next boot'), ('saved_memory', 'saved memory'), ('migration_save', 'memory saved by an offline migration')], max_length=16)),
                ('path', models.CharField(max_length=1024)),
                ('target', models.CharField(blank=True, max_length=32)),
                ('writable', models.BooleanField(default=False)),
                ('shareable', models.BooleanField(default=False)),
                ('in_use', models.BooleanField(default=False)),
                ('guest', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='attachments', to='guests.guest')),
            ],
            options={
                'ordering': ['guest', 'role', 'target', 'path'],
                'indexes': [models.Index(fields=['path'], name='attachment_path')],
            },
        ),
        migrations.RunPython(record_existing_guests, migrations.RunPython.noop),
    ]
