package proxy

import (
	"net/http"
	"strings"
)

// sourceHeader names, for each answer of a query API response, where the
// answer came from: "model" (a model computed it for this query), "cache"
// (the prediction cache, or an identical concurrent query's inference that
// this one shared), "default" (the app's default output) or "error". A
// batch's values are comma-separated, in the order of batch_predictions.
// Load generators read it to tell a model's work from the cache's, which
// the proxy's global metrics cannot do for one client's traffic.
const sourceHeader = "Sloproxy-Source"

// bypassCache reports whether the request asks, with the Cache-Control
// directive no-cache, that its answers be computed by a model: the
// prediction cache is neither read nor filled for it.
func bypassCache(r *http.Request) bool {
	for _, v := range r.Header.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			name, _, _ := strings.Cut(strings.TrimSpace(d), "=")
			if strings.EqualFold(name, "no-cache") {
				return true
			}
		}
	}
	return false
}

// sourceValues are sourceHeader's values for one answer, made once: most
// queries have one answer, and setting a header otherwise allocates its
// value's slice on each. net/http only reads them.
var sourceValues = map[string][]string{"error": {"error"}, "default": {"default"}, "cache": {"cache"}, "model": {"model"}}

// setSource sets sourceHeader for answers.
func setSource(h http.Header, answers []answer) {
	if len(answers) == 1 {
		h[sourceHeader] = sourceValues[answers[0].source()]
		return
	}
	var b strings.Builder
	for i := range answers {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(answers[i].source())
	}
	h.Set(sourceHeader, b.String())
}

// source is where a came from, as sourceHeader says it.
func (a *answer) source() string {
	switch {
	case a.err != nil:
		return "error"
	case a.isDefault:
		return "default"
	case a.cached:
		return "cache"
	}
	return "model"
}
