-- statistics
WITH "t10" AS (
  SELECT
    *
  FROM (
    SELECT
      "t1"."experiment_id",
      "t1"."phase",
      "t1"."arm",
      "t1"."user_pseudonym" AS "subject_id",
      "t1"."first_exposed_at"
    FROM "assignments" AS "t1"
  ) AS "t6"
  WHERE
    "t6"."experiment_id" = 7
    AND "t6"."phase" = 2
    AND "t6"."first_exposed_at" >= CAST(FROM_ISO8601_TIMESTAMP('2026-11-01T00:00:00+00:00') AS TIMESTAMP WITH TIME ZONE)
    AND "t6"."first_exposed_at" < CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
    AND NOT (
      "t6"."subject_id" IN (
        SELECT
          "t0"."subject_id"
        FROM "subjects" AS "t0"
        WHERE
          "t0"."restricted_at" IS NOT NULL
      )
    )
), "t18" AS (
  SELECT
    "t16"."subject_id",
    "t16"."arm",
    "t16"."fe",
    "t16"."pre_start",
    "t4"."type",
    "t4"."occurred_at",
    "t4"."amount"
  FROM (
    SELECT
      "t11"."subject_id",
      "t11"."arm",
      "t11"."first_exposed_at" AS "fe",
      "t11"."first_exposed_at" - INTERVAL '28' DAY AS "pre_start"
    FROM "t10" AS "t11"
  ) AS "t16"
  INNER JOIN "events" AS "t4"
    ON "t16"."subject_id" = "t4"."subject_id"
), "t46" AS (
  SELECT
    "t45"."arm",
    "t45"."age_band",
    "t45"."province",
    "t45"."platform",
    "t45"."customer",
    COUNT(*) AS "n",
    SUM("t45"."converted") AS "converted",
    SUM("t45"."opted_out") AS "opted_out",
    SUM("t45"."consented") AS "consented",
    SUM("t45"."granted") AS "granted",
    SUM("t45"."gmv") AS "gmv_sum",
    SUM("t45"."gmv" * "t45"."gmv") AS "gmv_ss",
    SUM("t45"."pre_gmv") AS "pre_sum",
    SUM("t45"."pre_gmv" * "t45"."pre_gmv") AS "pre_ss",
    SUM("t45"."gmv" * "t45"."pre_gmv") AS "gmv_pre",
    SUM("t45"."orders") AS "orders_sum",
    SUM("t45"."orders" * "t45"."orders") AS "orders_ss",
    SUM("t45"."aov_gmv") AS "aov_sum",
    SUM("t45"."aov_gmv" * "t45"."aov_gmv") AS "aov_ss",
    SUM("t45"."aov_gmv" * "t45"."orders") AS "aov_orders",
    SUM("t45"."impressions") AS "impressions_sum",
    SUM("t45"."impressions" * "t45"."impressions") AS "impressions_ss",
    SUM("t45"."clicks") AS "clicks_sum",
    SUM("t45"."clicks" * "t45"."clicks") AS "clicks_ss",
    SUM("t45"."clicks" * "t45"."impressions") AS "clicks_impressions"
  FROM (
    SELECT
      "t16"."arm",
      COALESCE(NULLIF("t7"."age_band", ''), 'unknown') AS "age_band",
      COALESCE(NULLIF("t7"."province", ''), 'unknown') AS "province",
      COALESCE(NULLIF("t7"."platform", ''), 'unknown') AS "platform",
      IF(COALESCE("t28"."pre_orders", 0) > 0, 'returning', 'new') AS "customer",
      COALESCE("t28"."orders", 0) AS "orders",
      COALESCE("t28"."impressions", 0) AS "impressions",
      COALESCE("t28"."clicks", 0) AS "clicks",
      IF(COALESCE("t30"."withdrawals", 0) > 0, 1, 0) AS "opted_out",
      IF(COALESCE("t30"."last_decision" = "t30"."last_valid_grant", FALSE), 1, 0) AS "consented",
      IF(
        (
          COALESCE("t30"."withdrawals", 0) > 0
        )
        OR (
          COALESCE("t30"."grants_after", 0) > 0
        )
        OR COALESCE("t30"."last_before" = "t30"."standing_grant", FALSE),
        1,
        0
      ) AS "granted",
      IF(COALESCE("t28"."orders", 0) > 0, 1, 0) AS "converted",
      IF(
        (
          "t44"."cap" IS NULL
        )
        OR (
          COALESCE("t28"."gmv", CAST(0.0 AS DOUBLE)) <= "t44"."cap"
        ),
        COALESCE("t28"."gmv", CAST(0.0 AS DOUBLE)),
        "t44"."cap"
      ) AS "gmv",
      IF(
        (
          "t44"."cap" IS NULL
        )
        OR (
          COALESCE("t28"."pre_gmv", CAST(0.0 AS DOUBLE)) <= "t44"."cap"
        ),
        COALESCE("t28"."pre_gmv", CAST(0.0 AS DOUBLE)),
        "t44"."cap"
      ) AS "pre_gmv",
      COALESCE("t41"."aov_gmv", CAST(0.0 AS DOUBLE)) AS "aov_gmv"
    FROM (
      SELECT
        "t11"."subject_id",
        "t11"."arm",
        "t11"."first_exposed_at" AS "fe",
        "t11"."first_exposed_at" - INTERVAL '28' DAY AS "pre_start"
      FROM "t10" AS "t11"
    ) AS "t16"
    INNER JOIN (
      SELECT
        "t0"."subject_id",
        "t0"."age_band",
        "t0"."province",
        "t0"."platform"
      FROM "subjects" AS "t0"
    ) AS "t7"
      ON "t16"."subject_id" = "t7"."subject_id"
    LEFT OUTER JOIN (
      SELECT
        "t21"."subject_id",
        SUM(
          IF((
            "t21"."type" = 'order'
          ) AND (
            "t21"."occurred_at" >= "t21"."fe"
          ), 1, 0)
        ) AS "orders",
        SUM(
          IF(
            (
              "t21"."type" = 'order'
            ) AND (
              "t21"."occurred_at" >= "t21"."fe"
            ),
            "t21"."amount",
            CAST(0.0 AS DOUBLE)
          )
        ) AS "gmv",
        SUM(
          IF(
            (
              "t21"."type" = 'order'
            )
            AND (
              "t21"."occurred_at" < "t21"."fe"
            )
            AND (
              "t21"."occurred_at" >= "t21"."pre_start"
            ),
            "t21"."amount",
            CAST(0.0 AS DOUBLE)
          )
        ) AS "pre_gmv",
        SUM(
          IF(
            (
              "t21"."type" = 'order'
            )
            AND (
              "t21"."occurred_at" < "t21"."fe"
            )
            AND (
              "t21"."occurred_at" >= "t21"."pre_start"
            ),
            1,
            0
          )
        ) AS "pre_orders",
        SUM(
          IF(
            (
              "t21"."type" = 'rec_impression'
            ) AND (
              "t21"."occurred_at" >= "t21"."fe"
            ),
            1,
            0
          )
        ) AS "impressions",
        SUM(
          IF((
            "t21"."type" = 'rec_click'
          ) AND (
            "t21"."occurred_at" >= "t21"."fe"
          ), 1, 0)
        ) AS "clicks"
      FROM (
        SELECT
          *
        FROM "t18" AS "t20"
        WHERE
          "t20"."occurred_at" < CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
      ) AS "t21"
      GROUP BY
        1
    ) AS "t28"
      ON "t16"."subject_id" = "t28"."subject_id"
    LEFT OUTER JOIN (
      SELECT
        "t24"."subject_id",
        SUM(IF("t24"."ends_grant" AND (
          "t24"."recorded_at" >= "t24"."fe"
        ), 1, 0)) AS "withdrawals",
        SUM(
          IF((
            "t24"."action" = 'grant'
          ) AND (
            "t24"."recorded_at" >= "t24"."fe"
          ), 1, 0)
        ) AS "grants_after",
        MAX("t24"."ledger_id") AS "last_decision",
        MAX(IF("t24"."valid_at_cutoff", "t24"."ledger_id", CAST(NULL AS BIGINT))) AS "last_valid_grant",
        MAX(IF("t24"."recorded_at" < "t24"."fe", "t24"."ledger_id", CAST(NULL AS BIGINT))) AS "last_before",
        MAX(
          IF(
            (
              "t24"."recorded_at" < "t24"."fe"
            )
            AND (
              "t24"."action" = 'grant'
            )
            AND COALESCE((
              "t24"."expires_at" IS NULL
            ) OR (
              "t24"."expires_at" > "t24"."fe"
            ), FALSE),
            "t24"."ledger_id",
            CAST(NULL AS BIGINT)
          )
        ) AS "standing_grant"
      FROM (
        SELECT
          "t15"."subject_id",
          "t15"."fe",
          "t19"."ledger_id",
          "t19"."purpose",
          "t19"."action",
          "t19"."recorded_at",
          "t19"."expires_at",
          "t19"."notice_id",
          "t19"."previous_action",
          "t19"."previous_expires",
          "t19"."ends_grant",
          "t19"."valid_at_cutoff"
        FROM (
          SELECT
            "t11"."subject_id",
            "t11"."first_exposed_at" AS "fe"
          FROM "t10" AS "t11"
        ) AS "t15"
        INNER JOIN (
          SELECT
            "t12"."ledger_id",
            "t12"."subject_id",
            "t12"."purpose",
            "t12"."action",
            "t12"."recorded_at",
            "t12"."expires_at",
            "t12"."notice_id",
            "t12"."previous_action",
            "t12"."previous_expires",
            (
              "t12"."action" = 'withdraw'
            )
            AND COALESCE("t12"."previous_action" = 'grant', FALSE)
            AND COALESCE(
              (
                "t12"."previous_expires" IS NULL
              )
              OR (
                "t12"."previous_expires" > "t12"."recorded_at"
              ),
              FALSE
            ) AS "ends_grant",
            (
              "t12"."action" = 'grant'
            )
            AND COALESCE(
              (
                "t12"."expires_at" IS NULL
              )
              OR (
                "t12"."expires_at" > CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
              ),
              FALSE
            )
            AND COALESCE("t12"."notice_id" IN (3, 5), FALSE) AS "valid_at_cutoff"
          FROM (
            SELECT
              "t9"."ledger_id",
              "t9"."subject_id",
              "t9"."purpose",
              "t9"."action",
              "t9"."recorded_at",
              "t9"."expires_at",
              "t9"."notice_id",
              LAG("t9"."action") OVER (PARTITION BY "t9"."subject_id" ORDER BY "t9"."ledger_id" ASC) AS "previous_action",
              LAG("t9"."expires_at") OVER (PARTITION BY "t9"."subject_id" ORDER BY "t9"."ledger_id" ASC) AS "previous_expires"
            FROM (
              SELECT
                *
              FROM "consents" AS "t3"
              WHERE
                "t3"."purpose" = 'personalization'
                AND "t3"."recorded_at" < CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
            ) AS "t9"
          ) AS "t12"
        ) AS "t19"
          ON "t15"."subject_id" = "t19"."subject_id"
      ) AS "t24"
      GROUP BY
        1
    ) AS "t30"
      ON "t16"."subject_id" = "t30"."subject_id"
    CROSS JOIN (
      SELECT
        "t42"."lo" + (
          (
            "t42"."h" - CAST(FLOOR("t42"."h") AS BIGINT)
          ) * (
            COALESCE("t42"."hi", "t42"."lo") - "t42"."lo"
          )
        ) AS "cap"
      FROM (
        SELECT
          MAX("t40"."h") AS "h",
          MAX(IF("t40"."k" = "t40"."floor", "t40"."v", CAST(NULL AS DOUBLE))) AS "lo",
          MAX(IF("t40"."k" = (
            "t40"."floor" + 1
          ), "t40"."v", CAST(NULL AS DOUBLE))) AS "hi"
        FROM (
          SELECT
            "t37"."v",
            "t37"."k",
            "t37"."n",
            CAST("t37"."n" - 1 AS DOUBLE) * CAST(0.99 AS DOUBLE) AS "h",
            CAST(FLOOR(CAST("t37"."n" - 1 AS DOUBLE) * CAST(0.99 AS DOUBLE)) AS BIGINT) AS "floor"
          FROM (
            SELECT
              "t34"."v",
              ROW_NUMBER() OVER (ORDER BY "t34"."v" ASC) - 1 AS "k",
              COUNT("t34"."v") OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS "n"
            FROM (
              SELECT
                "t32"."gmv" AS "v"
              FROM (
                SELECT
                  "t16"."arm",
                  COALESCE(NULLIF("t7"."age_band", ''), 'unknown') AS "age_band",
                  COALESCE(NULLIF("t7"."province", ''), 'unknown') AS "province",
                  COALESCE(NULLIF("t7"."platform", ''), 'unknown') AS "platform",
                  IF(COALESCE("t28"."pre_orders", 0) > 0, 'returning', 'new') AS "customer",
                  COALESCE("t28"."orders", 0) AS "orders",
                  COALESCE("t28"."gmv", CAST(0.0 AS DOUBLE)) AS "gmv",
                  COALESCE("t28"."pre_gmv", CAST(0.0 AS DOUBLE)) AS "pre_gmv",
                  COALESCE("t28"."impressions", 0) AS "impressions",
                  COALESCE("t28"."clicks", 0) AS "clicks",
                  IF(COALESCE("t30"."withdrawals", 0) > 0, 1, 0) AS "opted_out",
                  IF(COALESCE("t30"."last_decision" = "t30"."last_valid_grant", FALSE), 1, 0) AS "consented",
                  IF(
                    (
                      COALESCE("t30"."withdrawals", 0) > 0
                    )
                    OR (
                      COALESCE("t30"."grants_after", 0) > 0
                    )
                    OR COALESCE("t30"."last_before" = "t30"."standing_grant", FALSE),
                    1,
                    0
                  ) AS "granted",
                  "t16"."subject_id",
                  "t16"."fe"
                FROM (
                  SELECT
                    "t11"."subject_id",
                    "t11"."arm",
                    "t11"."first_exposed_at" AS "fe",
                    "t11"."first_exposed_at" - INTERVAL '28' DAY AS "pre_start"
                  FROM "t10" AS "t11"
                ) AS "t16"
                INNER JOIN (
                  SELECT
                    "t0"."subject_id",
                    "t0"."age_band",
                    "t0"."province",
                    "t0"."platform"
                  FROM "subjects" AS "t0"
                ) AS "t7"
                  ON "t16"."subject_id" = "t7"."subject_id"
                LEFT OUTER JOIN (
                  SELECT
                    "t21"."subject_id",
                    SUM(
                      IF((
                        "t21"."type" = 'order'
                      ) AND (
                        "t21"."occurred_at" >= "t21"."fe"
                      ), 1, 0)
                    ) AS "orders",
                    SUM(
                      IF(
                        (
                          "t21"."type" = 'order'
                        ) AND (
                          "t21"."occurred_at" >= "t21"."fe"
                        ),
                        "t21"."amount",
                        CAST(0.0 AS DOUBLE)
                      )
                    ) AS "gmv",
                    SUM(
                      IF(
                        (
                          "t21"."type" = 'order'
                        )
                        AND (
                          "t21"."occurred_at" < "t21"."fe"
                        )
                        AND (
                          "t21"."occurred_at" >= "t21"."pre_start"
                        ),
                        "t21"."amount",
                        CAST(0.0 AS DOUBLE)
                      )
                    ) AS "pre_gmv",
                    SUM(
                      IF(
                        (
                          "t21"."type" = 'order'
                        )
                        AND (
                          "t21"."occurred_at" < "t21"."fe"
                        )
                        AND (
                          "t21"."occurred_at" >= "t21"."pre_start"
                        ),
                        1,
                        0
                      )
                    ) AS "pre_orders",
                    SUM(
                      IF(
                        (
                          "t21"."type" = 'rec_impression'
                        ) AND (
                          "t21"."occurred_at" >= "t21"."fe"
                        ),
                        1,
                        0
                      )
                    ) AS "impressions",
                    SUM(
                      IF((
                        "t21"."type" = 'rec_click'
                      ) AND (
                        "t21"."occurred_at" >= "t21"."fe"
                      ), 1, 0)
                    ) AS "clicks"
                  FROM (
                    SELECT
                      *
                    FROM "t18" AS "t20"
                    WHERE
                      "t20"."occurred_at" < CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
                  ) AS "t21"
                  GROUP BY
                    1
                ) AS "t28"
                  ON "t16"."subject_id" = "t28"."subject_id"
                LEFT OUTER JOIN (
                  SELECT
                    "t24"."subject_id",
                    SUM(IF("t24"."ends_grant" AND (
                      "t24"."recorded_at" >= "t24"."fe"
                    ), 1, 0)) AS "withdrawals",
                    SUM(
                      IF((
                        "t24"."action" = 'grant'
                      ) AND (
                        "t24"."recorded_at" >= "t24"."fe"
                      ), 1, 0)
                    ) AS "grants_after",
                    MAX("t24"."ledger_id") AS "last_decision",
                    MAX(IF("t24"."valid_at_cutoff", "t24"."ledger_id", CAST(NULL AS BIGINT))) AS "last_valid_grant",
                    MAX(IF("t24"."recorded_at" < "t24"."fe", "t24"."ledger_id", CAST(NULL AS BIGINT))) AS "last_before",
                    MAX(
                      IF(
                        (
                          "t24"."recorded_at" < "t24"."fe"
                        )
                        AND (
                          "t24"."action" = 'grant'
                        )
                        AND COALESCE((
                          "t24"."expires_at" IS NULL
                        ) OR (
                          "t24"."expires_at" > "t24"."fe"
                        ), FALSE),
                        "t24"."ledger_id",
                        CAST(NULL AS BIGINT)
                      )
                    ) AS "standing_grant"
                  FROM (
                    SELECT
                      "t15"."subject_id",
                      "t15"."fe",
                      "t19"."ledger_id",
                      "t19"."purpose",
                      "t19"."action",
                      "t19"."recorded_at",
                      "t19"."expires_at",
                      "t19"."notice_id",
                      "t19"."previous_action",
                      "t19"."previous_expires",
                      "t19"."ends_grant",
                      "t19"."valid_at_cutoff"
                    FROM (
                      SELECT
                        "t11"."subject_id",
                        "t11"."first_exposed_at" AS "fe"
                      FROM "t10" AS "t11"
                    ) AS "t15"
                    INNER JOIN (
                      SELECT
                        "t12"."ledger_id",
                        "t12"."subject_id",
                        "t12"."purpose",
                        "t12"."action",
                        "t12"."recorded_at",
                        "t12"."expires_at",
                        "t12"."notice_id",
                        "t12"."previous_action",
                        "t12"."previous_expires",
                        (
                          "t12"."action" = 'withdraw'
                        )
                        AND COALESCE("t12"."previous_action" = 'grant', FALSE)
                        AND COALESCE(
                          (
                            "t12"."previous_expires" IS NULL
                          )
                          OR (
                            "t12"."previous_expires" > "t12"."recorded_at"
                          ),
                          FALSE
                        ) AS "ends_grant",
                        (
                          "t12"."action" = 'grant'
                        )
                        AND COALESCE(
                          (
                            "t12"."expires_at" IS NULL
                          )
                          OR (
                            "t12"."expires_at" > CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
                          ),
                          FALSE
                        )
                        AND COALESCE("t12"."notice_id" IN (3, 5), FALSE) AS "valid_at_cutoff"
                      FROM (
                        SELECT
                          "t9"."ledger_id",
                          "t9"."subject_id",
                          "t9"."purpose",
                          "t9"."action",
                          "t9"."recorded_at",
                          "t9"."expires_at",
                          "t9"."notice_id",
                          LAG("t9"."action") OVER (PARTITION BY "t9"."subject_id" ORDER BY "t9"."ledger_id" ASC) AS "previous_action",
                          LAG("t9"."expires_at") OVER (PARTITION BY "t9"."subject_id" ORDER BY "t9"."ledger_id" ASC) AS "previous_expires"
                        FROM (
                          SELECT
                            *
                          FROM "consents" AS "t3"
                          WHERE
                            "t3"."purpose" = 'personalization'
                            AND "t3"."recorded_at" < CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
                        ) AS "t9"
                      ) AS "t12"
                    ) AS "t19"
                      ON "t15"."subject_id" = "t19"."subject_id"
                  ) AS "t24"
                  GROUP BY
                    1
                ) AS "t30"
                  ON "t16"."subject_id" = "t30"."subject_id"
              ) AS "t32"
              WHERE
                "t32"."gmv" > 0
            ) AS "t34"
          ) AS "t37"
        ) AS "t40"
      ) AS "t42"
    ) AS "t44"
    LEFT OUTER JOIN (
      SELECT
        "t38"."subject_id",
        SUM(LEAST("t38"."amount", "t38"."order_cap")) AS "aov_gmv"
      FROM (
        SELECT
          "t25"."subject_id",
          "t25"."amount",
          "t36"."order_cap"
        FROM (
          SELECT
            "t20"."subject_id",
            "t20"."amount"
          FROM "t18" AS "t20"
          WHERE
            "t20"."occurred_at" < CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
            AND "t20"."type" = 'order'
            AND "t20"."occurred_at" >= "t20"."fe"
        ) AS "t25"
        CROSS JOIN (
          SELECT
            "t33"."lo" + (
              (
                "t33"."h" - CAST(FLOOR("t33"."h") AS BIGINT)
              ) * (
                COALESCE("t33"."hi", "t33"."lo") - "t33"."lo"
              )
            ) AS "order_cap"
          FROM (
            SELECT
              MAX("t31"."h") AS "h",
              MAX(IF("t31"."k" = "t31"."floor", "t31"."v", CAST(NULL AS DOUBLE))) AS "lo",
              MAX(IF("t31"."k" = (
                "t31"."floor" + 1
              ), "t31"."v", CAST(NULL AS DOUBLE))) AS "hi"
            FROM (
              SELECT
                "t26"."v",
                "t26"."k",
                "t26"."n",
                CAST("t26"."n" - 1 AS DOUBLE) * CAST(0.99 AS DOUBLE) AS "h",
                CAST(FLOOR(CAST("t26"."n" - 1 AS DOUBLE) * CAST(0.99 AS DOUBLE)) AS BIGINT) AS "floor"
              FROM (
                SELECT
                  "t23"."v",
                  ROW_NUMBER() OVER (ORDER BY "t23"."v" ASC) - 1 AS "k",
                  COUNT("t23"."v") OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS "n"
                FROM (
                  SELECT
                    "t20"."amount" AS "v"
                  FROM "t18" AS "t20"
                  WHERE
                    "t20"."occurred_at" < CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
                    AND "t20"."type" = 'order'
                    AND "t20"."occurred_at" >= "t20"."fe"
                ) AS "t23"
              ) AS "t26"
            ) AS "t31"
          ) AS "t33"
        ) AS "t36"
      ) AS "t38"
      GROUP BY
        1
    ) AS "t41"
      ON "t16"."subject_id" = "t41"."subject_id"
  ) AS "t45"
  GROUP BY
    1,
    2,
    3,
    4,
    5
)
SELECT
  *
