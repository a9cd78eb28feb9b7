// Package slo makes every decision about time that keeps each app inside
// its latency objective. Package dispatch holds the queues and the
// replicas' workers and asks slo through the small interfaces it declares:
//
//   - a replica's batch size: the controllers (Off, Static, AIMD,
//     LatencyModel; controller.go), asked before each batch;
//   - the online latency fit, latency(n) ≈ a + b·n with a high quantile of
//     the residuals, that LatencyModel and admission read (Fit, fit.go),
//     seeded from the version's stored profile before its first batch
//     (seed.go);
//   - per model version, the Governor (governor.go): admission, which
//     sheds a query predicted to miss its deadline before it queues
//     (admission.go), with a margin calibrated from how late the admitted
//     queries finished (calibrate.go); and pacing, which staggers the
//     batch starts of the version's replicas (pace.go);
//   - the per-app policies an SRE sets in the configuration file
//     (objective, shed policy, priority reserve, batching) and which app's
//     batching a model takes (policy.go), and the error budget's burn rate.
//
// # Budgets
//
// A query whose batch starts just after another batch started on the same
// replica waits for that batch and then for its own, so a replica that is
// kept busy meets an objective S only if a batch of the chosen size n
// finishes within S/2: 2·latency(n) ≤ S. When the Governor staggers the
// batch starts of a version's replicas (pacing, on by default), a query
// waits at most a 1/lanes share of a batch for the next start while the
// batches are alike, and the condition loosens to (1 + 1/lanes)·latency(n)
// ≤ S. Below the top rate, where a burst's batch of n outlasts the spacing
// of the typical smaller ones, LatencyModel plans less (Fit.Plan), and AIMD
// holds its batches to the same condition's budget; both are told the lanes
// and the pacer's typical batch before each choice. The controllers are
// handed the head query's SLO and its remaining slack, and a batch must fit
// both: the slack so that the head is not late, the steady-state condition
// so that the queries arriving behind the batch are not. docs/benchmarks.md
// gives the throughput bounds that follow.
package slo
