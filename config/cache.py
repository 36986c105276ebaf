"""The caches: Redis's serializer (JSON; a value that is not JSON reads as a miss), and the embedded mode's shared file cache.

django-redis pickles by default, and unpickling runs whatever the stored bytes
say: anyone able to write one key to Redis could run code in every web and
worker process. JSON cannot carry code. Every value the platform caches is
plain data (consent state as nested lists, recommendation lists, tokens,
counters), so nothing is lost; a planted or corrupt value is logged and
treated as absent, so the caller reads the database as on any miss.
"""

import logging

from django.core.cache.backends.filebased import FileBasedCache
from django_redis.serializers.json import JSONSerializer as _DjangoRedisJSONSerializer

logger = logging.getLogger(__name__)


class JSONSerializer(_DjangoRedisJSONSerializer):
    def loads(self, value: bytes):
        try:
            return super().loads(value)
        except (UnicodeDecodeError, ValueError):
            logger.warning("a cache value is not JSON (%d bytes): read as a miss", len(value))
            return None


class SharedFileCache(FileBasedCache):
    """Django's file cache for the embedded mode's processes, culled now and then.

    ``FileBasedCache`` lists its whole folder before every write to see whether
    it is over ``MAX_ENTRIES``: a recommendation build writing one entry per
    subject would list a folder of as many files each time. This one checks
    once every ``CULL_CHECK_EVERY`` writes of a process, so the folder may
    exceed the limit by that many entries at most.
    """

    CULL_CHECK_EVERY = 500

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._writes = 0

    def _cull(self):
        self._writes += 1
        if self._writes % self.CULL_CHECK_EVERY == 1:
            super()._cull()
