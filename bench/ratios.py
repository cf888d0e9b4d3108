"""Ratios between searches of one invocation: another server against Chorus at each count,
and capacity efficiency E against the offline reference (DESIGN §8).

Pure functions over `CapacitySearch` records; `bench.load` puts them in the report.
"""

from __future__ import annotations

from bench.schema import CapacitySearch, Comparison, Efficiency, Reference, RunFigures


def compare(chorus: CapacitySearch, naive: CapacitySearch) -> Comparison:
    """The other server's figures divided by Chorus's, at each client count both ran."""

    def by_clients(search: CapacitySearch) -> dict[int, RunFigures]:
        return {run.clients: run for run in search.runs}

    ours, theirs = by_clients(chorus), by_clients(naive)
    latency, cpu = {}, {}
    for clients in sorted(ours.keys() & theirs.keys()):
        our_p95 = ours[clients].final_latency_s.p95
        their_p95 = theirs[clients].final_latency_s.p95
        if our_p95 and their_p95:
            latency[str(clients)] = their_p95 / our_p95
        our_cpu, their_cpu = ours[clients].server, theirs[clients].server
        if our_cpu and their_cpu and our_cpu.cpu_cores > 0:
            cpu[str(clients)] = their_cpu.cpu_cores / our_cpu.cpu_cores
    ratio = chorus.capacity / naive.capacity if naive.capacity else None
    return Comparison(
        capacity_ratio=ratio, p95_final_latency_ratio=latency, cpu_ratio=cpu, label=naive.label
    )


def efficiency(search: CapacitySearch, reference: Reference | None) -> Efficiency:
    """E for one search: sessions held × the mean speech fraction of that count's
    conversations ÷ offline throughput."""
    held = [run for run in search.runs if run.clients == search.capacity]
    fraction = held[0].speech_fraction if held else None
    value = None
    if reference is not None and fraction is not None and reference.audio_s_per_wall_s > 0:
        value = search.capacity * fraction / reference.audio_s_per_wall_s
    return Efficiency(
        label=search.label, capacity=search.capacity, speech_fraction=fraction, efficiency=value
    )
