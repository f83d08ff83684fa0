"""Tokens made before keys were hashed (DRF's authtoken table, keys in clear) become hashed
tokens: clients keep their keys, the database keeps only the SHA-256. DRF's table is then
dropped with its migration records and content type, so no clear key stays behind."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from django.db import migrations
from django.db.migrations.recorder import MigrationRecorder
from django.utils.dateparse import parse_datetime

DRF_TABLE = "authtoken_token"


def _aware(value: Any) -> datetime | None:
    """A raw row's date: SQLite gives text, both databases keep UTC."""
    when = parse_datetime(value) if isinstance(value, str) else value
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def hash_clear_tokens(apps: Any, schema_editor: Any) -> None:
    connection = schema_editor.connection
    if DRF_TABLE not in connection.introspection.table_names():
        return
    api_token = apps.get_model("accounts", "ApiToken")
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {quote('key')}, {quote('user_id')}, {quote('created')} "  # noqa: S608
                       f"FROM {quote(DRF_TABLE)}")
        rows = cursor.fetchall()
    for key, user_id, created in rows:
        token = api_token.objects.create(user_id=user_id,
                                         digest=hashlib.sha256(key.encode()).hexdigest())
        api_token.objects.filter(pk=token.pk).update(created=_aware(created))
    schema_editor.execute(f"DROP TABLE {quote(DRF_TABLE)}")
    MigrationRecorder(connection).migration_qs.filter(app="authtoken").delete()
    apps.get_model("contenttypes", "ContentType").objects.filter(
        app_label="authtoken").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_api_tokens_stored_hashed"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(hash_clear_tokens, migrations.RunPython.noop)]
