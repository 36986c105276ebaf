"""The Redis cache's serializer: JSON, and a value that is not JSON reads as a miss.

django-redis pickles by default, and unpickling runs whatever the stored bytes
say: anyone able to write one key to Redis could run code in every web and
worker process. JSON cannot carry code. Every value the platform caches is
plain data (consent state as nested lists, recommendation lists, tokens,
counters), so nothing is lost; a planted or corrupt value is logged and
treated as absent, so the caller reads the database as on any miss.
"""

import logging

from django_redis.serializers.json import JSONSerializer as _DjangoRedisJSONSerializer

logger = logging.getLogger(__name__)


class JSONSerializer(_DjangoRedisJSONSerializer):
    def loads(self, value: bytes):
        try:
            return super().loads(value)
        except (UnicodeDecodeError, ValueError):
            logger.warning("a cache value is not JSON (%d bytes): read as a miss", len(value))
            return None
