from decimal import Decimal

from django.db import migrations

PRICES = [
    ("gpt-4o", "2.50", "10.00"),
    ("gpt-4o-mini", "0.15", "0.60"),
    ("claude-sonnet", "3.00", "15.00"),
    ("claude-haiku", "0.25", "1.25"),
    # Unknown models are priced like this row.
    ("default", "2.50", "10.00"),
]


def seed(apps, schema_editor):
    ModelPrice = apps.get_model("billing", "ModelPrice")
    for model, input_price, output_price in PRICES:
        ModelPrice.objects.get_or_create(
            model=model,
            defaults={"input_per_million": Decimal(input_price), "output_per_million": Decimal(output_price)},
        )


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
