// Package selection chooses which models answer an app's queries and
// learns from feedback which of them answer best.
//
// A Policy picks, for one query, one model (Single, Weighted, Exp3) or
// several whose answers are combined (Exp4), and learns from the gains
// that feedback assigns to the answers (Policy.Feedback). Shadow wraps
// any policy and sends a copy of each query to one more model, whose
// answer is recorded and compared but never returned. Weighted can guard
// a canary: when the canary's SLO attainment or error rate over a window
// crosses the configured thresholds it is rolled back, for every proxy.
//
// # Arms
//
// A policy chooses among arms: a model name (its current version serves)
// or "model:version" (that version, e.g. a canary). Exp3 and Exp4 choose
// among the models linked to the app; Weighted among the arms its shares
// name.
//
// # Shared state
//
// What the bandits learn (log-weights per arm) and the canaries rolled
// back live in a State: Redis for several proxies, so that each learns from
// every feedback any of them receives; Bolt, a file on local disk, for one
// proxy (the embedded default); or Memory for one process. Every update is
// one atomic step (a Lua script in Redis, a write transaction in Bolt): add
// the deltas, then shift all log-weights so the largest is 0 and none is
// more than the policy's Gap below it. The shift keeps the numbers bounded;
// the floor lets an arm that fell behind win traffic back within about
// Gap/Eta feedbacks once it becomes the better one (the role of Exp3.S's
// weight sharing, in one line). In Redis or Bolt the state outlives proxy
// restarts, and in every State it outlives config reloads: a policy
// rebuilt from the same config reads the same key.
//
// # Rewards and gains
//
// An app's outputs are labels (compared exactly: the reward is 1 for the
// right label, else 0), numbers (the reward is the negative squared
// error) or class probabilities (the reward is the probability given to
// the right class). Policies learn from gains in [0, 1]: the reward itself
// for labels and probabilities, exp(reward) for numbers.
package selection
