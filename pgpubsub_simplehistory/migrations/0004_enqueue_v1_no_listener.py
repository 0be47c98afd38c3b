# enqueue_v1 loaded again: no doorbell while no worker is connected (sql/enqueue_v1.sql).

from django.db import migrations

from pgpubsub_simplehistory.queue import sql_function


class Migration(migrations.Migration):
    dependencies = [
        ("pgpubsub_simplehistory", "0003_position"),
    ]

    operations = [
        # Backwards keeps the new body: the function's signature is unchanged, and the previous
        # body only rang more often.
        migrations.RunSQL(sql_function("enqueue_v1"), migrations.RunSQL.noop),
    ]
