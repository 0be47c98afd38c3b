from django.db import models

from pgpubsub_simplehistory import HistoricalRecords


class Widget(models.Model):
    name = models.CharField(max_length=50)
    weight = models.DecimalField(max_digits=8, decimal_places=2, default=0)
    code = models.IntegerField(default=0)
    label = models.CharField(max_length=50, blank=True)
    priority = models.IntegerField(default=0)
    history = HistoricalRecords()

    def __str__(self) -> str:
        return self.name
