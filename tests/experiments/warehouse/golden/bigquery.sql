WITH `t10` AS (
  SELECT
    *
  FROM (
    SELECT
      `t2`.`experiment_id`,
      `t2`.`phase`,
      `t2`.`arm`,
      `t2`.`user_pseudonym` AS `subject_id`,
      `t2`.`first_exposed_at`
    FROM `assignments` AS `t2`
  ) AS `t6`
  WHERE
    `t6`.`experiment_id` = 7
    AND `t6`.`phase` = 2
    AND `t6`.`first_exposed_at` >= TIMESTAMP('2026-11-01T00:00:00+00:00')
    AND `t6`.`first_exposed_at` < TIMESTAMP('2026-11-29T12:30:00+00:00')
    AND NOT (
      `t6`.`subject_id` IN (
        SELECT
          `t0`.`subject_id`
        FROM `subjects` AS `t0`
        WHERE
          `t0`.`restricted_at` IS NOT NULL
      )
    )
), `t18` AS (
  SELECT
    `t16`.`subject_id`,
    `t16`.`arm`,
    `t16`.`fe`,
    `t16`.`pre_start`,
    `t4`.`type`,
    `t4`.`occurred_at`,
    `t4`.`amount`
  FROM (
    SELECT
      `t11`.`subject_id`,
      `t11`.`arm`,
      `t11`.`first_exposed_at` AS `fe`,
      TIMESTAMP_SUB(`t11`.`first_exposed_at`, INTERVAL '28' DAY) AS `pre_start`
    FROM `t10` AS `t11`
  ) AS `t16`
  INNER JOIN `events` AS `t4`
    ON `t16`.`subject_id` = `t4`.`subject_id`
), `t35` AS (
  SELECT
    `t33`.`lo` + (
      (
        `t33`.`h` - CAST(FLOOR(`t33`.`h`) AS INT64)
      ) * (
        COALESCE(`t33`.`hi`, `t33`.`lo`) - `t33`.`lo`
      )
    ) AS `order_cap`
  FROM (
    SELECT
      MAX(`t31`.`h`) AS `h`,
      MAX(IF(`t31`.`k` = `t31`.`floor`, `t31`.`v`, CAST(NULL AS FLOAT64))) AS `lo`,
      MAX(IF(`t31`.`k` = (
        `t31`.`floor` + 1
      ), `t31`.`v`, CAST(NULL AS FLOAT64))) AS `hi`
    FROM (
      SELECT
        `t26`.`v`,
        `t26`.`k`,
        `t26`.`n`,
        CAST(`t26`.`n` - 1 AS FLOAT64) * 0.99 AS `h`,
        CAST(FLOOR(CAST(`t26`.`n` - 1 AS FLOAT64) * 0.99) AS INT64) AS `floor`
      FROM (
        SELECT
          `t22`.`v`,
          ROW_NUMBER() OVER (ORDER BY `t22`.`v` ASC) - 1 AS `k`,
          COUNT(`t22`.`v`) OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS `n`
        FROM (
          SELECT
            `t20`.`amount` AS `v`
          FROM `t18` AS `t20`
          WHERE
            `t20`.`occurred_at` < TIMESTAMP('2026-11-29T12:30:00+00:00')
            AND `t20`.`type` = 'order'
            AND `t20`.`occurred_at` >= `t20`.`fe`
        ) AS `t22`
      ) AS `t26`
    ) AS `t31`
  ) AS `t33`
), `t45` AS (
  SELECT
    `t44`.`lo` + (
      (
        `t44`.`h` - CAST(FLOOR(`t44`.`h`) AS INT64)
      ) * (
        COALESCE(`t44`.`hi`, `t44`.`lo`) - `t44`.`lo`
      )
    ) AS `cap`
  FROM (
    SELECT
      MAX(`t41`.`h`) AS `h`,
      MAX(IF(`t41`.`k` = `t41`.`floor`, `t41`.`v`, CAST(NULL AS FLOAT64))) AS `lo`,
      MAX(IF(`t41`.`k` = (
        `t41`.`floor` + 1
      ), `t41`.`v`, CAST(NULL AS FLOAT64))) AS `hi`
    FROM (
      SELECT
        `t37`.`v`,
        `t37`.`k`,
        `t37`.`n`,
        CAST(`t37`.`n` - 1 AS FLOAT64) * 0.99 AS `h`,
        CAST(FLOOR(CAST(`t37`.`n` - 1 AS FLOAT64) * 0.99) AS INT64) AS `floor`
      FROM (
        SELECT
          `t34`.`v`,
          ROW_NUMBER() OVER (ORDER BY `t34`.`v` ASC) - 1 AS `k`,
          COUNT(`t34`.`v`) OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS `n`
        FROM (
          SELECT
            `t32`.`gmv` AS `v`
          FROM (
            SELECT
              `t16`.`arm`,
              COALESCE(NULLIF(`t7`.`age_band`, ''), 'unknown') AS `age_band`,
              COALESCE(NULLIF(`t7`.`province`, ''), 'unknown') AS `province`,
              COALESCE(NULLIF(`t7`.`platform`, ''), 'unknown') AS `platform`,
              IF(COALESCE(`t28`.`pre_orders`, 0) > 0, 'returning', 'new') AS `customer`,
              COALESCE(`t28`.`orders`, 0) AS `orders`,
              COALESCE(`t28`.`gmv`, 0.0) AS `gmv`,
              COALESCE(`t28`.`pre_gmv`, 0.0) AS `pre_gmv`,
              COALESCE(`t28`.`impressions`, 0) AS `impressions`,
              COALESCE(`t28`.`clicks`, 0) AS `clicks`,
              IF(COALESCE(`t30`.`withdrawals`, 0) > 0, 1, 0) AS `opted_out`,
              IF(COALESCE(`t30`.`last_decision` = `t30`.`last_valid_grant`, FALSE), 1, 0) AS `consented`,
              IF(
                (
                  COALESCE(`t30`.`withdrawals`, 0) > 0
                )
                OR (
                  COALESCE(`t30`.`grants_after`, 0) > 0
                )
                OR COALESCE(`t30`.`last_before` = `t30`.`standing_grant`, FALSE),
                1,
                0
              ) AS `granted`,
              `t16`.`subject_id`,
              `t16`.`fe`
            FROM (
              SELECT
                `t11`.`subject_id`,
                `t11`.`arm`,
                `t11`.`first_exposed_at` AS `fe`,
                TIMESTAMP_SUB(`t11`.`first_exposed_at`, INTERVAL '28' DAY) AS `pre_start`
              FROM `t10` AS `t11`
            ) AS `t16`
            INNER JOIN (
              SELECT
                `t0`.`subject_id`,
                `t0`.`age_band`,
                `t0`.`province`,
                `t0`.`platform`
              FROM `subjects` AS `t0`
            ) AS `t7`
              ON `t16`.`subject_id` = `t7`.`subject_id`
            LEFT OUTER JOIN (
              SELECT
                `t21`.`subject_id`,
                SUM(
                  IF((
                    `t21`.`type` = 'order'
                  ) AND (
                    `t21`.`occurred_at` >= `t21`.`fe`
                  ), 1, 0)
                ) AS `orders`,
                SUM(
                  IF(
                    (
                      `t21`.`type` = 'order'
                    ) AND (
                      `t21`.`occurred_at` >= `t21`.`fe`
                    ),
                    `t21`.`amount`,
                    0.0
                  )
                ) AS `gmv`,
                SUM(
                  IF(
                    (
                      `t21`.`type` = 'order'
                    )
                    AND (
                      `t21`.`occurred_at` < `t21`.`fe`
                    )
                    AND (
                      `t21`.`occurred_at` >= `t21`.`pre_start`
                    ),
                    `t21`.`amount`,
                    0.0
                  )
                ) AS `pre_gmv`,
                SUM(
                  IF(
                    (
                      `t21`.`type` = 'order'
                    )
                    AND (
                      `t21`.`occurred_at` < `t21`.`fe`
                    )
                    AND (
                      `t21`.`occurred_at` >= `t21`.`pre_start`
                    ),
                    1,
                    0
                  )
                ) AS `pre_orders`,
                SUM(
                  IF(
                    (
                      `t21`.`type` = 'rec_impression'
                    ) AND (
                      `t21`.`occurred_at` >= `t21`.`fe`
                    ),
                    1,
                    0
                  )
                ) AS `impressions`,
                SUM(
                  IF((
                    `t21`.`type` = 'rec_click'
                  ) AND (
                    `t21`.`occurred_at` >= `t21`.`fe`
                  ), 1, 0)
                ) AS `clicks`
              FROM (
                SELECT
                  *
                FROM `t18` AS `t20`
                WHERE
                  `t20`.`occurred_at` < TIMESTAMP('2026-11-29T12:30:00+00:00')
              ) AS `t21`
              GROUP BY
                1
            ) AS `t28`
              ON `t16`.`subject_id` = `t28`.`subject_id`
            LEFT OUTER JOIN (
              SELECT
                `t24`.`subject_id`,
                SUM(IF(`t24`.`ends_grant` AND (
                  `t24`.`recorded_at` >= `t24`.`fe`
                ), 1, 0)) AS `withdrawals`,
                SUM(
                  IF((
                    `t24`.`action` = 'grant'
                  ) AND (
                    `t24`.`recorded_at` >= `t24`.`fe`
                  ), 1, 0)
                ) AS `grants_after`,
                MAX(`t24`.`ledger_id`) AS `last_decision`,
                MAX(IF(`t24`.`valid_at_cutoff`, `t24`.`ledger_id`, CAST(NULL AS INT64))) AS `last_valid_grant`,
                MAX(IF(`t24`.`recorded_at` < `t24`.`fe`, `t24`.`ledger_id`, CAST(NULL AS INT64))) AS `last_before`,
                MAX(
                  IF(
                    (
                      `t24`.`recorded_at` < `t24`.`fe`
                    )
                    AND (
                      `t24`.`action` = 'grant'
                    )
                    AND COALESCE((
                      `t24`.`expires_at` IS NULL
                    ) OR (
                      `t24`.`expires_at` > `t24`.`fe`
                    ), FALSE),
                    `t24`.`ledger_id`,
                    CAST(NULL AS INT64)
                  )
                ) AS `standing_grant`
              FROM (
                SELECT
                  `t15`.`subject_id`,
                  `t15`.`fe`,
                  `t19`.`ledger_id`,
                  `t19`.`purpose`,
                  `t19`.`action`,
                  `t19`.`recorded_at`,
                  `t19`.`expires_at`,
                  `t19`.`notice_id`,
                  `t19`.`previous_action`,
                  `t19`.`previous_expires`,
                  `t19`.`ends_grant`,
                  `t19`.`valid_at_cutoff`
                FROM (
                  SELECT
                    `t11`.`subject_id`,
                    `t11`.`first_exposed_at` AS `fe`
                  FROM `t10` AS `t11`
                ) AS `t15`
                INNER JOIN (
                  SELECT
                    `t12`.`ledger_id`,
                    `t12`.`subject_id`,
                    `t12`.`purpose`,
                    `t12`.`action`,
                    `t12`.`recorded_at`,
                    `t12`.`expires_at`,
                    `t12`.`notice_id`,
                    `t12`.`previous_action`,
                    `t12`.`previous_expires`,
                    (
                      `t12`.`action` = 'withdraw'
                    )
                    AND COALESCE(`t12`.`previous_action` = 'grant', FALSE)
                    AND COALESCE(
                      (
                        `t12`.`previous_expires` IS NULL
                      )
                      OR (
                        `t12`.`previous_expires` > `t12`.`recorded_at`
                      ),
                      FALSE
                    ) AS `ends_grant`,
                    (
                      `t12`.`action` = 'grant'
                    )
                    AND COALESCE(
                      (
                        `t12`.`expires_at` IS NULL
                      )
                      OR (
                        `t12`.`expires_at` > TIMESTAMP('2026-11-29T12:30:00+00:00')
                      ),
                      FALSE
                    )
                    AND COALESCE(`t12`.`notice_id` IN (3, 5), FALSE) AS `valid_at_cutoff`
                  FROM (
                    SELECT
                      `t9`.`ledger_id`,
                      `t9`.`subject_id`,
                      `t9`.`purpose`,
                      `t9`.`action`,
                      `t9`.`recorded_at`,
                      `t9`.`expires_at`,
                      `t9`.`notice_id`,
                      LAG(`t9`.`action`) OVER (PARTITION BY `t9`.`subject_id` ORDER BY `t9`.`ledger_id` ASC) AS `previous_action`,
                      LAG(`t9`.`expires_at`) OVER (PARTITION BY `t9`.`subject_id` ORDER BY `t9`.`ledger_id` ASC) AS `previous_expires`
                    FROM (
                      SELECT
                        *
                      FROM `consents` AS `t3`
                      WHERE
                        `t3`.`purpose` = 'personalization'
                        AND `t3`.`recorded_at` < TIMESTAMP('2026-11-29T12:30:00+00:00')
                    ) AS `t9`
                  ) AS `t12`
                ) AS `t19`
                  ON `t15`.`subject_id` = `t19`.`subject_id`
              ) AS `t24`
              GROUP BY
                1
            ) AS `t30`
              ON `t16`.`subject_id` = `t30`.`subject_id`
          ) AS `t32`
          WHERE
            `t32`.`gmv` > 0
        ) AS `t34`
      ) AS `t37`
    ) AS `t41`
  ) AS `t44`
), `t50` AS (
  SELECT
    `t49`.`arm`,
    `t49`.`age_band`,
    `t49`.`province`,
    `t49`.`platform`,
    `t49`.`customer`,
    COUNT(*) AS `n`,
    SUM(`t49`.`converted`) AS `converted`,
    SUM(`t49`.`opted_out`) AS `opted_out`,
    SUM(`t49`.`consented`) AS `consented`,
    SUM(`t49`.`granted`) AS `granted`,
    SUM(`t49`.`gmv`) AS `gmv_sum`,
    SUM(`t49`.`gmv` * `t49`.`gmv`) AS `gmv_ss`,
    SUM(`t49`.`pre_gmv`) AS `pre_sum`,
    SUM(`t49`.`pre_gmv` * `t49`.`pre_gmv`) AS `pre_ss`,
    SUM(`t49`.`gmv` * `t49`.`pre_gmv`) AS `gmv_pre`,
    SUM(`t49`.`orders`) AS `orders_sum`,
    SUM(`t49`.`orders` * `t49`.`orders`) AS `orders_ss`,
    SUM(`t49`.`aov_gmv`) AS `aov_sum`,
    SUM(`t49`.`aov_gmv` * `t49`.`aov_gmv`) AS `aov_ss`,
    SUM(`t49`.`aov_gmv` * `t49`.`orders`) AS `aov_orders`,
    SUM(`t49`.`impressions`) AS `impressions_sum`,
    SUM(`t49`.`impressions` * `t49`.`impressions`) AS `impressions_ss`,
    SUM(`t49`.`clicks`) AS `clicks_sum`,
    SUM(`t49`.`clicks` * `t49`.`clicks`) AS `clicks_ss`,
    SUM(`t49`.`clicks` * `t49`.`impressions`) AS `clicks_impressions`
  FROM (
    SELECT
      `t16`.`arm`,
      COALESCE(NULLIF(`t7`.`age_band`, ''), 'unknown') AS `age_band`,
      COALESCE(NULLIF(`t7`.`province`, ''), 'unknown') AS `province`,
      COALESCE(NULLIF(`t7`.`platform`, ''), 'unknown') AS `platform`,
      IF(COALESCE(`t28`.`pre_orders`, 0) > 0, 'returning', 'new') AS `customer`,
      COALESCE(`t28`.`orders`, 0) AS `orders`,
      COALESCE(`t28`.`impressions`, 0) AS `impressions`,
      COALESCE(`t28`.`clicks`, 0) AS `clicks`,
      IF(COALESCE(`t30`.`withdrawals`, 0) > 0, 1, 0) AS `opted_out`,
      IF(COALESCE(`t30`.`last_decision` = `t30`.`last_valid_grant`, FALSE), 1, 0) AS `consented`,
      IF(
        (
          COALESCE(`t30`.`withdrawals`, 0) > 0
        )
        OR (
          COALESCE(`t30`.`grants_after`, 0) > 0
        )
        OR COALESCE(`t30`.`last_before` = `t30`.`standing_grant`, FALSE),
        1,
        0
      ) AS `granted`,
      IF(COALESCE(`t28`.`orders`, 0) > 0, 1, 0) AS `converted`,
      IF(
        (
          `t48`.`cap` IS NULL
        ) OR (
          COALESCE(`t28`.`gmv`, 0.0) <= `t48`.`cap`
        ),
        COALESCE(`t28`.`gmv`, 0.0),
        `t48`.`cap`
      ) AS `gmv`,
      IF(
        (
          `t48`.`cap` IS NULL
        ) OR (
          COALESCE(`t28`.`pre_gmv`, 0.0) <= `t48`.`cap`
        ),
        COALESCE(`t28`.`pre_gmv`, 0.0),
        `t48`.`cap`
      ) AS `pre_gmv`,
      COALESCE(`t43`.`aov_gmv`, 0.0) AS `aov_gmv`
    FROM (
      SELECT
        `t11`.`subject_id`,
        `t11`.`arm`,
        `t11`.`first_exposed_at` AS `fe`,
        TIMESTAMP_SUB(`t11`.`first_exposed_at`, INTERVAL '28' DAY) AS `pre_start`
      FROM `t10` AS `t11`
    ) AS `t16`
    INNER JOIN (
      SELECT
        `t0`.`subject_id`,
        `t0`.`age_band`,
        `t0`.`province`,
        `t0`.`platform`
      FROM `subjects` AS `t0`
    ) AS `t7`
      ON `t16`.`subject_id` = `t7`.`subject_id`
    LEFT OUTER JOIN (
      SELECT
        `t21`.`subject_id`,
        SUM(
          IF((
            `t21`.`type` = 'order'
          ) AND (
            `t21`.`occurred_at` >= `t21`.`fe`
          ), 1, 0)
        ) AS `orders`,
        SUM(
          IF(
            (
              `t21`.`type` = 'order'
            ) AND (
              `t21`.`occurred_at` >= `t21`.`fe`
            ),
            `t21`.`amount`,
            0.0
          )
        ) AS `gmv`,
        SUM(
          IF(
            (
              `t21`.`type` = 'order'
            )
            AND (
              `t21`.`occurred_at` < `t21`.`fe`
            )
            AND (
              `t21`.`occurred_at` >= `t21`.`pre_start`
            ),
            `t21`.`amount`,
            0.0
          )
        ) AS `pre_gmv`,
        SUM(
          IF(
            (
              `t21`.`type` = 'order'
            )
            AND (
              `t21`.`occurred_at` < `t21`.`fe`
            )
            AND (
              `t21`.`occurred_at` >= `t21`.`pre_start`
            ),
            1,
            0
          )
        ) AS `pre_orders`,
        SUM(
          IF(
            (
              `t21`.`type` = 'rec_impression'
            ) AND (
              `t21`.`occurred_at` >= `t21`.`fe`
            ),
            1,
            0
          )
        ) AS `impressions`,
        SUM(
          IF((
            `t21`.`type` = 'rec_click'
          ) AND (
            `t21`.`occurred_at` >= `t21`.`fe`
          ), 1, 0)
        ) AS `clicks`
      FROM (
        SELECT
          *
        FROM `t18` AS `t20`
        WHERE
          `t20`.`occurred_at` < TIMESTAMP('2026-11-29T12:30:00+00:00')
      ) AS `t21`
      GROUP BY
        1
    ) AS `t28`
      ON `t16`.`subject_id` = `t28`.`subject_id`
    LEFT OUTER JOIN (
      SELECT
        `t24`.`subject_id`,
        SUM(IF(`t24`.`ends_grant` AND (
          `t24`.`recorded_at` >= `t24`.`fe`
        ), 1, 0)) AS `withdrawals`,
        SUM(
          IF((
            `t24`.`action` = 'grant'
          ) AND (
            `t24`.`recorded_at` >= `t24`.`fe`
          ), 1, 0)
        ) AS `grants_after`,
        MAX(`t24`.`ledger_id`) AS `last_decision`,
        MAX(IF(`t24`.`valid_at_cutoff`, `t24`.`ledger_id`, CAST(NULL AS INT64))) AS `last_valid_grant`,
        MAX(IF(`t24`.`recorded_at` < `t24`.`fe`, `t24`.`ledger_id`, CAST(NULL AS INT64))) AS `last_before`,
        MAX(
          IF(
            (
              `t24`.`recorded_at` < `t24`.`fe`
            )
            AND (
              `t24`.`action` = 'grant'
            )
            AND COALESCE((
              `t24`.`expires_at` IS NULL
            ) OR (
              `t24`.`expires_at` > `t24`.`fe`
            ), FALSE),
            `t24`.`ledger_id`,
            CAST(NULL AS INT64)
          )
        ) AS `standing_grant`
      FROM (
        SELECT
          `t15`.`subject_id`,
          `t15`.`fe`,
          `t19`.`ledger_id`,
          `t19`.`purpose`,
          `t19`.`action`,
          `t19`.`recorded_at`,
          `t19`.`expires_at`,
          `t19`.`notice_id`,
          `t19`.`previous_action`,
          `t19`.`previous_expires`,
          `t19`.`ends_grant`,
          `t19`.`valid_at_cutoff`
        FROM (
          SELECT
            `t11`.`subject_id`,
            `t11`.`first_exposed_at` AS `fe`
          FROM `t10` AS `t11`
        ) AS `t15`
        INNER JOIN (
          SELECT
            `t12`.`ledger_id`,
            `t12`.`subject_id`,
            `t12`.`purpose`,
            `t12`.`action`,
            `t12`.`recorded_at`,
            `t12`.`expires_at`,
            `t12`.`notice_id`,
            `t12`.`previous_action`,
            `t12`.`previous_expires`,
            (
              `t12`.`action` = 'withdraw'
            )
            AND COALESCE(`t12`.`previous_action` = 'grant', FALSE)
            AND COALESCE(
              (
                `t12`.`previous_expires` IS NULL
              )
              OR (
                `t12`.`previous_expires` > `t12`.`recorded_at`
              ),
              FALSE
            ) AS `ends_grant`,
            (
              `t12`.`action` = 'grant'
            )
            AND COALESCE(
              (
                `t12`.`expires_at` IS NULL
              )
              OR (
                `t12`.`expires_at` > TIMESTAMP('2026-11-29T12:30:00+00:00')
              ),
              FALSE
            )
            AND COALESCE(`t12`.`notice_id` IN (3, 5), FALSE) AS `valid_at_cutoff`
          FROM (
            SELECT
              `t9`.`ledger_id`,
              `t9`.`subject_id`,
              `t9`.`purpose`,
              `t9`.`action`,
              `t9`.`recorded_at`,
              `t9`.`expires_at`,
              `t9`.`notice_id`,
              LAG(`t9`.`action`) OVER (PARTITION BY `t9`.`subject_id` ORDER BY `t9`.`ledger_id` ASC) AS `previous_action`,
              LAG(`t9`.`expires_at`) OVER (PARTITION BY `t9`.`subject_id` ORDER BY `t9`.`ledger_id` ASC) AS `previous_expires`
            FROM (
              SELECT
                *
              FROM `consents` AS `t3`
              WHERE
                `t3`.`purpose` = 'personalization'
                AND `t3`.`recorded_at` < TIMESTAMP('2026-11-29T12:30:00+00:00')
            ) AS `t9`
          ) AS `t12`
        ) AS `t19`
          ON `t15`.`subject_id` = `t19`.`subject_id`
      ) AS `t24`
      GROUP BY
        1
    ) AS `t30`
      ON `t16`.`subject_id` = `t30`.`subject_id`
    CROSS JOIN `t45` AS `t48`
    LEFT OUTER JOIN (
      SELECT
        `t40`.`subject_id`,
        SUM(LEAST(`t40`.`amount`, `t40`.`order_cap`)) AS `aov_gmv`
      FROM (
        SELECT
          `t25`.`subject_id`,
          `t25`.`amount`,
          `t39`.`order_cap`
        FROM (
          SELECT
            `t20`.`subject_id`,
            `t20`.`amount`
          FROM `t18` AS `t20`
          WHERE
            `t20`.`occurred_at` < TIMESTAMP('2026-11-29T12:30:00+00:00')
            AND `t20`.`type` = 'order'
            AND `t20`.`occurred_at` >= `t20`.`fe`
        ) AS `t25`
        CROSS JOIN `t35` AS `t39`
      ) AS `t40`
      GROUP BY
        1
    ) AS `t43`
      ON `t16`.`subject_id` = `t43`.`subject_id`
  ) AS `t49`
  GROUP BY
    1,
    2,
    3,
    4,
    5
)
SELECT
  `t66`.`dimension`,
  `t66`.`value`,
  `t66`.`arm`,
  `t66`.`n`,
  `t66`.`converted`,
  `t66`.`opted_out`,
  `t66`.`consented`,
  `t66`.`granted`,
  `t66`.`gmv_sum`,
  `t66`.`gmv_ss`,
  `t66`.`pre_sum`,
  `t66`.`pre_ss`,
  `t66`.`gmv_pre`,
  `t66`.`orders_sum`,
  `t66`.`orders_ss`,
  `t66`.`aov_sum`,
  `t66`.`aov_ss`,
  `t66`.`aov_orders`,
  `t66`.`impressions_sum`,
  `t66`.`impressions_ss`,
  `t66`.`clicks_sum`,
  `t66`.`clicks_ss`,
  `t66`.`clicks_impressions`,
  `t47`.`cap`,
  `t38`.`order_cap`