FROM (
  SELECT
    *
  FROM (
    SELECT
      'province' AS "dimension",
      "t48"."province" AS "value",
      "t48"."arm",
      CAST("t48"."n" AS DOUBLE) AS "n",
      CAST("t48"."converted" AS DOUBLE) AS "converted",
      CAST("t48"."opted_out" AS DOUBLE) AS "opted_out",
      CAST("t48"."consented" AS DOUBLE) AS "consented",
      CAST("t48"."granted" AS DOUBLE) AS "granted",
      "t48"."gmv_sum",
      "t48"."gmv_ss",
      "t48"."pre_sum",
      "t48"."pre_ss",
      "t48"."gmv_pre",
      CAST("t48"."orders_sum" AS DOUBLE) AS "orders_sum",
      CAST("t48"."orders_ss" AS DOUBLE) AS "orders_ss",
      "t48"."aov_sum",
      "t48"."aov_ss",
      "t48"."aov_orders",
      CAST("t48"."impressions_sum" AS DOUBLE) AS "impressions_sum",
      CAST("t48"."impressions_ss" AS DOUBLE) AS "impressions_ss",
      CAST("t48"."clicks_sum" AS DOUBLE) AS "clicks_sum",
      CAST("t48"."clicks_ss" AS DOUBLE) AS "clicks_ss",
      CAST("t48"."clicks_impressions" AS DOUBLE) AS "clicks_impressions"
    FROM (
      SELECT
        "t47"."arm",
        "t47"."province",
        SUM("t47"."n") AS "n",
        SUM("t47"."converted") AS "converted",
        SUM("t47"."opted_out") AS "opted_out",
        SUM("t47"."consented") AS "consented",
        SUM("t47"."granted") AS "granted",
        SUM("t47"."gmv_sum") AS "gmv_sum",
        SUM("t47"."gmv_ss") AS "gmv_ss",
        SUM("t47"."pre_sum") AS "pre_sum",
        SUM("t47"."pre_ss") AS "pre_ss",
        SUM("t47"."gmv_pre") AS "gmv_pre",
        SUM("t47"."orders_sum") AS "orders_sum",
        SUM("t47"."orders_ss") AS "orders_ss",
        SUM("t47"."aov_sum") AS "aov_sum",
        SUM("t47"."aov_ss") AS "aov_ss",
        SUM("t47"."aov_orders") AS "aov_orders",
        SUM("t47"."impressions_sum") AS "impressions_sum",
        SUM("t47"."impressions_ss") AS "impressions_ss",
        SUM("t47"."clicks_sum") AS "clicks_sum",
        SUM("t47"."clicks_ss") AS "clicks_ss",
        SUM("t47"."clicks_impressions") AS "clicks_impressions"
      FROM "t46" AS "t47"
      GROUP BY
        1,
        2
    ) AS "t48"
  ) AS "t53"
  UNION ALL
  SELECT
    *
  FROM (
    SELECT
      'platform' AS "dimension",
      "t49"."platform" AS "value",
      "t49"."arm",
      CAST("t49"."n" AS DOUBLE) AS "n",
      CAST("t49"."converted" AS DOUBLE) AS "converted",
      CAST("t49"."opted_out" AS DOUBLE) AS "opted_out",
      CAST("t49"."consented" AS DOUBLE) AS "consented",
      CAST("t49"."granted" AS DOUBLE) AS "granted",
      "t49"."gmv_sum",
      "t49"."gmv_ss",
      "t49"."pre_sum",
      "t49"."pre_ss",
      "t49"."gmv_pre",
      CAST("t49"."orders_sum" AS DOUBLE) AS "orders_sum",
      CAST("t49"."orders_ss" AS DOUBLE) AS "orders_ss",
      "t49"."aov_sum",
      "t49"."aov_ss",
      "t49"."aov_orders",
      CAST("t49"."impressions_sum" AS DOUBLE) AS "impressions_sum",
      CAST("t49"."impressions_ss" AS DOUBLE) AS "impressions_ss",
      CAST("t49"."clicks_sum" AS DOUBLE) AS "clicks_sum",
      CAST("t49"."clicks_ss" AS DOUBLE) AS "clicks_ss",
      CAST("t49"."clicks_impressions" AS DOUBLE) AS "clicks_impressions"
    FROM (
      SELECT
        "t47"."arm",
        "t47"."platform",
        SUM("t47"."n") AS "n",
        SUM("t47"."converted") AS "converted",
        SUM("t47"."opted_out") AS "opted_out",
        SUM("t47"."consented") AS "consented",
        SUM("t47"."granted") AS "granted",
        SUM("t47"."gmv_sum") AS "gmv_sum",
        SUM("t47"."gmv_ss") AS "gmv_ss",
        SUM("t47"."pre_sum") AS "pre_sum",
        SUM("t47"."pre_ss") AS "pre_ss",
        SUM("t47"."gmv_pre") AS "gmv_pre",
        SUM("t47"."orders_sum") AS "orders_sum",
        SUM("t47"."orders_ss") AS "orders_ss",
        SUM("t47"."aov_sum") AS "aov_sum",
        SUM("t47"."aov_ss") AS "aov_ss",
        SUM("t47"."aov_orders") AS "aov_orders",
        SUM("t47"."impressions_sum") AS "impressions_sum",
        SUM("t47"."impressions_ss") AS "impressions_ss",
        SUM("t47"."clicks_sum") AS "clicks_sum",
        SUM("t47"."clicks_ss") AS "clicks_ss",
        SUM("t47"."clicks_impressions") AS "clicks_impressions"
      FROM "t46" AS "t47"
      GROUP BY
        1,
        2
    ) AS "t49"
  ) AS "t54"
) AS "t58"
UNION ALL
SELECT
  *
