from django.db import migrations, models


def lab_hosts_keep_their_behaviour(apps, schema_editor):
    """Lab hosts were trusted for both before the capabilities existed."""
    apps.get_model("hosts", "Host").objects.filter(is_lab=True).update(
        allow_insecure_transport=True, files_local=True)


class Migration(migrations.Migration):

    dependencies = [
        ("hosts", "0005_host_boot_files_dir"),
    ]

    operations = [
        migrations.AddField(
            model_name="host",
            name="allow_insecure_transport",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="host",
            name="files_local",
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(lab_hosts_keep_their_behaviour, migrations.RunPython.noop),
    ]
