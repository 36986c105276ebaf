from django.db import migrations


def create_defaults(apps, schema_editor):
    Layer = apps.get_model("experiments", "Layer")
    Holdout = apps.get_model("experiments", "Holdout")
    Layer.objects.get_or_create(
        key="default",
        defaults={"name": "Default layer", "salt": "default", "description": "Experiments that share all traffic."},
    )
    Holdout.objects.get_or_create(id=1, defaults={"share": 0.0, "salt": "global"})


class Migration(migrations.Migration):
    dependencies = [("experiments", "0001_initial")]

    operations = [migrations.RunPython(create_defaults, migrations.RunPython.noop)]