FROM (
  SELECT
    *
  FROM (
    SELECT
      'customer' AS "dimension",
      "t50"."customer" AS "value",
      "t50"."arm",
      CAST("t50"."n" AS DOUBLE) AS "n",
      CAST("t50"."converted" AS DOUBLE) AS "converted",
      CAST("t50"."opted_out" AS DOUBLE) AS "opted_out",
      CAST("t50"."consented" AS DOUBLE) AS "consented",
      CAST("t50"."granted" AS DOUBLE) AS "granted",
      "t50"."gmv_sum",
      "t50"."gmv_ss",
      "t50"."pre_sum",
      "t50"."pre_ss",
      "t50"."gmv_pre",
      CAST("t50"."orders_sum" AS DOUBLE) AS "orders_sum",
      CAST("t50"."orders_ss" AS DOUBLE) AS "orders_ss",
      "t50"."aov_sum",
      "t50"."aov_ss",
      "t50"."aov_orders",
      CAST("t50"."impressions_sum" AS DOUBLE) AS "impressions_sum",
      CAST("t50"."impressions_ss" AS DOUBLE) AS "impressions_ss",
      CAST("t50"."clicks_sum" AS DOUBLE) AS "clicks_sum",
      CAST("t50"."clicks_ss" AS DOUBLE) AS "clicks_ss",
      CAST("t50"."clicks_impressions" AS DOUBLE) AS "clicks_impressions"
    FROM (
      SELECT
        "t47"."arm",
        "t47"."customer",
        SUM("t47"."n") AS "n",
        SUM("t47"."converted") AS "converted",
        SUM("t47"."opted_out") AS "opted_out",
        SUM("t47"."consented") AS "consented",
        SUM("t47"."granted") AS "granted",
        SUM("t47"."gmv_sum") AS "gmv_sum",
        SUM("t47"."gmv_ss") AS "gmv_ss",
        SUM("t47"."pre_sum") AS "pre_sum",
        SUM("t47"."pre_ss") AS "pre_ss",
        SUM("t47"."gmv_pre") AS "gmv_pre",
        SUM("t47"."orders_sum") AS "orders_sum",
        SUM("t47"."orders_ss") AS "orders_ss",
        SUM("t47"."aov_sum") AS "aov_sum",
        SUM("t47"."aov_ss") AS "aov_ss",
        SUM("t47"."aov_orders") AS "aov_orders",
        SUM("t47"."impressions_sum") AS "impressions_sum",
        SUM("t47"."impressions_ss") AS "impressions_ss",
        SUM("t47"."clicks_sum") AS "clicks_sum",
        SUM("t47"."clicks_ss") AS "clicks_ss",
        SUM("t47"."clicks_impressions") AS "clicks_impressions"
      FROM "t46" AS "t47"
      GROUP BY
        1,
        2
    ) AS "t50"
  ) AS "t55"
  UNION ALL
  SELECT
    *
  FROM (
    SELECT
      *
    FROM (
      SELECT
        'all' AS "dimension",
        '' AS "value",
        "t51"."arm",
        CAST("t51"."n" AS DOUBLE) AS "n",
        CAST("t51"."converted" AS DOUBLE) AS "converted",
        CAST("t51"."opted_out" AS DOUBLE) AS "opted_out",
        CAST("t51"."consented" AS DOUBLE) AS "consented",
        CAST("t51"."granted" AS DOUBLE) AS "granted",
        "t51"."gmv_sum",
        "t51"."gmv_ss",
        "t51"."pre_sum",
        "t51"."pre_ss",
        "t51"."gmv_pre",
        CAST("t51"."orders_sum" AS DOUBLE) AS "orders_sum",
        CAST("t51"."orders_ss" AS DOUBLE) AS "orders_ss",
        "t51"."aov_sum",
        "t51"."aov_ss",
        "t51"."aov_orders",
        CAST("t51"."impressions_sum" AS DOUBLE) AS "impressions_sum",
        CAST("t51"."impressions_ss" AS DOUBLE) AS "impressions_ss",
        CAST("t51"."clicks_sum" AS DOUBLE) AS "clicks_sum",
        CAST("t51"."clicks_ss" AS DOUBLE) AS "clicks_ss",
        CAST("t51"."clicks_impressions" AS DOUBLE) AS "clicks_impressions"
      FROM (
        SELECT
          "t47"."arm",
          SUM("t47"."n") AS "n",
          SUM("t47"."converted") AS "converted",
          SUM("t47"."opted_out") AS "opted_out",
          SUM("t47"."consented") AS "consented",
          SUM("t47"."granted") AS "granted",
          SUM("t47"."gmv_sum") AS "gmv_sum",
          SUM("t47"."gmv_ss") AS "gmv_ss",
          SUM("t47"."pre_sum") AS "pre_sum",
          SUM("t47"."pre_ss") AS "pre_ss",
          SUM("t47"."gmv_pre") AS "gmv_pre",
          SUM("t47"."orders_sum") AS "orders_sum",
          SUM("t47"."orders_ss") AS "orders_ss",
          SUM("t47"."aov_sum") AS "aov_sum",
          SUM("t47"."aov_ss") AS "aov_ss",
          SUM("t47"."aov_orders") AS "aov_orders",
          SUM("t47"."impressions_sum") AS "impressions_sum",
          SUM("t47"."impressions_ss") AS "impressions_ss",
          SUM("t47"."clicks_sum") AS "clicks_sum",
          SUM("t47"."clicks_ss") AS "clicks_ss",
          SUM("t47"."clicks_impressions") AS "clicks_impressions"
        FROM "t46" AS "t47"
        GROUP BY
          1
      ) AS "t51"
    ) AS "t56"
    UNION ALL
    SELECT
      *
    FROM (
      SELECT
        'age_band' AS "dimension",
        "t52"."age_band" AS "value",
        "t52"."arm",
        CAST("t52"."n" AS DOUBLE) AS "n",
        CAST("t52"."converted" AS DOUBLE) AS "converted",
        CAST("t52"."opted_out" AS DOUBLE) AS "opted_out",
        CAST("t52"."consented" AS DOUBLE) AS "consented",
        CAST("t52"."granted" AS DOUBLE) AS "granted",
        "t52"."gmv_sum",
        "t52"."gmv_ss",
        "t52"."pre_sum",
        "t52"."pre_ss",
        "t52"."gmv_pre",
        CAST("t52"."orders_sum" AS DOUBLE) AS "orders_sum",
        CAST("t52"."orders_ss" AS DOUBLE) AS "orders_ss",
        "t52"."aov_sum",
        "t52"."aov_ss",
        "t52"."aov_orders",
        CAST("t52"."impressions_sum" AS DOUBLE) AS "impressions_sum",
        CAST("t52"."impressions_ss" AS DOUBLE) AS "impressions_ss",
        CAST("t52"."clicks_sum" AS DOUBLE) AS "clicks_sum",
        CAST("t52"."clicks_ss" AS DOUBLE) AS "clicks_ss",
        CAST("t52"."clicks_impressions" AS DOUBLE) AS "clicks_impressions"
      FROM (
        SELECT
          "t47"."arm",
          "t47"."age_band",
          SUM("t47"."n") AS "n",
          SUM("t47"."converted") AS "converted",
          SUM("t47"."opted_out") AS "opted_out",
          SUM("t47"."consented") AS "consented",
          SUM("t47"."granted") AS "granted",
          SUM("t47"."gmv_sum") AS "gmv_sum",
          SUM("t47"."gmv_ss") AS "gmv_ss",
          SUM("t47"."pre_sum") AS "pre_sum",
          SUM("t47"."pre_ss") AS "pre_ss",
          SUM("t47"."gmv_pre") AS "gmv_pre",
          SUM("t47"."orders_sum") AS "orders_sum",
          SUM("t47"."orders_ss") AS "orders_ss",
          SUM("t47"."aov_sum") AS "aov_sum",
          SUM("t47"."aov_ss") AS "aov_ss",
          SUM("t47"."aov_orders") AS "aov_orders",
          SUM("t47"."impressions_sum") AS "impressions_sum",
          SUM("t47"."impressions_ss") AS "impressions_ss",
          SUM("t47"."clicks_sum") AS "clicks_sum",
          SUM("t47"."clicks_ss") AS "clicks_ss",
          SUM("t47"."clicks_impressions") AS "clicks_impressions"
        FROM "t46" AS "t47"
        GROUP BY
          1,
          2
      ) AS "t52"
    ) AS "t57"
  ) AS "t59"
) AS "t60"
;
-- cap
WITH "t10" AS (
  SELECT
    *
  FROM (
    SELECT
      "t1"."experiment_id",
      "t1"."phase",
      "t1"."arm",
      "t1"."user_pseudonym" AS "subject_id",
      "t1"."first_exposed_at"
    FROM "assignments" AS "t1"
  ) AS "t6"
  WHERE
    "t6"."experiment_id" = 7
    AND "t6"."phase" = 2
    AND "t6"."first_exposed_at" >= CAST(FROM_ISO8601_TIMESTAMP('2026-11-01T00:00:00+00:00') AS TIMESTAMP WITH TIME ZONE)
    AND "t6"."first_exposed_at" < CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
    AND NOT (
      "t6"."subject_id" IN (
        SELECT
          "t0"."subject_id"
        FROM "subjects" AS "t0"
        WHERE
          "t0"."restricted_at" IS NOT NULL
      )
    )
)
SELECT
  "t30"."lo" + (
    (
      "t30"."h" - CAST(FLOOR("t30"."h") AS BIGINT)
    ) * (
      COALESCE("t30"."hi", "t30"."lo") - "t30"."lo"
    )
  ) AS "cap"
