"""The `balancer` resource of local-first (see app.py)."""

from componentize_py_types import Err
from wit_world.exports import balancer
from wit_world.imports import types


class Balancer(balancer.Balancer):
    def __init__(self, service: types.Service, config: str) -> None:
        text = config.strip()
        self.local = 3 if text == "" else (int(text) if text.isdigit() else None)
        self.error = None if self.local is not None else f"config {config!r} is not a whole number"

    def update(self, snapshot: types.Snapshot) -> types.Selection:
        if self.error is not None:
            raise Err(self.error)
        weights = [self.local if e.is_local else 1 for e in snapshot.endpoints]
        return types.Selection_Weighted(weights)
