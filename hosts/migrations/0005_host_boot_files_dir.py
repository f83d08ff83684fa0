from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("hosts", "0004_samples"),
    ]

    operations = [
        migrations.AddField(
            model_name="host",
            name="boot_files_dir",
            field=models.CharField(blank=True, max_length=1024),
        ),
    ]