FROM (
  SELECT
    MAX("t29"."h") AS "h",
    MAX(IF("t29"."k" = "t29"."floor", "t29"."v", CAST(NULL AS DOUBLE))) AS "lo",
    MAX(IF("t29"."k" = (
      "t29"."floor" + 1
    ), "t29"."v", CAST(NULL AS DOUBLE))) AS "hi"
  FROM (
    SELECT
      "t28"."v",
      "t28"."k",
      "t28"."n",
      CAST("t28"."n" - 1 AS DOUBLE) * CAST(0.99 AS DOUBLE) AS "h",
      CAST(FLOOR(CAST("t28"."n" - 1 AS DOUBLE) * CAST(0.99 AS DOUBLE)) AS BIGINT) AS "floor"
    FROM (
      SELECT
        "t27"."v",
        ROW_NUMBER() OVER (ORDER BY "t27"."v" ASC) - 1 AS "k",
        COUNT("t27"."v") OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS "n"
      FROM (
        SELECT
          "t26"."gmv" AS "v"
        FROM (
          SELECT
            "t16"."arm",
            COALESCE(NULLIF("t7"."age_band", ''), 'unknown') AS "age_band",
            COALESCE(NULLIF("t7"."province", ''), 'unknown') AS "province",
            COALESCE(NULLIF("t7"."platform", ''), 'unknown') AS "platform",
            IF(COALESCE("t23"."pre_orders", 0) > 0, 'returning', 'new') AS "customer",
            COALESCE("t23"."orders", 0) AS "orders",
            COALESCE("t23"."gmv", CAST(0.0 AS DOUBLE)) AS "gmv",
            COALESCE("t23"."pre_gmv", CAST(0.0 AS DOUBLE)) AS "pre_gmv",
            COALESCE("t23"."impressions", 0) AS "impressions",
            COALESCE("t23"."clicks", 0) AS "clicks",
            IF(COALESCE("t25"."withdrawals", 0) > 0, 1, 0) AS "opted_out",
            IF(COALESCE("t25"."last_decision" = "t25"."last_valid_grant", FALSE), 1, 0) AS "consented",
            IF(
              (
                COALESCE("t25"."withdrawals", 0) > 0
              )
              OR (
                COALESCE("t25"."grants_after", 0) > 0
              )
              OR COALESCE("t25"."last_before" = "t25"."standing_grant", FALSE),
              1,
              0
            ) AS "granted",
            "t16"."subject_id",
            "t16"."fe"
          FROM (
            SELECT
              "t11"."subject_id",
              "t11"."arm",
              "t11"."first_exposed_at" AS "fe",
              "t11"."first_exposed_at" - INTERVAL '28' DAY AS "pre_start"
            FROM "t10" AS "t11"
          ) AS "t16"
          INNER JOIN (
            SELECT
              "t0"."subject_id",
              "t0"."age_band",
              "t0"."province",
              "t0"."platform"
            FROM "subjects" AS "t0"
          ) AS "t7"
            ON "t16"."subject_id" = "t7"."subject_id"
          LEFT OUTER JOIN (
            SELECT
              "t20"."subject_id",
              SUM(
                IF((
                  "t20"."type" = 'order'
                ) AND (
                  "t20"."occurred_at" >= "t20"."fe"
                ), 1, 0)
              ) AS "orders",
              SUM(
                IF(
                  (
                    "t20"."type" = 'order'
                  ) AND (
                    "t20"."occurred_at" >= "t20"."fe"
                  ),
                  "t20"."amount",
                  CAST(0.0 AS DOUBLE)
                )
              ) AS "gmv",
              SUM(
                IF(
                  (
                    "t20"."type" = 'order'
                  )
                  AND (
                    "t20"."occurred_at" < "t20"."fe"
                  )
                  AND (
                    "t20"."occurred_at" >= "t20"."pre_start"
                  ),
                  "t20"."amount",
                  CAST(0.0 AS DOUBLE)
                )
              ) AS "pre_gmv",
              SUM(
                IF(
                  (
                    "t20"."type" = 'order'
                  )
                  AND (
                    "t20"."occurred_at" < "t20"."fe"
                  )
                  AND (
                    "t20"."occurred_at" >= "t20"."pre_start"
                  ),
                  1,
                  0
                )
              ) AS "pre_orders",
              SUM(
                IF(
                  (
                    "t20"."type" = 'rec_impression'
                  ) AND (
                    "t20"."occurred_at" >= "t20"."fe"
                  ),
                  1,
                  0
                )
              ) AS "impressions",
              SUM(
                IF((
                  "t20"."type" = 'rec_click'
                ) AND (
                  "t20"."occurred_at" >= "t20"."fe"
                ), 1, 0)
              ) AS "clicks"
            FROM (
              SELECT
                *
              FROM (
                SELECT
                  "t16"."subject_id",
                  "t16"."arm",
                  "t16"."fe",
                  "t16"."pre_start",
                  "t4"."type",
                  "t4"."occurred_at",
                  "t4"."amount"
                FROM (
                  SELECT
                    "t11"."subject_id",
                    "t11"."arm",
                    "t11"."first_exposed_at" AS "fe",
                    "t11"."first_exposed_at" - INTERVAL '28' DAY AS "pre_start"
                  FROM "t10" AS "t11"
                ) AS "t16"
                INNER JOIN "events" AS "t4"
                  ON "t16"."subject_id" = "t4"."subject_id"
              ) AS "t18"
              WHERE
                "t18"."occurred_at" < CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
            ) AS "t20"
            GROUP BY
              1
          ) AS "t23"
            ON "t16"."subject_id" = "t23"."subject_id"
          LEFT OUTER JOIN (
            SELECT
              "t21"."subject_id",
              SUM(IF("t21"."ends_grant" AND (
                "t21"."recorded_at" >= "t21"."fe"
              ), 1, 0)) AS "withdrawals",
              SUM(
                IF((
                  "t21"."action" = 'grant'
                ) AND (
                  "t21"."recorded_at" >= "t21"."fe"
                ), 1, 0)
              ) AS "grants_after",
              MAX("t21"."ledger_id") AS "last_decision",
              MAX(IF("t21"."valid_at_cutoff", "t21"."ledger_id", CAST(NULL AS BIGINT))) AS "last_valid_grant",
              MAX(IF("t21"."recorded_at" < "t21"."fe", "t21"."ledger_id", CAST(NULL AS BIGINT))) AS "last_before",
              MAX(
                IF(
                  (
                    "t21"."recorded_at" < "t21"."fe"
                  )
                  AND (
                    "t21"."action" = 'grant'
                  )
                  AND COALESCE((
                    "t21"."expires_at" IS NULL
                  ) OR (
                    "t21"."expires_at" > "t21"."fe"
                  ), FALSE),
                  "t21"."ledger_id",
                  CAST(NULL AS BIGINT)
                )
              ) AS "standing_grant"
            FROM (
              SELECT
                "t15"."subject_id",
                "t15"."fe",
                "t19"."ledger_id",
                "t19"."purpose",
                "t19"."action",
                "t19"."recorded_at",
                "t19"."expires_at",
                "t19"."notice_id",
                "t19"."previous_action",
                "t19"."previous_expires",
                "t19"."ends_grant",
                "t19"."valid_at_cutoff"
              FROM (
                SELECT
                  "t11"."subject_id",
                  "t11"."first_exposed_at" AS "fe"
                FROM "t10" AS "t11"
              ) AS "t15"
              INNER JOIN (
                SELECT
                  "t12"."ledger_id",
                  "t12"."subject_id",
                  "t12"."purpose",
                  "t12"."action",
                  "t12"."recorded_at",
                  "t12"."expires_at",
                  "t12"."notice_id",
                  "t12"."previous_action",
                  "t12"."previous_expires",
                  (
                    "t12"."action" = 'withdraw'
                  )
                  AND COALESCE("t12"."previous_action" = 'grant', FALSE)
                  AND COALESCE(
                    (
                      "t12"."previous_expires" IS NULL
                    )
                    OR (
                      "t12"."previous_expires" > "t12"."recorded_at"
                    ),
                    FALSE
                  ) AS "ends_grant",
                  (
                    "t12"."action" = 'grant'
                  )
                  AND COALESCE(
                    (
                      "t12"."expires_at" IS NULL
                    )
                    OR (
                      "t12"."expires_at" > CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
                    ),
                    FALSE
                  )
                  AND COALESCE("t12"."notice_id" IN (3, 5), FALSE) AS "valid_at_cutoff"
                FROM (
                  SELECT
                    "t9"."ledger_id",
                    "t9"."subject_id",
                    "t9"."purpose",
                    "t9"."action",
                    "t9"."recorded_at",
                    "t9"."expires_at",
                    "t9"."notice_id",
                    LAG("t9"."action") OVER (PARTITION BY "t9"."subject_id" ORDER BY "t9"."ledger_id" ASC) AS "previous_action",
                    LAG("t9"."expires_at") OVER (PARTITION BY "t9"."subject_id" ORDER BY "t9"."ledger_id" ASC) AS "previous_expires"
                  FROM (
                    SELECT
                      *
                    FROM "consents" AS "t3"
                    WHERE
                      "t3"."purpose" = 'personalization'
                      AND "t3"."recorded_at" < CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
                  ) AS "t9"
                ) AS "t12"
              ) AS "t19"
                ON "t15"."subject_id" = "t19"."subject_id"
            ) AS "t21"
            GROUP BY
              1
          ) AS "t25"
            ON "t16"."subject_id" = "t25"."subject_id"
        ) AS "t26"
        WHERE
          "t26"."gmv" > 0
      ) AS "t27"
    ) AS "t28"
  ) AS "t29"
) AS "t30"
;
-- order_cap
SELECT
  "t13"."lo" + (
    (
      "t13"."h" - CAST(FLOOR("t13"."h") AS BIGINT)
    ) * (
      COALESCE("t13"."hi", "t13"."lo") - "t13"."lo"
    )
  ) AS "order_cap"
