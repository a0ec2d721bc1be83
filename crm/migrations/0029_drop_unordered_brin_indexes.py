"""The BRIN indexes on deal and activity creation times go: rows are not stored in creation order (correlation
0.52 and 0.51 at 1 M deals), so they filtered almost nothing; the btree indexes on created_at serve ranges."""


from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('crm', '0028_monthly_partitions'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='activity',
            name='activity_created_brin',
        ),
        migrations.RemoveIndex(
            model_name='deal',
            name='deal_created_brin',
        ),
    ]
