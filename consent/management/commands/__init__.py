"""``manage.py`` commands of the consent app (one module each)."""
