// Package answered is the memory of answered queries awaiting feedback.
// A query's answer names its query_id; feedback (POST
// /apps/{app}/feedback) later names the query by that id, or by its input,
// and scores what each of the models the app's policy chose answered. The
// Memory keeps each answered Query twice: in this proxy's ring of its
// latest answers (ring.go, records encoded as bytes so that the garbage
// collector has one object a record to mark), and, with Redis, in Redis
// through a background writer (shared.go), so that feedback reaching any
// proxy that shares the Redis finds it. Redis keeps each for a TTL and,
// across the proxies, the latest SharedSize of them: a list in the order
// of their writes names the ones to forget. Every script touches one key,
// so the records spread over the masters of a Redis Cluster. Each query's feedback counts once
// across proxies: taking a query marks it taken, atomically in Redis.
package answered