FROM (
  SELECT
    *
  FROM (
    SELECT
      *
    FROM (
      SELECT
        'province' AS `dimension`,
        `t52`.`province` AS `value`,
        `t52`.`arm`,
        CAST(`t52`.`n` AS FLOAT64) AS `n`,
        CAST(`t52`.`converted` AS FLOAT64) AS `converted`,
        CAST(`t52`.`opted_out` AS FLOAT64) AS `opted_out`,
        CAST(`t52`.`consented` AS FLOAT64) AS `consented`,
        CAST(`t52`.`granted` AS FLOAT64) AS `granted`,
        `t52`.`gmv_sum`,
        `t52`.`gmv_ss`,
        `t52`.`pre_sum`,
        `t52`.`pre_ss`,
        `t52`.`gmv_pre`,
        CAST(`t52`.`orders_sum` AS FLOAT64) AS `orders_sum`,
        CAST(`t52`.`orders_ss` AS FLOAT64) AS `orders_ss`,
        `t52`.`aov_sum`,
        `t52`.`aov_ss`,
        `t52`.`aov_orders`,
        CAST(`t52`.`impressions_sum` AS FLOAT64) AS `impressions_sum`,
        CAST(`t52`.`impressions_ss` AS FLOAT64) AS `impressions_ss`,
        CAST(`t52`.`clicks_sum` AS FLOAT64) AS `clicks_sum`,
        CAST(`t52`.`clicks_ss` AS FLOAT64) AS `clicks_ss`,
        CAST(`t52`.`clicks_impressions` AS FLOAT64) AS `clicks_impressions`
      FROM (
        SELECT
          `t51`.`arm`,
          `t51`.`province`,
          SUM(`t51`.`n`) AS `n`,
          SUM(`t51`.`converted`) AS `converted`,
          SUM(`t51`.`opted_out`) AS `opted_out`,
          SUM(`t51`.`consented`) AS `consented`,
          SUM(`t51`.`granted`) AS `granted`,
          SUM(`t51`.`gmv_sum`) AS `gmv_sum`,
          SUM(`t51`.`gmv_ss`) AS `gmv_ss`,
          SUM(`t51`.`pre_sum`) AS `pre_sum`,
          SUM(`t51`.`pre_ss`) AS `pre_ss`,
          SUM(`t51`.`gmv_pre`) AS `gmv_pre`,
          SUM(`t51`.`orders_sum`) AS `orders_sum`,
          SUM(`t51`.`orders_ss`) AS `orders_ss`,
          SUM(`t51`.`aov_sum`) AS `aov_sum`,
          SUM(`t51`.`aov_ss`) AS `aov_ss`,
          SUM(`t51`.`aov_orders`) AS `aov_orders`,
          SUM(`t51`.`impressions_sum`) AS `impressions_sum`,
          SUM(`t51`.`impressions_ss`) AS `impressions_ss`,
          SUM(`t51`.`clicks_sum`) AS `clicks_sum`,
          SUM(`t51`.`clicks_ss`) AS `clicks_ss`,
          SUM(`t51`.`clicks_impressions`) AS `clicks_impressions`
        FROM `t50` AS `t51`
        GROUP BY
          1,
          2
      ) AS `t52`
    ) AS `t57`
    UNION ALL
    SELECT
      *
    FROM (
      SELECT
        'platform' AS `dimension`,
        `t53`.`platform` AS `value`,
        `t53`.`arm`,
        CAST(`t53`.`n` AS FLOAT64) AS `n`,
        CAST(`t53`.`converted` AS FLOAT64) AS `converted`,
        CAST(`t53`.`opted_out` AS FLOAT64) AS `opted_out`,
        CAST(`t53`.`consented` AS FLOAT64) AS `consented`,
        CAST(`t53`.`granted` AS FLOAT64) AS `granted`,
        `t53`.`gmv_sum`,
        `t53`.`gmv_ss`,
        `t53`.`pre_sum`,
        `t53`.`pre_ss`,
        `t53`.`gmv_pre`,
        CAST(`t53`.`orders_sum` AS FLOAT64) AS `orders_sum`,
        CAST(`t53`.`orders_ss` AS FLOAT64) AS `orders_ss`,
        `t53`.`aov_sum`,
        `t53`.`aov_ss`,
        `t53`.`aov_orders`,
        CAST(`t53`.`impressions_sum` AS FLOAT64) AS `impressions_sum`,
        CAST(`t53`.`impressions_ss` AS FLOAT64) AS `impressions_ss`,
        CAST(`t53`.`clicks_sum` AS FLOAT64) AS `clicks_sum`,
        CAST(`t53`.`clicks_ss` AS FLOAT64) AS `clicks_ss`,
        CAST(`t53`.`clicks_impressions` AS FLOAT64) AS `clicks_impressions`
      FROM (
        SELECT
          `t51`.`arm`,
          `t51`.`platform`,
          SUM(`t51`.`n`) AS `n`,
          SUM(`t51`.`converted`) AS `converted`,
          SUM(`t51`.`opted_out`) AS `opted_out`,
          SUM(`t51`.`consented`) AS `consented`,
          SUM(`t51`.`granted`) AS `granted`,
          SUM(`t51`.`gmv_sum`) AS `gmv_sum`,
          SUM(`t51`.`gmv_ss`) AS `gmv_ss`,
          SUM(`t51`.`pre_sum`) AS `pre_sum`,
          SUM(`t51`.`pre_ss`) AS `pre_ss`,
          SUM(`t51`.`gmv_pre`) AS `gmv_pre`,
          SUM(`t51`.`orders_sum`) AS `orders_sum`,
          SUM(`t51`.`orders_ss`) AS `orders_ss`,
          SUM(`t51`.`aov_sum`) AS `aov_sum`,
          SUM(`t51`.`aov_ss`) AS `aov_ss`,
          SUM(`t51`.`aov_orders`) AS `aov_orders`,
          SUM(`t51`.`impressions_sum`) AS `impressions_sum`,
          SUM(`t51`.`impressions_ss`) AS `impressions_ss`,
          SUM(`t51`.`clicks_sum`) AS `clicks_sum`,
          SUM(`t51`.`clicks_ss`) AS `clicks_ss`,
          SUM(`t51`.`clicks_impressions`) AS `clicks_impressions`
        FROM `t50` AS `t51`
        GROUP BY
          1,
          2
      ) AS `t53`
    ) AS `t58`
  ) AS `t62`
  UNION ALL
  SELECT
    *
  FROM (
    SELECT
      *
    FROM (
      SELECT
        'customer' AS `dimension`,
        `t54`.`customer` AS `value`,
        `t54`.`arm`,
        CAST(`t54`.`n` AS FLOAT64) AS `n`,
        CAST(`t54`.`converted` AS FLOAT64) AS `converted`,
        CAST(`t54`.`opted_out` AS FLOAT64) AS `opted_out`,
        CAST(`t54`.`consented` AS FLOAT64) AS `consented`,
        CAST(`t54`.`granted` AS FLOAT64) AS `granted`,
        `t54`.`gmv_sum`,
        `t54`.`gmv_ss`,
        `t54`.`pre_sum`,
        `t54`.`pre_ss`,
        `t54`.`gmv_pre`,
        CAST(`t54`.`orders_sum` AS FLOAT64) AS `orders_sum`,
        CAST(`t54`.`orders_ss` AS FLOAT64) AS `orders_ss`,
        `t54`.`aov_sum`,
        `t54`.`aov_ss`,
        `t54`.`aov_orders`,
        CAST(`t54`.`impressions_sum` AS FLOAT64) AS `impressions_sum`,
        CAST(`t54`.`impressions_ss` AS FLOAT64) AS `impressions_ss`,
        CAST(`t54`.`clicks_sum` AS FLOAT64) AS `clicks_sum`,
        CAST(`t54`.`clicks_ss` AS FLOAT64) AS `clicks_ss`,
        CAST(`t54`.`clicks_impressions` AS FLOAT64) AS `clicks_impressions`
      FROM (
        SELECT
          `t51`.`arm`,
          `t51`.`customer`,
          SUM(`t51`.`n`) AS `n`,
          SUM(`t51`.`converted`) AS `converted`,
          SUM(`t51`.`opted_out`) AS `opted_out`,
          SUM(`t51`.`consented`) AS `consented`,
          SUM(`t51`.`granted`) AS `granted`,
          SUM(`t51`.`gmv_sum`) AS `gmv_sum`,
          SUM(`t51`.`gmv_ss`) AS `gmv_ss`,
          SUM(`t51`.`pre_sum`) AS `pre_sum`,
          SUM(`t51`.`pre_ss`) AS `pre_ss`,
          SUM(`t51`.`gmv_pre`) AS `gmv_pre`,
          SUM(`t51`.`orders_sum`) AS `orders_sum`,
          SUM(`t51`.`orders_ss`) AS `orders_ss`,
          SUM(`t51`.`aov_sum`) AS `aov_sum`,
          SUM(`t51`.`aov_ss`) AS `aov_ss`,
          SUM(`t51`.`aov_orders`) AS `aov_orders`,
          SUM(`t51`.`impressions_sum`) AS `impressions_sum`,
          SUM(`t51`.`impressions_ss`) AS `impressions_ss`,
          SUM(`t51`.`clicks_sum`) AS `clicks_sum`,
          SUM(`t51`.`clicks_ss`) AS `clicks_ss`,
          SUM(`t51`.`clicks_impressions`) AS `clicks_impressions`
        FROM `t50` AS `t51`
        GROUP BY
          1,
          2
      ) AS `t54`
    ) AS `t59`
    UNION ALL
    SELECT
      *
    FROM (
      SELECT
        *
      FROM (
        SELECT
          'all' AS `dimension`,
          '' AS `value`,
          `t55`.`arm`,
          CAST(`t55`.`n` AS FLOAT64) AS `n`,
          CAST(`t55`.`converted` AS FLOAT64) AS `converted`,
          CAST(`t55`.`opted_out` AS FLOAT64) AS `opted_out`,
          CAST(`t55`.`consented` AS FLOAT64) AS `consented`,
          CAST(`t55`.`granted` AS FLOAT64) AS `granted`,
          `t55`.`gmv_sum`,
          `t55`.`gmv_ss`,
          `t55`.`pre_sum`,
          `t55`.`pre_ss`,
          `t55`.`gmv_pre`,
          CAST(`t55`.`orders_sum` AS FLOAT64) AS `orders_sum`,
          CAST(`t55`.`orders_ss` AS FLOAT64) AS `orders_ss`,
          `t55`.`aov_sum`,
          `t55`.`aov_ss`,
          `t55`.`aov_orders`,
          CAST(`t55`.`impressions_sum` AS FLOAT64) AS `impressions_sum`,
          CAST(`t55`.`impressions_ss` AS FLOAT64) AS `impressions_ss`,
          CAST(`t55`.`clicks_sum` AS FLOAT64) AS `clicks_sum`,
          CAST(`t55`.`clicks_ss` AS FLOAT64) AS `clicks_ss`,
          CAST(`t55`.`clicks_impressions` AS FLOAT64) AS `clicks_impressions`
        FROM (
          SELECT
            `t51`.`arm`,
            SUM(`t51`.`n`) AS `n`,
            SUM(`t51`.`converted`) AS `converted`,
            SUM(`t51`.`opted_out`) AS `opted_out`,
            SUM(`t51`.`consented`) AS `consented`,
            SUM(`t51`.`granted`) AS `granted`,
            SUM(`t51`.`gmv_sum`) AS `gmv_sum`,
            SUM(`t51`.`gmv_ss`) AS `gmv_ss`,
            SUM(`t51`.`pre_sum`) AS `pre_sum`,
            SUM(`t51`.`pre_ss`) AS `pre_ss`,
            SUM(`t51`.`gmv_pre`) AS `gmv_pre`,
            SUM(`t51`.`orders_sum`) AS `orders_sum`,
            SUM(`t51`.`orders_ss`) AS `orders_ss`,
            SUM(`t51`.`aov_sum`) AS `aov_sum`,
            SUM(`t51`.`aov_ss`) AS `aov_ss`,
            SUM(`t51`.`aov_orders`) AS `aov_orders`,
            SUM(`t51`.`impressions_sum`) AS `impressions_sum`,
            SUM(`t51`.`impressions_ss`) AS `impressions_ss`,
            SUM(`t51`.`clicks_sum`) AS `clicks_sum`,
            SUM(`t51`.`clicks_ss`) AS `clicks_ss`,
            SUM(`t51`.`clicks_impressions`) AS `clicks_impressions`
          FROM `t50` AS `t51`
          GROUP BY
            1
        ) AS `t55`
      ) AS `t60`
      UNION ALL
      SELECT
        *
      FROM (
        SELECT
          'age_band' AS `dimension`,
          `t56`.`age_band` AS `value`,
          `t56`.`arm`,
          CAST(`t56`.`n` AS FLOAT64) AS `n`,
          CAST(`t56`.`converted` AS FLOAT64) AS `converted`,
          CAST(`t56`.`opted_out` AS FLOAT64) AS `opted_out`,
          CAST(`t56`.`consented` AS FLOAT64) AS `consented`,
          CAST(`t56`.`granted` AS FLOAT64) AS `granted`,
          `t56`.`gmv_sum`,
          `t56`.`gmv_ss`,
          `t56`.`pre_sum`,
          `t56`.`pre_ss`,
          `t56`.`gmv_pre`,
          CAST(`t56`.`orders_sum` AS FLOAT64) AS `orders_sum`,
          CAST(`t56`.`orders_ss` AS FLOAT64) AS `orders_ss`,
          `t56`.`aov_sum`,
          `t56`.`aov_ss`,
          `t56`.`aov_orders`,
          CAST(`t56`.`impressions_sum` AS FLOAT64) AS `impressions_sum`,
          CAST(`t56`.`impressions_ss` AS FLOAT64) AS `impressions_ss`,
          CAST(`t56`.`clicks_sum` AS FLOAT64) AS `clicks_sum`,
          CAST(`t56`.`clicks_ss` AS FLOAT64) AS `clicks_ss`,
          CAST(`t56`.`clicks_impressions` AS FLOAT64) AS `clicks_impressions`
        FROM (
          SELECT
            `t51`.`arm`,
            `t51`.`age_band`,
            SUM(`t51`.`n`) AS `n`,
            SUM(`t51`.`converted`) AS `converted`,
            SUM(`t51`.`opted_out`) AS `opted_out`,
            SUM(`t51`.`consented`) AS `consented`,
            SUM(`t51`.`granted`) AS `granted`,
            SUM(`t51`.`gmv_sum`) AS `gmv_sum`,
            SUM(`t51`.`gmv_ss`) AS `gmv_ss`,
            SUM(`t51`.`pre_sum`) AS `pre_sum`,
            SUM(`t51`.`pre_ss`) AS `pre_ss`,
            SUM(`t51`.`gmv_pre`) AS `gmv_pre`,
            SUM(`t51`.`orders_sum`) AS `orders_sum`,
            SUM(`t51`.`orders_ss`) AS `orders_ss`,
            SUM(`t51`.`aov_sum`) AS `aov_sum`,
            SUM(`t51`.`aov_ss`) AS `aov_ss`,
            SUM(`t51`.`aov_orders`) AS `aov_orders`,
            SUM(`t51`.`impressions_sum`) AS `impressions_sum`,
            SUM(`t51`.`impressions_ss`) AS `impressions_ss`,
            SUM(`t51`.`clicks_sum`) AS `clicks_sum`,
            SUM(`t51`.`clicks_ss`) AS `clicks_ss`,
            SUM(`t51`.`clicks_impressions`) AS `clicks_impressions`
          FROM `t50` AS `t51`
          GROUP BY
            1,
            2
        ) AS `t56`
      ) AS `t61`
    ) AS `t63`
  ) AS `t64`
) AS `t66`
CROSS JOIN `t45` AS `t47`
CROSS JOIN `t35` AS `t38`
