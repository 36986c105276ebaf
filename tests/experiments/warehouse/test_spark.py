"""Apache Spark in local mode (ibis's PySpark backend) gives the built-in statistics on the same data.

One SparkSession for the module (starting a JVM costs seconds); needs the ``spark`` extra
(``pip install -e '.[spark]'``) and Java 17.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from experiments.metrics.pipeline import metric_statistics_compute
from experiments.warehouse.engine import warehouse_statistics_compute
from experiments.warehouse.export import builtin_frames
from tests.experiments.factories import started_experiment
from tests.experiments.pipeline_kit import seed_experiment
from tests.experiments.warehouse.test_engine import assert_same_statistics

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture(scope="session")
def spark_session(tmp_path_factory):
    pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed (the spark extra: pip install -e '.[spark]')")
    import shutil

    if shutil.which("java") is None:
        pytest.skip("Spark local mode needs a Java runtime (java not on PATH)")
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("privacylab-tests")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "4")  # a few hundred rows: not the default 200 tasks
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "1g")
        # Tables in a temporary directory and an in-memory catalog: nothing written to the working tree.
        .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("spark-warehouse")))
        .config("spark.sql.catalogImplementation", "in-memory")
        .getOrCreate()
    )
    assert pyspark.__version__
    yield session
    session.stop()


def spark_backend(session, frames):
    import ibis

    backend = ibis.pyspark.connect(session)
    for name, frame in frames.items():
        # A pandas nullable integer column (the consents' notice_id) reaches Spark through ibis as
        # all NULLs; as float64 its small ids stay exact and the NULLs stay NULL.
        nullable = {column: "float64" for column, dtype in frame.dtypes.items() if str(dtype) == "Int64"}
        backend.create_table(name, frame.astype(nullable), overwrite=True)
    return backend


@pytest.mark.parametrize("cap_percentile", [0.9, None])
def test_spark_local_mode_gives_the_built_in_statistics(spark_session, cap_percentile):
    experiment = started_experiment(arms=3)
    experiment.gmv_cap_percentile = cap_percentile
    experiment.save(update_fields=["gmv_cap_percentile"])
    as_of = timezone.now() - timedelta(days=1)
    seed_experiment(experiment, subjects=300, as_of=as_of, seed=17)

    builtin = metric_statistics_compute(experiment=experiment, as_of=as_of)
    warehouse = warehouse_statistics_compute(
        experiment=experiment, backend=spark_backend(spark_session, builtin_frames()), as_of=as_of,
        mapping={"order_lines": {}}, timeout_seconds=600,
    )
    assert sum(builtin.subjects.values()) > 100
    assert_same_statistics(builtin, warehouse, attribution=True)


def test_a_slow_spark_query_is_cancelled_at_the_timeout_and_the_session_stays_usable(spark_session):
    import time

    import ibis

    from experiments.warehouse.errors import WarehouseTransientError
    from experiments.warehouse.guard import query_run

    backend = ibis.pyspark.connect(spark_session)
    # A trillion hashed numbers: hours of work in local mode.
    backend.raw_sql("CREATE OR REPLACE TEMP VIEW slow AS SELECT count(*) AS n FROM range(1000000000000) "
                    "WHERE hash(id) = 42")
    slow = backend.table("slow")
    started = time.monotonic()
    with pytest.raises(WarehouseTransientError, match=r"(?s)timed out after 2 s.*SPARK_JOB_CANCELLED"):
        query_run(backend=backend, run=lambda: backend.execute(slow), timeout_seconds=2)
    assert time.monotonic() - started < 30
    assert spark_session.sql("SELECT 1 AS one").collect()[0].one == 1  # only that job was cancelled
