"""What a data source's failure is: worth another try (transient), refused by the cost guard, or anything else."""


class WarehouseError(Exception):
    """The engine could not answer (unreachable, refused, timed out, a table or column missing)."""


class WarehouseTransientError(WarehouseError):
    """The engine did not answer this time (a refused or dropped connection, a query past its timeout).

    The results run tries again, a bounded number of times with backoff
    (``experiments.warehouse.guard.transient_retry``), before it gives up.
    """


class WarehouseCostError(WarehouseError):
    """The cost guard refused the query: the engine estimates it would scan more rows than the source allows.

    Not retried (the next try would be refused the same way); nothing was run.
    """
