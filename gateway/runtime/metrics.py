"""Counters and gauges, rendered as Prometheus text (exposition format 0.0.4).

One `Metrics` object per gateway, passed down to every stage; no globals.
"""
from __future__ import annotations

import time
from collections import defaultdict


class Metrics:
    """Counters keyed by (name, sorted label pairs). Cheap to bump from hot paths."""

    HELP = {
        "headrace_frames_in_total": "Messages received from nodes, by transport.",
        "headrace_frames_accepted_total": "Messages verified and committed to the spool, by transport.",
        "headrace_frames_rejected_total": "Messages rejected, by transport and reason.",
        "headrace_readings_total": "Readings committed to the spool.",
        "headrace_windows_total": "Aggregate windows closed and spooled.",
        "headrace_late_readings_total": "Readings dropped by the aggregator as later than the allowed lateness.",
        "headrace_spool_commits_total": "SQLite transactions committed by the spool.",
        "headrace_spool_commits_behind_total": "Commits started without the commit window: a full group was "
                                               "waiting (the gateway at its limit).",
        "headrace_uplink_lag_seconds": "Age of the oldest spooled record the broker has not acknowledged (0 when none).",
        "headrace_spool_errors_total": "Spool commits that failed (disk full, I/O).",
        "headrace_spool_depth": "Records waiting in the spool for the uplink.",
        "headrace_spool_bytes": "Payload bytes waiting in the spool.",
        "headrace_spool_dropped_total": "Records dropped by the overflow policy, by kind and reason (ttl, quota).",
        "headrace_uplink_messages_total": "MQTT messages acknowledged by the broker (PUBACK).",
        "headrace_uplink_bytes_total": "Payload bytes acknowledged by the broker.",
        "headrace_uplink_connected": "1 while the MQTT session is up.",
        "headrace_uplink_connects_total": "MQTT connection attempts.",
        "headrace_node_last_seen_seconds": "Unix time of the last accepted message, by node.",
        "headrace_commands_total": "Commands from the cloud (cmd/<node>), by result (queued, rejected).",
        "headrace_command_answers_waiting": "Answers on cmd_result/<node> kept until the broker acknowledges them.",
        "headrace_command_answers_dropped_total": "Command answers dropped: more than 10,000 waited for the broker.",
        "headrace_events_total": "Events spooled for the events topic, by type (alarm, demand, dispatch).",
        "headrace_rule_transitions_total": "Rules raised and cleared, by state.",
        "headrace_rule_errors_total": "Batches the rules could not evaluate (a bug: see the log).",
        "headrace_dispatches_total": "Dispatch lifecycle steps, by state (assigned, accepted, done, timeout...).",
        "headrace_demands_open": "Demands open, assigned or accepted.",
        "headrace_demand_requests_refused_total": "Requests to /demands refused (bad field, unknown need, full).",
        "headrace_updates": "Node update deliveries, by state (sending, sent, installed, confirmed, failed).",
        "headrace_update_state": "1 for the state a node's update delivery is in, by node and state.",
        "headrace_update_bytes": "Bytes of its release a node being updated holds, by node.",
        "headrace_update_size_bytes": "Size of the release a node is being updated to, by node.",
        "headrace_update_sent_bytes_total": "Release bytes sent to nodes in answer to their block requests, by node.",
        "headrace_update_requests_total": "Block requests of nodes fetching an update, by result (ok, not_found, bad).",
        "headrace_update_outcomes_total": "Node update steps, by outcome (queued, sent, installed, confirmed, failed).",
        "headrace_update_refused_total": "Updates a node refused or rolled back, by reason (signature, hash, downgrade…).",
        "headrace_update_releases_refused_total": "Releases refused at queueing (forged, damaged), by reason.",
        "headrace_http_refused_total": "HTTP requests refused for want of the [http] token, by reason (no_token, bad_token).",
    }

    def __init__(self) -> None:
        self._values: dict[tuple[str, tuple], float] = defaultdict(float)
        self.started = time.time()

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        self._values[(name, tuple(sorted(labels.items())))] += amount

    def key(self, name: str, **labels: str) -> tuple[str, tuple]:
        """The key of one labelled series, for `add` where a counter moves once a frame (its
        labels are sorted once, not at every update)."""
        return (name, tuple(sorted(labels.items())))

    def add(self, key: tuple[str, tuple], amount: float = 1) -> None:
        """`inc` of the series `key()` gave."""
        self._values[key] += amount

    def set(self, name: str, value: float, **labels: str) -> None:
        self._values[(name, tuple(sorted(labels.items())))] = value

    def put(self, key: tuple[str, tuple], value: float) -> None:
        """`set` of the series `key()` gave."""
        self._values[key] = value

    def get(self, name: str, **labels: str) -> float:
        return self._values.get((name, tuple(sorted(labels.items()))), 0.0)

    def by_label(self, name: str) -> list[tuple[dict, float]]:
        """Every label set of one metric with its value."""
        return [(dict(lab), v) for (n, lab), v in self._values.items() if n == name]

    def total(self, name: str, **match: str) -> float:
        """Sum of a metric over every label set that contains `match`."""
        want = set(match.items())
        return sum(v for (n, lab), v in self._values.items() if n == name and want <= set(lab))

    def snapshot(self) -> dict[str, float]:
        """Flat dict 'name{a="b"}' -> value, for tests and the status view."""
        return {_series(n, lab): v for (n, lab), v in self._values.items()}

    def render(self) -> str:
        by_name: dict[str, list] = defaultdict(list)
        for (name, labels), value in sorted(self._values.items()):
            by_name[name].append((labels, value))
        lines = []
        for name, rows in by_name.items():
            if name in self.HELP:
                lines.append(f"# HELP {name} {self.HELP[name]}")
            kind = "counter" if name.endswith("_total") else "gauge"
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in rows:
                lines.append(f"{_series(name, labels)} {value:g}")
        return "\n".join(lines) + "\n"


def _series(name: str, labels: tuple) -> str:
    if not labels:
        return name
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels)
    return f"{name}{{{inner}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
