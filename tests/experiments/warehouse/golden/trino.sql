WITH "t12" AS (
  SELECT
    "t8"."subject_id",
    "t8"."arm",
    "t8"."first_exposed_at" AS "fe",
    "t8"."first_exposed_at" - INTERVAL '28' DAY AS "pre_start",
    COALESCE(NULLIF("t9"."age_band", ''), 'unknown') AS "age_band",
    COALESCE(NULLIF("t9"."province", ''), 'unknown') AS "province",
    COALESCE(NULLIF("t9"."platform", ''), 'unknown') AS "platform"
  FROM (
    SELECT
      "t0"."experiment_id",
      "t0"."phase",
      "t0"."arm",
      "t0"."user_pseudonym" AS "subject_id",
      "t0"."first_exposed_at"
    FROM "assignments" AS "t0"
    WHERE
      "t0"."experiment_id" = 7
      AND "t0"."phase" = 2
      AND "t0"."first_exposed_at" >= CAST(FROM_ISO8601_TIMESTAMP('2026-11-01T00:00:00+00:00') AS TIMESTAMP WITH TIME ZONE)
      AND "t0"."first_exposed_at" < CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
  ) AS "t8"
  INNER JOIN (
    SELECT
      *
    FROM "subjects" AS "t1"
    WHERE
      "t1"."restricted_at" IS NULL
  ) AS "t9"
    ON "t8"."subject_id" = "t9"."subject_id"
), "t20" AS (
  SELECT
    "t17"."subject_id",
    "t17"."fe",
    "t17"."pre_start",
    "t10"."type",
    "t10"."occurred_at",
    "t10"."amount"
  FROM (
    SELECT
      "t13"."subject_id",
      "t13"."fe",
      "t13"."pre_start"
    FROM "t12" AS "t13"
  ) AS "t17"
  INNER JOIN (
    SELECT
      *
    FROM "events" AS "t2"
    WHERE
      "t2"."occurred_at" < CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
  ) AS "t10"
    ON "t17"."subject_id" = "t10"."subject_id"
), "t28" AS (
  SELECT
    "t23"."subject_id",
    SUM(
      IF((
        "t23"."type" = 'order'
      ) AND (
        "t23"."occurred_at" >= "t23"."fe"
      ), 1, 0)
    ) AS "orders",
    SUM(
      IF(
        (
          "t23"."type" = 'order'
        ) AND (
          "t23"."occurred_at" >= "t23"."fe"
        ),
        "t23"."amount",
        CAST(0.0 AS DOUBLE)
      )
    ) AS "gmv",
    SUM(
      IF(
        (
          "t23"."type" = 'order'
        ) AND (
          "t23"."occurred_at" < "t23"."fe"
        ),
        "t23"."amount",
        CAST(0.0 AS DOUBLE)
      )
    ) AS "pre_gmv",
    SUM(
      IF((
        "t23"."type" = 'order'
      ) AND (
        "t23"."occurred_at" < "t23"."fe"
      ), 1, 0)
    ) AS "pre_orders",
    SUM(
      IF(
        (
          "t23"."type" = 'rec_impression'
        ) AND (
          "t23"."occurred_at" >= "t23"."fe"
        ),
        1,
        0
      )
    ) AS "impressions",
    SUM(
      IF((
        "t23"."type" = 'rec_click'
      ) AND (
        "t23"."occurred_at" >= "t23"."fe"
      ), 1, 0)
    ) AS "clicks"
  FROM (
    SELECT
      *
    FROM "t20" AS "t21"
    WHERE
      "t21"."occurred_at" >= "t21"."pre_start"
  ) AS "t23"
  GROUP BY
    1
), "t38" AS (
  SELECT
    "t36"."lo" + (
      (
        "t36"."h" - CAST(FLOOR("t36"."h") AS BIGINT)
      ) * (
        COALESCE("t36"."hi", "t36"."lo") - "t36"."lo"
      )
    ) AS "order_cap"
  FROM (
    SELECT
      MAX("t34"."h") AS "h",
      MAX(IF("t34"."k" = "t34"."floor", "t34"."v", CAST(NULL AS DOUBLE))) AS "lo",
      MAX(IF("t34"."k" = (
        "t34"."floor" + 1
      ), "t34"."v", CAST(NULL AS DOUBLE))) AS "hi"
    FROM (
      SELECT
        "t27"."v",
        "t27"."k",
        "t27"."n",
        CAST("t27"."n" - 1 AS DOUBLE) * CAST(0.99 AS DOUBLE) AS "h",
        CAST(FLOOR(CAST("t27"."n" - 1 AS DOUBLE) * CAST(0.99 AS DOUBLE)) AS BIGINT) AS "floor"
      FROM (
        SELECT
          "t24"."v",
          ROW_NUMBER() OVER (ORDER BY "t24"."v" ASC) - 1 AS "k",
          COUNT("t24"."v") OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS "n"
        FROM (
          SELECT
            "t21"."amount" AS "v"
          FROM "t20" AS "t21"
          WHERE
            "t21"."occurred_at" >= "t21"."pre_start"
            AND "t21"."type" = 'order'
            AND "t21"."occurred_at" >= "t21"."fe"
        ) AS "t24"
      ) AS "t27"
    ) AS "t34"
  ) AS "t36"
), "t45" AS (
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
      MAX("t37"."h") AS "h",
      MAX(IF("t37"."k" = "t37"."floor", "t37"."v", CAST(NULL AS DOUBLE))) AS "lo",
      MAX(IF("t37"."k" = (
        "t37"."floor" + 1
      ), "t37"."v", CAST(NULL AS DOUBLE))) AS "hi"
    FROM (
      SELECT
        "t35"."v",
        "t35"."k",
        "t35"."n",
        CAST("t35"."n" - 1 AS DOUBLE) * CAST(0.99 AS DOUBLE) AS "h",
        CAST(FLOOR(CAST("t35"."n" - 1 AS DOUBLE) * CAST(0.99 AS DOUBLE)) AS BIGINT) AS "floor"
      FROM (
        SELECT
          "t33"."v",
          ROW_NUMBER() OVER (ORDER BY "t33"."v" ASC) - 1 AS "k",
          COUNT("t33"."v") OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS "n"
        FROM (
          SELECT
            "t29"."gmv" AS "v"
          FROM "t28" AS "t29"
          WHERE
            "t29"."gmv" > 0
        ) AS "t33"
      ) AS "t35"
    ) AS "t37"
  ) AS "t42"
), "t54" AS (
  SELECT
    "t53"."arm",
    "t53"."age_band",
    "t53"."province",
    "t53"."platform",
    "t53"."customer",
    COUNT(*) AS "n",
    SUM("t53"."converted") AS "converted",
    SUM("t53"."opted_out") AS "opted_out",
    SUM("t53"."consented") AS "consented",
    SUM("t53"."granted") AS "granted",
    SUM("t53"."gmv") AS "gmv_sum",
    SUM("t53"."gmv" * "t53"."gmv") AS "gmv_ss",
    SUM("t53"."pre_gmv") AS "pre_sum",
    SUM("t53"."pre_gmv" * "t53"."pre_gmv") AS "pre_ss",
    SUM("t53"."gmv" * "t53"."pre_gmv") AS "gmv_pre",
    SUM("t53"."orders") AS "orders_sum",
    SUM("t53"."orders" * "t53"."orders") AS "orders_ss",
    SUM("t53"."aov_gmv") AS "aov_sum",
    SUM("t53"."aov_gmv" * "t53"."aov_gmv") AS "aov_ss",
    SUM("t53"."aov_gmv" * "t53"."orders") AS "aov_orders",
    SUM("t53"."impressions") AS "impressions_sum",
    SUM("t53"."impressions" * "t53"."impressions") AS "impressions_ss",
    SUM("t53"."clicks") AS "clicks_sum",
    SUM("t53"."clicks" * "t53"."clicks") AS "clicks_ss",
    SUM("t53"."clicks" * "t53"."impressions") AS "clicks_impressions"
  FROM (
    SELECT
      "t8"."arm",
      COALESCE(NULLIF("t9"."age_band", ''), 'unknown') AS "age_band",
      COALESCE(NULLIF("t9"."province", ''), 'unknown') AS "province",
      COALESCE(NULLIF("t9"."platform", ''), 'unknown') AS "platform",
      IF(COALESCE("t52"."pre_orders", 0) > 0, 'returning', 'new') AS "customer",
      COALESCE("t52"."orders", 0) AS "orders",
      COALESCE("t52"."impressions", 0) AS "impressions",
      COALESCE("t52"."clicks", 0) AS "clicks",
      IF(COALESCE("t32"."withdrawals", 0) > 0, 1, 0) AS "opted_out",
      IF(COALESCE("t32"."last_decision" = "t32"."last_valid_grant", FALSE), 1, 0) AS "consented",
      IF(
        (
          COALESCE("t32"."withdrawals", 0) > 0
        )
        OR (
          COALESCE("t32"."grants_after", 0) > 0
        )
        OR COALESCE("t32"."last_before" = "t32"."standing_grant", FALSE),
        1,
        0
      ) AS "granted",
      IF(COALESCE("t52"."orders", 0) > 0, 1, 0) AS "converted",
      IF(
        (
          "t52"."cap" IS NULL
        )
        OR (
          COALESCE("t52"."gmv", CAST(0.0 AS DOUBLE)) <= "t52"."cap"
        ),
        COALESCE("t52"."gmv", CAST(0.0 AS DOUBLE)),
        "t52"."cap"
      ) AS "gmv",
      IF(
        (
          "t52"."cap" IS NULL
        )
        OR (
          COALESCE("t52"."pre_gmv", CAST(0.0 AS DOUBLE)) <= "t52"."cap"
        ),
        COALESCE("t52"."pre_gmv", CAST(0.0 AS DOUBLE)),
        "t52"."cap"
      ) AS "pre_gmv",
      COALESCE("t52"."gmv", CAST(0.0 AS DOUBLE)) - COALESCE("t52"."excess", CAST(0.0 AS DOUBLE)) AS "aov_gmv"
    FROM (
      SELECT
        "t0"."experiment_id",
        "t0"."phase",
        "t0"."arm",
        "t0"."user_pseudonym" AS "subject_id",
        "t0"."first_exposed_at"
      FROM "assignments" AS "t0"
      WHERE
        "t0"."experiment_id" = 7
        AND "t0"."phase" = 2
        AND "t0"."first_exposed_at" >= CAST(FROM_ISO8601_TIMESTAMP('2026-11-01T00:00:00+00:00') AS TIMESTAMP WITH TIME ZONE)
        AND "t0"."first_exposed_at" < CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
    ) AS "t8"
    INNER JOIN (
      SELECT
        *
      FROM "subjects" AS "t1"
      WHERE
        "t1"."restricted_at" IS NULL
    ) AS "t9"
      ON "t8"."subject_id" = "t9"."subject_id"
    LEFT OUTER JOIN (
      SELECT
        "t31"."subject_id",
        "t31"."orders",
        "t31"."gmv",
        "t31"."pre_gmv",
        "t31"."pre_orders",
        "t31"."impressions",
        "t31"."clicks",
        COALESCE("t50"."excess", CAST(0.0 AS DOUBLE)) AS "excess",
        "t49"."cap"
      FROM "t28" AS "t31"
      LEFT OUTER JOIN (
        SELECT
          "t44"."subject_id",
          SUM("t44"."amount" - "t44"."order_cap") AS "excess"
        FROM (
          SELECT
            *
          FROM (
            SELECT
              "t26"."subject_id",
              "t26"."fe",
              "t26"."pre_start",
              "t26"."type",
              "t26"."occurred_at",
              "t26"."amount",
              "t41"."order_cap"
            FROM (
              SELECT
                *
              FROM "t20" AS "t21"
              WHERE
                "t21"."occurred_at" >= "t21"."pre_start"
                AND "t21"."type" = 'order'
                AND "t21"."occurred_at" >= "t21"."fe"
            ) AS "t26"
            CROSS JOIN "t38" AS "t41"
          ) AS "t43"
          WHERE
            "t43"."amount" > "t43"."order_cap"
        ) AS "t44"
        GROUP BY
          1
      ) AS "t50"
        ON "t31"."subject_id" = "t50"."subject_id"
      CROSS JOIN "t45" AS "t49"
    ) AS "t52"
      ON "t8"."subject_id" = "t52"."subject_id"
    LEFT OUTER JOIN (
      SELECT
        "t22"."subject_id",
        SUM(IF("t22"."ends_grant" AND (
          "t22"."recorded_at" >= "t22"."fe"
        ), 1, 0)) AS "withdrawals",
        SUM(
          IF((
            "t22"."action" = 'grant'
          ) AND (
            "t22"."recorded_at" >= "t22"."fe"
          ), 1, 0)
        ) AS "grants_after",
        MAX("t22"."ledger_id") AS "last_decision",
        MAX(IF("t22"."valid_at_cutoff", "t22"."ledger_id", CAST(NULL AS BIGINT))) AS "last_valid_grant",
        MAX(IF("t22"."recorded_at" < "t22"."fe", "t22"."ledger_id", CAST(NULL AS BIGINT))) AS "last_before",
        MAX(
          IF(
            (
              "t22"."recorded_at" < "t22"."fe"
            )
            AND (
              "t22"."action" = 'grant'
            )
            AND COALESCE((
              "t22"."expires_at" IS NULL
            ) OR (
              "t22"."expires_at" > "t22"."fe"
            ), FALSE),
            "t22"."ledger_id",
            CAST(NULL AS BIGINT)
          )
        ) AS "standing_grant"
      FROM (
        SELECT
          "t16"."subject_id",
          "t16"."fe",
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
            "t13"."subject_id",
            "t13"."fe"
          FROM "t12" AS "t13"
        ) AS "t16"
        INNER JOIN (
          SELECT
            "t11"."ledger_id",
            "t11"."subject_id",
            "t11"."purpose",
            "t11"."action",
            "t11"."recorded_at",
            "t11"."expires_at",
            "t11"."notice_id",
            "t11"."previous_action",
            "t11"."previous_expires",
            (
              "t11"."action" = 'withdraw'
            )
            AND COALESCE("t11"."previous_action" = 'grant', FALSE)
            AND COALESCE(
              (
                "t11"."previous_expires" IS NULL
              )
              OR (
                "t11"."previous_expires" > "t11"."recorded_at"
              ),
              FALSE
            ) AS "ends_grant",
            (
              "t11"."action" = 'grant'
            )
            AND COALESCE(
              (
                "t11"."expires_at" IS NULL
              )
              OR (
                "t11"."expires_at" > CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
              ),
              FALSE
            )
            AND COALESCE("t11"."notice_id" IN (3, 5), FALSE) AS "valid_at_cutoff"
          FROM (
            SELECT
              "t7"."ledger_id",
              "t7"."subject_id",
              "t7"."purpose",
              "t7"."action",
              "t7"."recorded_at",
              "t7"."expires_at",
              "t7"."notice_id",
              LAG("t7"."action") OVER (PARTITION BY "t7"."subject_id" ORDER BY "t7"."ledger_id" ASC) AS "previous_action",
              LAG("t7"."expires_at") OVER (PARTITION BY "t7"."subject_id" ORDER BY "t7"."ledger_id" ASC) AS "previous_expires"
            FROM (
              SELECT
                *
              FROM "consents" AS "t3"
              WHERE
                "t3"."purpose" = 'personalization'
                AND "t3"."recorded_at" < CAST(FROM_ISO8601_TIMESTAMP('2026-11-29T12:30:00+00:00') AS TIMESTAMP WITH TIME ZONE)
            ) AS "t7"
          ) AS "t11"
        ) AS "t19"
          ON "t16"."subject_id" = "t19"."subject_id"
      ) AS "t22"
      GROUP BY
        1
    ) AS "t32"
      ON "t8"."subject_id" = "t32"."subject_id"
  ) AS "t53"
  GROUP BY
    1,
    2,
    3,
    4,
    5
)
SELECT
  "t70"."dimension",
  "t70"."value",
  "t70"."arm",
  "t70"."n",
  "t70"."converted",
  "t70"."opted_out",
  "t70"."consented",
  "t70"."granted",
  "t70"."gmv_sum",
  "t70"."gmv_ss",
  "t70"."pre_sum",
  "t70"."pre_ss",
  "t70"."gmv_pre",
  "t70"."orders_sum",
  "t70"."orders_ss",
  "t70"."aov_sum",
  "t70"."aov_ss",
  "t70"."aov_orders",
  "t70"."impressions_sum",
  "t70"."impressions_ss",
  "t70"."clicks_sum",
  "t70"."clicks_ss",
  "t70"."clicks_impressions",
  "t48"."cap",
  "t40"."order_cap"
