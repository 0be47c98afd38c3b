# claim_v1 loaded again: one generic plan per session, of one shape whatever the statistics, no JIT
# (sql/claim_v1.sql).

from django.db import migrations

from pgpubsub_simplehistory.queue import sql_function


class Migration(migrations.Migration):
    dependencies = [
        ("pgpubsub_simplehistory", "0004_enqueue_v1_no_listener"),
    ]

    operations = [
        # Backwards keeps the new body: the function's signature and results are unchanged, only
        # its planner settings differ.
        migrations.RunSQL(sql_function("claim_v1"), migrations.RunSQL.noop),
    ]
