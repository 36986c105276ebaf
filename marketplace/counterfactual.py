"""The counterfactual lists: what every arm's model would have served every shopper, session by session.

The ground truth (``marketplace.truth``) is every exposed shopper's expected
outcomes under *every* arm. What a shopper would have seen in an arm they
were not assigned to is computed offline, build round by build round:

- the model is the arm's build serving at the session (serving's own
  pointer, ``current_build``; the very fitted model, handed over by
  ``recommendations_build``'s ``fitted`` hook; before an arm's first
  successful build, the platform's best sellers, as serving answers);
- the shopper's consent is the one they would have given in that arm
  (``Decisions.grant_under`` …: the same uniforms, the arm's probabilities),
  as of the serving build's own clock for what it may learn from them and at the session for
  what may be shown;
- their evidence is what they did in the simulation (history, organic orders,
  clicks and recommendation-led orders so far) — the world that happened:
  their own clicks are those of the lists they were really shown;
- ``recommender.offline.served_lists`` scores it with the arm's strategy and
  applies the serving rules (sensitive-category policy and consent, the
  fallback).

A shopper's list in their own arm is the one the real serving path returned
(the truth uses it); the offline list for it is kept too, and
``agreement`` says how often the two match — a check that the offline path
is the serving path.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from marketplace.catalog import Catalog
from marketplace.model import Decisions
from marketplace.population import Population
from recommender.conf import CLICK_WEIGHT, HISTORY_DAYS, ORDER_WEIGHT
from recommender.offline import OfflineModel, served_lists
from recommender.selectors import current_build


class Counterfactual:
    """Collects the interactions and the fitted models as the simulation runs; fills every arm's lists."""

    def __init__(self, *, population: Population, catalog: Catalog, decisions: Decisions, arm_of: np.ndarray,
                 arm_ids: list[int], treatments: list[dict], attributes: tuple[tuple[str, str, str], ...]) -> None:
        self.population, self.catalog, self.decisions, self.arm_of = population, catalog, decisions, arm_of
        self.arm_ids, self.treatments, self.attributes = arm_ids, treatments, attributes
        self.index = {subject: i for i, subject in enumerate(population.ids)}
        self.sku_index = {sku: n for n, sku in enumerate(catalog.skus)}
        self.decided = np.array([moment.timestamp() for moment in population.decided_at])
        self.models: dict[int, OfflineModel] = {}  # by build id: the builds that serve, or may
        self._latest: dict[int | None, int] = {}  # arm id (None: the platform) → its newest built build
        self._pending: dict[int | None, OfflineModel] = {}
        self._log: tuple[list[int], list[int], list[float], list[float]] = ([], [], [], [])
        self.shown = np.zeros((len(arm_ids), 0, 0), dtype=np.int64)
        self.matched = np.zeros(len(arm_ids), dtype=np.int64)
        self.compared = np.zeros(len(arm_ids), dtype=np.int64)

    def sessions_set(self, sessions: int, slots: int) -> None:
        # Per arm: every session's list as that arm would serve it (−1: an empty slot).
        self.shown = np.full((len(self.arm_ids), sessions, slots), -1, dtype=np.int64)

    # --- what the simulation tells it ---------------------------------------------------------

    def record(self, event: dict) -> None:
        """An event as recorded: its orders' lines and clicks become the shopper's evidence."""
        i = self.index.get(event["subject_id"])
        if i is None:
            return
        when = event["timestamp"].timestamp()
        if event["type"] == "order":
            for line in event["lines"]:
                self._add(i, line["product_id"], when, ORDER_WEIGHT)
        elif event["type"] == "rec_click":
            self._add(i, event["product_id"], when, CLICK_WEIGHT)

    def _add(self, i: int, sku: str, when: float, weight: float) -> None:
        item = self.sku_index.get(sku)
        if item is not None:
            for column, value in zip(self._log, (i, item, when, weight), strict=True):
                column.append(value)

    def fitted(self, arm_id: int | None):
        """The ``fitted`` hook for this arm's build: the model serves once the build has succeeded."""
        def keep(strategy, training, policy) -> None:
            self._pending[arm_id] = OfflineModel.of(strategy, training, policy)
        return keep

    def built(self, arm_id: int | None, outcome: str, build_id: int | None = None) -> None:
        model = self._pending.pop(arm_id, None)
        if outcome == "built" and model is not None and build_id is not None:
            self.models[build_id] = model
            self._latest[arm_id] = build_id

    def _serving(self) -> dict[int | None, OfflineModel | None]:
        """Per arm id, the model of the build serving it now (serving's own pointer), as serving reads it."""
        current = {arm_id: current_build(arm_id=arm_id) for arm_id in [*self.arm_ids, None]}
        keep = {*current.values(), *self._latest.values()}
        for build_id in [b for b in self.models if b not in keep]:
            del self.models[build_id]  # superseded: it can serve no more
        return {arm_id: self.models.get(build_id) if build_id is not None else None for arm_id, build_id in current.items()}

    # --- every arm's lists for a build round's sessions ----------------------------------------

    def lists_fill(self, *, built_at: datetime, sessions: slice, shopper: np.ndarray, served: np.ndarray) -> None:
        """Every arm's lists for the sessions ``sessions`` (shown by the build round at ``built_at``)."""
        if sessions.stop <= sessions.start:
            return
        who = shopper[sessions]
        shoppers, row_of_session = np.unique(who, return_inverse=True)
        log = [np.asarray(column, dtype=dtype) for column, dtype in zip(self._log, (np.int64, np.int64, np.float64, np.float64), strict=True)]
        at = built_at.timestamp()
        serving = self._serving()
        for a, (arm_id, treatment) in enumerate(zip(self.arm_ids, self.treatments, strict=True)):
            lists = self._arm_lists(a, serving[arm_id], serving[None], treatment, shoppers, log, at)
            rows = np.full((len(shoppers), self.shown.shape[2]), -1, dtype=np.int64)
            for r, skus in enumerate(lists):
                items = [self.sku_index[sku] for sku in skus[: self.shown.shape[2]]]
                rows[r, : len(items)] = items
            self.shown[a, sessions] = rows[row_of_session]
            mine = self.arm_of[who] == a
            self.compared[a] += int(mine.sum())
            self.matched[a] += int((rows[row_of_session][mine] == served[sessions][mine]).all(axis=1).sum())

    def _arm_lists(self, a: int, model: OfflineModel | None, platform: OfflineModel | None, treatment: dict,
                   shoppers: np.ndarray, log, at: float):
        size = len(shoppers)
        subject, item, when, weight = log
        if model is None:  # never built: serving answers with the platform's best sellers
            model = platform
            if model is None:
                return [[] for _ in range(size)]
            personal_ok = sensitive_ok = np.zeros(size, dtype=bool)
            chosen = np.zeros(0, dtype=np.int64)
        else:
            # The serving build's own clock, not the round's: a DP arm's build serves several rounds.
            at = model.built_at
            d = self.decisions
            consenting = d.grant_under[a, shoppers] & ~d.withdraw_under[a, shoppers]
            # What the build could learn from: consent recorded by its clock (the decisions' slot).
            personal_ok = consenting & (self.decided[shoppers] <= at)
            includes_sensitive = treatment["sensitive_category_policy"] != "exclude"
            sensitive_ok = personal_ok & includes_sensitive & d.sensitive_grant_under[a, shoppers]
            history_days = min(HISTORY_DAYS, int(treatment["retention_days"]))
            since = at - timedelta(days=history_days).total_seconds()
            row = np.full(self.population.size, -1, dtype=np.int64)
            row[shoppers] = np.arange(size)
            chosen = np.flatnonzero((row[subject] >= 0) & (when <= at) & (when >= since))
            rows = row[subject[chosen]]
            chosen, rows = chosen[personal_ok[rows]], rows[personal_ok[rows]]
            # Sensitive interactions only with the sensitive consent and a policy that uses them (training_load's rule).
            sensitive_item = self.catalog.category_sensitive[self.catalog.item_category[item[chosen]]]
            allowed = ~sensitive_item | sensitive_ok[rows]
            chosen = chosen[allowed]
        row_of = np.full(self.population.size, -1, dtype=np.int64)
        row_of[shoppers] = np.arange(size)
        return served_lists(
            model=model, subjects=row_of[subject[chosen]], skus=[self.catalog.skus[i] for i in item[chosen].tolist()],
            times=when[chosen], weights=weight[chosen], attributes=tuple(self.attributes[i] for i in shoppers.tolist()),
            personal_ok=personal_ok, sensitive_ok=sensitive_ok, as_of=at, limit=self.shown.shape[2],
        )

    def agreement(self) -> list[float | None]:
        """Per arm: the share of its own sessions whose offline list is the list served."""
        return [float(m / c) if c else None for m, c in zip(self.matched, self.compared, strict=True)]