FROM (
  SELECT
    *
  FROM (
    SELECT
      *
    FROM (
      SELECT
        'province' AS "dimension",
        "t56"."province" AS "value",
        "t56"."arm",
        CAST("t56"."n" AS DOUBLE) AS "n",
        CAST("t56"."converted" AS DOUBLE) AS "converted",
        CAST("t56"."opted_out" AS DOUBLE) AS "opted_out",
        CAST("t56"."consented" AS DOUBLE) AS "consented",
        CAST("t56"."granted" AS DOUBLE) AS "granted",
        "t56"."gmv_sum",
        "t56"."gmv_ss",
        "t56"."pre_sum",
        "t56"."pre_ss",
        "t56"."gmv_pre",
        CAST("t56"."orders_sum" AS DOUBLE) AS "orders_sum",
        CAST("t56"."orders_ss" AS DOUBLE) AS "orders_ss",
        "t56"."aov_sum",
        "t56"."aov_ss",
        "t56"."aov_orders",
        CAST("t56"."impressions_sum" AS DOUBLE) AS "impressions_sum",
        CAST("t56"."impressions_ss" AS DOUBLE) AS "impressions_ss",
        CAST("t56"."clicks_sum" AS DOUBLE) AS "clicks_sum",
        CAST("t56"."clicks_ss" AS DOUBLE) AS "clicks_ss",
        CAST("t56"."clicks_impressions" AS DOUBLE) AS "clicks_impressions"
      FROM (
        SELECT
          "t55"."arm",
          "t55"."province",
          SUM("t55"."n") AS "n",
          SUM("t55"."converted") AS "converted",
          SUM("t55"."opted_out") AS "opted_out",
          SUM("t55"."consented") AS "consented",
          SUM("t55"."granted") AS "granted",
          SUM("t55"."gmv_sum") AS "gmv_sum",
          SUM("t55"."gmv_ss") AS "gmv_ss",
          SUM("t55"."pre_sum") AS "pre_sum",
          SUM("t55"."pre_ss") AS "pre_ss",
          SUM("t55"."gmv_pre") AS "gmv_pre",
          SUM("t55"."orders_sum") AS "orders_sum",
          SUM("t55"."orders_ss") AS "orders_ss",
          SUM("t55"."aov_sum") AS "aov_sum",
          SUM("t55"."aov_ss") AS "aov_ss",
          SUM("t55"."aov_orders") AS "aov_orders",
          SUM("t55"."impressions_sum") AS "impressions_sum",
          SUM("t55"."impressions_ss") AS "impressions_ss",
          SUM("t55"."clicks_sum") AS "clicks_sum",
          SUM("t55"."clicks_ss") AS "clicks_ss",
          SUM("t55"."clicks_impressions") AS "clicks_impressions"
        FROM "t54" AS "t55"
        GROUP BY
          1,
          2
      ) AS "t56"
    ) AS "t61"
    UNION ALL
    SELECT
      *
    FROM (
      SELECT
        'platform' AS "dimension",
        "t57"."platform" AS "value",
        "t57"."arm",
        CAST("t57"."n" AS DOUBLE) AS "n",
        CAST("t57"."converted" AS DOUBLE) AS "converted",
        CAST("t57"."opted_out" AS DOUBLE) AS "opted_out",
        CAST("t57"."consented" AS DOUBLE) AS "consented",
        CAST("t57"."granted" AS DOUBLE) AS "granted",
        "t57"."gmv_sum",
        "t57"."gmv_ss",
        "t57"."pre_sum",
        "t57"."pre_ss",
        "t57"."gmv_pre",
        CAST("t57"."orders_sum" AS DOUBLE) AS "orders_sum",
        CAST("t57"."orders_ss" AS DOUBLE) AS "orders_ss",
        "t57"."aov_sum",
        "t57"."aov_ss",
        "t57"."aov_orders",
        CAST("t57"."impressions_sum" AS DOUBLE) AS "impressions_sum",
        CAST("t57"."impressions_ss" AS DOUBLE) AS "impressions_ss",
        CAST("t57"."clicks_sum" AS DOUBLE) AS "clicks_sum",
        CAST("t57"."clicks_ss" AS DOUBLE) AS "clicks_ss",
        CAST("t57"."clicks_impressions" AS DOUBLE) AS "clicks_impressions"
      FROM (
        SELECT
          "t55"."arm",
          "t55"."platform",
          SUM("t55"."n") AS "n",
          SUM("t55"."converted") AS "converted",
          SUM("t55"."opted_out") AS "opted_out",
          SUM("t55"."consented") AS "consented",
          SUM("t55"."granted") AS "granted",
          SUM("t55"."gmv_sum") AS "gmv_sum",
          SUM("t55"."gmv_ss") AS "gmv_ss",
          SUM("t55"."pre_sum") AS "pre_sum",
          SUM("t55"."pre_ss") AS "pre_ss",
          SUM("t55"."gmv_pre") AS "gmv_pre",
          SUM("t55"."orders_sum") AS "orders_sum",
          SUM("t55"."orders_ss") AS "orders_ss",
          SUM("t55"."aov_sum") AS "aov_sum",
          SUM("t55"."aov_ss") AS "aov_ss",
          SUM("t55"."aov_orders") AS "aov_orders",
          SUM("t55"."impressions_sum") AS "impressions_sum",
          SUM("t55"."impressions_ss") AS "impressions_ss",
          SUM("t55"."clicks_sum") AS "clicks_sum",
          SUM("t55"."clicks_ss") AS "clicks_ss",
          SUM("t55"."clicks_impressions") AS "clicks_impressions"
        FROM "t54" AS "t55"
        GROUP BY
          1,
          2
      ) AS "t57"
    ) AS "t62"
  ) AS "t66"
  UNION ALL
  SELECT
    *
  FROM (
    SELECT
      *
    FROM (
      SELECT
        'customer' AS "dimension",
        "t58"."customer" AS "value",
        "t58"."arm",
        CAST("t58"."n" AS DOUBLE) AS "n",
        CAST("t58"."converted" AS DOUBLE) AS "converted",
        CAST("t58"."opted_out" AS DOUBLE) AS "opted_out",
        CAST("t58"."consented" AS DOUBLE) AS "consented",
        CAST("t58"."granted" AS DOUBLE) AS "granted",
        "t58"."gmv_sum",
        "t58"."gmv_ss",
        "t58"."pre_sum",
        "t58"."pre_ss",
        "t58"."gmv_pre",
        CAST("t58"."orders_sum" AS DOUBLE) AS "orders_sum",
        CAST("t58"."orders_ss" AS DOUBLE) AS "orders_ss",
        "t58"."aov_sum",
        "t58"."aov_ss",
        "t58"."aov_orders",
        CAST("t58"."impressions_sum" AS DOUBLE) AS "impressions_sum",
        CAST("t58"."impressions_ss" AS DOUBLE) AS "impressions_ss",
        CAST("t58"."clicks_sum" AS DOUBLE) AS "clicks_sum",
        CAST("t58"."clicks_ss" AS DOUBLE) AS "clicks_ss",
        CAST("t58"."clicks_impressions" AS DOUBLE) AS "clicks_impressions"
      FROM (
        SELECT
          "t55"."arm",
          "t55"."customer",
          SUM("t55"."n") AS "n",
          SUM("t55"."converted") AS "converted",
          SUM("t55"."opted_out") AS "opted_out",
          SUM("t55"."consented") AS "consented",
          SUM("t55"."granted") AS "granted",
          SUM("t55"."gmv_sum") AS "gmv_sum",
          SUM("t55"."gmv_ss") AS "gmv_ss",
          SUM("t55"."pre_sum") AS "pre_sum",
          SUM("t55"."pre_ss") AS "pre_ss",
          SUM("t55"."gmv_pre") AS "gmv_pre",
          SUM("t55"."orders_sum") AS "orders_sum",
          SUM("t55"."orders_ss") AS "orders_ss",
          SUM("t55"."aov_sum") AS "aov_sum",
          SUM("t55"."aov_ss") AS "aov_ss",
          SUM("t55"."aov_orders") AS "aov_orders",
          SUM("t55"."impressions_sum") AS "impressions_sum",
          SUM("t55"."impressions_ss") AS "impressions_ss",
          SUM("t55"."clicks_sum") AS "clicks_sum",
          SUM("t55"."clicks_ss") AS "clicks_ss",
          SUM("t55"."clicks_impressions") AS "clicks_impressions"
        FROM "t54" AS "t55"
        GROUP BY
          1,
          2
      ) AS "t58"
    ) AS "t63"
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
          "t59"."arm",
          CAST("t59"."n" AS DOUBLE) AS "n",
          CAST("t59"."converted" AS DOUBLE) AS "converted",
          CAST("t59"."opted_out" AS DOUBLE) AS "opted_out",
          CAST("t59"."consented" AS DOUBLE) AS "consented",
          CAST("t59"."granted" AS DOUBLE) AS "granted",
          "t59"."gmv_sum",
          "t59"."gmv_ss",
          "t59"."pre_sum",
          "t59"."pre_ss",
          "t59"."gmv_pre",
          CAST("t59"."orders_sum" AS DOUBLE) AS "orders_sum",
          CAST("t59"."orders_ss" AS DOUBLE) AS "orders_ss",
          "t59"."aov_sum",
          "t59"."aov_ss",
          "t59"."aov_orders",
          CAST("t59"."impressions_sum" AS DOUBLE) AS "impressions_sum",
          CAST("t59"."impressions_ss" AS DOUBLE) AS "impressions_ss",
          CAST("t59"."clicks_sum" AS DOUBLE) AS "clicks_sum",
          CAST("t59"."clicks_ss" AS DOUBLE) AS "clicks_ss",
          CAST("t59"."clicks_impressions" AS DOUBLE) AS "clicks_impressions"
        FROM (
          SELECT
            "t55"."arm",
            SUM("t55"."n") AS "n",
            SUM("t55"."converted") AS "converted",
            SUM("t55"."opted_out") AS "opted_out",
            SUM("t55"."consented") AS "consented",
            SUM("t55"."granted") AS "granted",
            SUM("t55"."gmv_sum") AS "gmv_sum",
            SUM("t55"."gmv_ss") AS "gmv_ss",
            SUM("t55"."pre_sum") AS "pre_sum",
            SUM("t55"."pre_ss") AS "pre_ss",
            SUM("t55"."gmv_pre") AS "gmv_pre",
            SUM("t55"."orders_sum") AS "orders_sum",
            SUM("t55"."orders_ss") AS "orders_ss",
            SUM("t55"."aov_sum") AS "aov_sum",
            SUM("t55"."aov_ss") AS "aov_ss",
            SUM("t55"."aov_orders") AS "aov_orders",
            SUM("t55"."impressions_sum") AS "impressions_sum",
            SUM("t55"."impressions_ss") AS "impressions_ss",
            SUM("t55"."clicks_sum") AS "clicks_sum",
            SUM("t55"."clicks_ss") AS "clicks_ss",
            SUM("t55"."clicks_impressions") AS "clicks_impressions"
          FROM "t54" AS "t55"
          GROUP BY
            1
        ) AS "t59"
      ) AS "t64"
      UNION ALL
      SELECT
        *
      FROM (
        SELECT
          'age_band' AS "dimension",
          "t60"."age_band" AS "value",
          "t60"."arm",
          CAST("t60"."n" AS DOUBLE) AS "n",
          CAST("t60"."converted" AS DOUBLE) AS "converted",
          CAST("t60"."opted_out" AS DOUBLE) AS "opted_out",
          CAST("t60"."consented" AS DOUBLE) AS "consented",
          CAST("t60"."granted" AS DOUBLE) AS "granted",
          "t60"."gmv_sum",
          "t60"."gmv_ss",
          "t60"."pre_sum",
          "t60"."pre_ss",
          "t60"."gmv_pre",
          CAST("t60"."orders_sum" AS DOUBLE) AS "orders_sum",
          CAST("t60"."orders_ss" AS DOUBLE) AS "orders_ss",
          "t60"."aov_sum",
          "t60"."aov_ss",
          "t60"."aov_orders",
          CAST("t60"."impressions_sum" AS DOUBLE) AS "impressions_sum",
          CAST("t60"."impressions_ss" AS DOUBLE) AS "impressions_ss",
          CAST("t60"."clicks_sum" AS DOUBLE) AS "clicks_sum",
          CAST("t60"."clicks_ss" AS DOUBLE) AS "clicks_ss",
          CAST("t60"."clicks_impressions" AS DOUBLE) AS "clicks_impressions"
        FROM (
          SELECT
            "t55"."arm",
            "t55"."age_band",
            SUM("t55"."n") AS "n",
            SUM("t55"."converted") AS "converted",
            SUM("t55"."opted_out") AS "opted_out",
            SUM("t55"."consented") AS "consented",
            SUM("t55"."granted") AS "granted",
            SUM("t55"."gmv_sum") AS "gmv_sum",
            SUM("t55"."gmv_ss") AS "gmv_ss",
            SUM("t55"."pre_sum") AS "pre_sum",
            SUM("t55"."pre_ss") AS "pre_ss",
            SUM("t55"."gmv_pre") AS "gmv_pre",
            SUM("t55"."orders_sum") AS "orders_sum",
            SUM("t55"."orders_ss") AS "orders_ss",
            SUM("t55"."aov_sum") AS "aov_sum",
            SUM("t55"."aov_ss") AS "aov_ss",
            SUM("t55"."aov_orders") AS "aov_orders",
            SUM("t55"."impressions_sum") AS "impressions_sum",
            SUM("t55"."impressions_ss") AS "impressions_ss",
            SUM("t55"."clicks_sum") AS "clicks_sum",
            SUM("t55"."clicks_ss") AS "clicks_ss",
            SUM("t55"."clicks_impressions") AS "clicks_impressions"
          FROM "t54" AS "t55"
          GROUP BY
            1,
            2
        ) AS "t60"
      ) AS "t65"
    ) AS "t67"
  ) AS "t68"
) AS "t70"
CROSS JOIN "t45" AS "t48"
CROSS JOIN "t38" AS "t40"
