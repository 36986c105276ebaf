"""``manage.py demo`` and ``manage.py simulate``."""