FROM (
  SELECT
    MAX("t12"."h") AS "h",
    MAX(IF("t12"."k" = "t12"."floor", "t12"."v", CAST(NULL AS DOUBLE))) AS "lo",
    MAX(IF("t12"."k" = (
      "t12"."floor" + 1
    ), "t12"."v", CAST(NULL AS DOUBLE))) AS "hi"
  FROM (
    SELECT
      "t11"."v",
      "t11"."k",
      "t11"."n",
      CAST("t11"."n" - 1 AS DOUBLE) * CAST(0.99 AS DOUBLE) AS "h",
      CAST(FLOOR(CAST("t11"."n" - 1 AS DOUBLE) * CAST(0.99 AS DOUBLE)) AS BIGINT) AS "floor"
    FROM (
      SELECT
        "t10"."v",
        ROW_NUMBER() OVER (ORDER BY "t10"."v" ASC) - 1 AS "k",
        COUNT("t10"."v") OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS "n"
      FROM (
        SELECT
          "t9"."amount" AS "v"
        FROM (
          SELECT
            "t8"."subject_id",
            "t8"."arm",
            "t8"."fe",
            "t8"."pre_start",
            "t3"."type",
            "t3"."occurred_at",
            "t3"."amount"
          FROM (
            SELECT
              "t6"."subject_id",
              "t6"."arm",
              "t6"."first_exposed_at" AS "fe",
              "t6"."first_exposed_at" - INTERVAL '28' DAY AS "pre_start"
            FROM (
              SELECT
                *
              FROM (
                SELECT
                  "t1"."experiment_id",
                  "t1"."phase",
                  "t1"."arm",
                  "t1"."user_pseudonym" AS "subject_id",
                  "t1"."first_exposed_at"
                FROM "assignments" AS "t1"
              ) AS "t4"
              WHERE
                "t4"."experiment_id" = 7
                AND "t4"."phase" = 2
                AND "t4"."first_exposed_at" >= CAST(FROM_ISO8601_TIMESTAMP('2026-11-01T00:00:00+00:00') AS TIMESTAMP WITH TIME ZONE)
                AND "t4"."first_exposed_at" < CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
                AND NOT (
                  "t4"."subject_id" IN (
                    SELECT
                      "t2"."subject_id"
                    FROM "subjects" AS "t2"
                    WHERE
                      "t2"."restricted_at" IS NOT NULL
                  )
                )
            ) AS "t6"
          ) AS "t8"
          INNER JOIN "events" AS "t3"
            ON "t8"."subject_id" = "t3"."subject_id"
        ) AS "t9"
        WHERE
          "t9"."occurred_at" < CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
          AND "t9"."type" = 'order'
          AND "t9"."occurred_at" >= "t9"."fe"
      ) AS "t10"
    ) AS "t11"
  ) AS "t12"
) AS "t13"
