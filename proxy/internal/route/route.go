// Package route answers what both listeners' routers are asked about a
// request they cannot serve: which methods its path does have.
package route

import (
	"net/http"

	"github.com/gorilla/mux"
)

// methods are those an API route may take.
var methods = [...]string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete}

// Allowed returns the methods that r routes for req's path, in the order
// GET, HEAD, POST, PUT, DELETE: the Allow header of a 405.
func Allowed(r *mux.Router, req *http.Request) []string {
	var allowed []string
	for _, m := range methods {
		probe := req.Clone(req.Context())
		probe.Method = m
		var match mux.RouteMatch
		if r.Match(probe, &match) && match.MatchErr == nil {
			allowed = append(allowed, m)
		}
	}
	return allowed
}
