# claim_v1 loaded again (sql/claim_v1.sql): a plan cached on a queue analyzed while empty, as
# autovacuum leaves a drained one, walked the whole queue for each claimed row (the update
# joined the claimed rows) and every earlier id for each candidate (the object probe took the
# primary key), until the next ANALYZE: claims of 100 took 0.4-0.7 s beside 25,000 stored.
# The claimed rows are now updated by their address (a TID scan), and the object probe is a row
# comparison only the per-object index serves.

from django.db import migrations

from pgpubsub_simplehistory.queue import sql_function


class Migration(migrations.Migration):
    dependencies = [
        ("pgpubsub_simplehistory", "0005_claim_v1_generic_plan"),
    ]

    operations = [
        # Backwards keeps the new body: the function's signature and results are unchanged.
        migrations.RunSQL(sql_function("claim_v1"), migrations.RunSQL.noop),
    ]
