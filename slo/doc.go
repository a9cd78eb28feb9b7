// Package slo holds what keeps each app inside its latency objective: the
// batch-size controllers the dispatcher asks before each batch (Off,
// Static, AIMD, LatencyModel), the online latency fit that both
// LatencyModel and admission read, the per-app policies an SRE sets in the
// configuration file (objective, shed policy, priority, controller), and
// the rolling attainment window behind the SLO metrics.
//
// # Budgets
//
// A query whose batch starts just after another batch started on the same
// replica waits for that batch and then for its own, so a replica that is
// kept busy meets an objective S only if a batch of the chosen size n
// finishes within S/2: 2·latency(n) ≤ S. The controllers are handed that
// steady-state budget (half the head query's SLO) and the head query's
// remaining slack, and a batch must fit both: the slack so that the head
// is not late, the half so that the queries arriving behind the batch are
// not. docs/benchmarks.md derives the throughput bound that follows.
package slo
