// Package admin is sloproxy's admin API: the HTTP API through which
// operators and the sloproxy CLI manage apps, models, versions, links,
// replica counts, profiles and the prediction cache, and a Go client for
// it. The changes that move an app's traffic to a model version pass the
// profile gate first (profile.go).
//
// The API is served on its own listener (the serve command binds it to
// 127.0.0.1:1338 by default), apart from the query listener, so that it can
// stay on loopback or a private network while queries come from anywhere.
// NewHandler returns its http.Handler; Client calls it.
//
// # Contract
//
// Every request but GET /api/v1/healthz carries "Authorization: Bearer
// TOKEN"; the token is compared in constant time. Bodies are JSON, at most
// 1 MiB, and fields the API does not know are rejected rather than ignored,
// so a misspelt field is an error instead of a silent default. Every error
// answer is {"error": "message"}, with its status chosen in one function
// (writeError) from the typed errors of package state: ErrInvalid is 400,
// ErrNotFound 404, ErrConflict 409, ErrUnavailable (Redis down) 503.
//
// Reads answer from the Store's current snapshot; writes go through the
// Store, which validates them and commits them to the backend (memory or
// Redis), so a change made through one proxy's admin API reaches every
// proxy sharing the Redis within a second. A write's answer shows the state
// right after it, since a Store reads its own writes.
//
// The endpoints are documented in docs/openapi-admin.yaml (an OpenAPI 3.0
// document, which a test keeps in step with the router) and, for operators,
// in docs/http.md.
package admin
