"""Read models of the routes: what an answer holds, computed from the store (and Optuna's
storage), so that each route is its HTTP contract and one call."""
